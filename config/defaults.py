"""Every config key, its default and what it means.

The first block holds the keys of the published ARB-Loss code with its yacs defaults (``_C`` in
``utils/logger.py`` of github.com/lilydedbb/ARBLOSS), so that its yaml files and MiSLAS's load
unchanged. MiSLAS (github.com/dvlab-research/MiSLAS, ``utils/logger.py``) has the same keys and
defaults up to ``alpha``, except ``dist_url`` ('tcp://224.66.41.62:23456' there); the keys from
``arbloss`` on are ARB-Loss's. Keys after the block are ours.
"""
from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------- reference keys
_C.name = ''  # run name; the run folder is <output_dir>/<name>_<YYYYmmddHHMM>
_C.print_freq = 40  # log a progress line every this many iterations
_C.workers = 16  # data-loader worker processes (global; split over ranks under DDP)
_C.log_dir = 'logs'  # sub-folder of the run folder for the text log and TensorBoard
_C.model_dir = 'ckps'  # sub-folder of the run folder for checkpoints
# cifar10 | cifar100 | digits | imagenet | ina2018 | places; your own: imagelist | folder
_C.dataset = 'cifar10'  # the data set (datasets.DATASETS)
_C.data_path = './data/cifar10'  # folder holding the data set files
_C.num_classes = 100  # number of classes; must match the data (not given: the data set's;
# imagelist / folder count them from the data)
_C.imb_factor = 0.01  # CIFAR / digits: n_min / n_max of the training split, in (0, 1];
# null for the image-list data sets, whose split is fixed (the published configs say null);
# folder: null or absent = the tree as it is, a number = subsample it to that long tail
_C.backbone = 'resnet32_fe'  # feature extractor: models.BACKBONES, or timm:<name> (needs timm)
_C.resume = ''  # checkpoint to resume from ('auto': newest run of this name)
_C.head_class_idx = [0, 1]  # [start, end) of the many-shot classes; [0, 1] = derive from counts
_C.med_class_idx = [0, 1]  # [start, end) of the medium-shot classes; [0, 1] = derive
_C.tail_class_idx = [0, 1]  # [start, end) of the few-shot classes; [0, 1] = derive
# CUDA: deterministic kernels (True) or cudnn autotuning (False). The published code seeds
# (with 0) only when True; here runs are always seeded with `seed`. Published configs: False.
_C.deterministic = True
_C.gpu = 0  # GPU index for single-process runs (ignored under a launcher); null = 0
_C.world_size = -1  # number of processes for manual set-ups; launchers set WORLD_SIZE
_C.rank = -1  # global rank for manual set-ups; launchers set RANK
_C.dist_url = 'env://'  # torch.distributed init method
_C.dist_backend = 'nccl'  # backend with CUDA; without CUDA gloo is used
_C.multiprocessing_distributed = False  # accepted for compatibility; use a launcher instead
_C.distributed = False  # accepted for compatibility; set from the launcher environment
_C.mode = None  # MiSLAS stage tag: 'stage1' / null (train_stage1.py) or 'stage2' (train_stage2.py)
_C.smooth_tail = None  # LAS smoothing of the rarest class
_C.smooth_head = None  # LAS smoothing of the most frequent class
_C.shift_bn = False  # stage 2: frozen features' BatchNorm statistics move (see stage2_method)
_C.lr_factor = None  # stage 2: the classifier's lr = lr_factor x lr (MiSLAS); null = 1
_C.lr = 0.1  # base learning rate (for the global batch)
_C.batch_size = 128  # global batch size (split over ranks under DDP)
_C.weight_decay = 0.002  # SGD weight decay (every published yaml sets its own: 2e-4 / 5e-4 / 1e-4)
_C.num_epochs = 200  # training epochs
_C.momentum = 0.9  # SGD momentum
_C.cos = False  # cosine schedule (True) or step schedule with warm-up (False)
_C.mixup = True  # mixup of the training batch
_C.alpha = 1.0  # mixup Beta(alpha, alpha); 0 disables mixing; null only with mixup False
_C.arbloss = False  # ARB-Loss instead of cross-entropy (see the key 'loss')
_C.warbloss = False  # ARB-Loss weighted by mean_count / n_y
_C.arb_loss_use_global_class_cnt = False  # ARB counts: training-set counts instead of batch counts
_C.LAS = False  # MiSLAS label-aware smoothing (combinable with ARB)
_C.not_pretrained = False  # Places-LT: do not load ImageNet weights into the frozen backbone
_C.arbloss_fl = False  # focal ARB-Loss: (1 - p)^focal_gamma * ARB loss (default gamma 2)
# stage 2: sample instances instead of class-aware (a key of the ARB-Loss code, whose
# train_stage2.py is all commented out); a stage-1 run refuses it
_C.train_stage2_instance = False

# ================================================================ our keys, by section
# ---------------------------------------------------------------- run and output
_C.seed = 0  # seed of torch, numpy and python random (training order, mixup, init)
_C.output_dir = 'saved'  # root of the run folders
_C.device = 'auto'  # auto (CUDA if present, else CPU) | cpu | cuda
_C.legacy_checkpoint = False  # allow full-pickle loading of trusted MiSLAS / ARB-Loss checkpoints

# ---------------------------------------------------------------- data
_C.imb_type = 'exp'  # long-tail profile of CIFAR / digits / folder: exp | step
_C.download = True  # CIFAR: download the archive with torchvision when the files are missing
_C.digits_test_per_class = 50  # digits: held-out balanced test images per class
_C.train_list = ''  # image-list data: training list ('' = data set default; imagelist: required)
_C.test_list = ''  # image-list data: test list ('' = data set default; imagelist: required)
_C.val_list = ''  # image-list data: validation list for eval.py --tau-sweep ('' = the default)
_C.class_order = 'reference'  # image-list count ties: reference (published numpy 1.x) | stable (id)
_C.image_size = 224  # image-list data: training crop / test centre-crop size
_C.resize_size = 256  # image-list data: test images are resized to this before the centre crop

# ---------------------------------------------------------------- sampling and augmentation
# training sampler (datasets/samplers.py): instance (a shuffle of the training set, the
# published recipe) | class_balanced | sqrt | progressive (Kang et al., ICLR 2020) |
# class_aware (MiSLAS's stage-2 sampler)
_C.sampler = 'instance'
_C.cutmix = False  # CutMix of the training batch (Yun et al., ICCV 2019); not with mixup
_C.cutmix_alpha = 1.0  # CutMix lam ~ Beta(cutmix_alpha, cutmix_alpha); 0 = no cutting
_C.autoaugment = False  # CIFAR / image lists: AutoAugment (CIFAR10 / IMAGENET policy)
_C.randaugment = False  # CIFAR / image lists: RandAugment (not with autoaugment)
_C.randaugment_n = 2  # RandAugment: operations per image
_C.randaugment_m = 9  # RandAugment: magnitude, 0..30 (torchvision's 31 bins)

# ---------------------------------------------------------------- model
_C.pretrained_path = ''  # local weights: ImageNet ResNet (Places-LT), timm checkpoint (timm:<name>)
# classifier head (models/heads.py): linear (MiSLAS / ARB-Loss) | cosine (LDAM-DRW's NormedLinear:
# normalize(h) . normalize(w_j), no bias) | etf (Yang et al. 2022: BatchNorm1d + L2-normalised
# feature times a fixed simplex ETF drawn with `seed`) | auto (what the loss's authors used:
# cosine for loss ldam, etf for loss dr, else linear)
_C.classifier = 'auto'

# ---------------------------------------------------------------- loss
_C.las_shape = 'concave'  # label-aware smoothing profile: concave | linear | convex | exp
_C.las_power = 2.0  # exponent of the 'exp' LAS profile
_C.arb_global_batch_counts = False  # DDP: ARB batch counts of the whole global batch (all-reduced)
# training loss: auto (the flags arbloss / warbloss / arbloss_fl: arb, else ce) | ce | arb |
# balanced_softmax | logit_adjust | ldam | focal | cb | label_smoothing | dr (dot regression, with
# classifier etf) (methods/criterion.py)
_C.loss = 'auto'
_C.la_tau = 1.0  # logit_adjust: cross-entropy on z + tau * log prior (Menon et al. 2021)
_C.focal_gamma = 2.0  # focal, cb with cb_base focal, arbloss_fl: the exponent of (1 - p)
_C.cb_beta = 0.9999  # cb and DRW: class weights (1 - beta) / (1 - beta^n_j), sum C (Cui et al.)
_C.cb_base = 'softmax'  # cb: the weighted loss, softmax (cross-entropy) | focal
_C.label_smoothing = 0.1  # label_smoothing: epsilon of the target (1 - eps) e_y + eps / C
_C.ldam_max_m = 0.5  # ldam: the largest class margin (the rarest class's), as LDAM-DRW
_C.ldam_s = 30.0  # ldam: logit scale s, as LDAM-DRW
# ce, ldam: deferred re-weighting (DRW) with cb_beta weights from this 0-based epoch on, i.e.
# after this many epochs (LDAM-DRW: 160 of 200); 0 = off
_C.drw_epoch = 0
_C.dr_reg_lambda = 0.0  # dr: + lambda * mean ||h|| (Yang et al.'s reg_lam; their default 0)
# dr: scale each class's ETF vector in training by sqrt((B / classes in the batch) / n_batch(y))
# (Yang et al.'s GivenEw, their default True)
_C.dr_given_ew = True

# ---------------------------------------------------------------- optimisation
# step schedule (adjust_learning_rate in ARB-Loss train_stage1.py; MiSLAS's stage 1 steps at
# 160 / 180): linear warm-up over warmup_epochs
_C.warmup_epochs = 5
_C.lr_steps = [160, 240]  # step schedule: after epoch lr_steps[k] the lr is lr x lr_factors[k]
# the factor after each step ([] = 0.1, 0.01, 0.001, ...); LDAM-DRW: lr_steps [160, 180] with
# lr_factors [0.01, 0.0001]
_C.lr_factors = []

# ---------------------------------------------------------------- evaluation and analysis
_C.eval_freq = 1  # evaluate on the test set every this many epochs (and always at the end)
_C.test_batch_size = 0  # eval batch size; 0 = batch_size
_C.grad_stats_freq = 0  # log the attraction/repulsion gradient monitor every N iterations; 0 = off
_C.nc_freq = 0  # log neural-collapse metrics on training features every N epochs; 0 = off
_C.plot_freq = 0  # log reliability / per-class figures to TensorBoard every N epochs; 0 = off
# post-hoc corrections at evaluation (training evaluation and eval.py; checkpoints unchanged):
_C.eval_tau_norm = 0.0  # tau-normalised classifier w_j / ||w_j||^tau (Kang et al. 2020); 0 = off
_C.eval_logit_adjust = 0.0  # logits - tau * log(training prior) (Menon et al. 2021); 0 = off

# ---------------------------------------------------------------- speed
_C.amp = 'none'  # mixed precision on CUDA: none | bf16 | fp16
_C.channels_last = False  # channels_last memory format on CUDA
_C.compile = False  # torch.compile the network only (forward; compile_mode covers more)
# torch.compile the training step: forward, loss (its batch class counts included) and backward as
# one graph, and the optimiser step: none | default | reduce-overhead (CUDA graphs) | max-autotune
_C.compile_mode = 'none'
# in-memory data (CIFAR, digits): keep the training set on the run's device and augment whole
# batches there
_C.device_pipeline = False
# image-list data: fast (workers decode + crop to uint8, flip / ColorJitter / normalisation
# batched on the device) | reference (the published per-image torchvision transform)
_C.imagelist_pipeline = 'fast'
_C.imagelist_decode = 'cpu'  # fast image-list path, training: JPEG decoding on cpu | cuda (nvjpeg)

# ---------------------------------------------------------------- stage 2 (train_stage2.py)
# classifier re-training on a stage-1 checkpoint given as 'resume' (frozen backbone / block):
# mislas: classifier + learnable weight scaling with label-aware smoothing (MiSLAS, CVPR 2021);
# crt: re-initialised classifier with the config's loss; lws: only the weight scaling, on the
# stage-1 classifier (both Kang et al., ICLR 2020); all on class-aware sampling
_C.stage2_method = 'mislas'

# ---------------------------------------------------------------- distributed
_C.sync_bn = False  # SyncBatchNorm under DDP


def get_cfg_defaults() -> CN:
    """A fresh copy of the defaults (never mutate ``_C`` itself)."""
    return _C.clone()
