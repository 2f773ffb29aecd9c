"""Stage-1 training of a long-tailed classifier with ARB-Loss (or cross-entropy and the other
losses of ``loss``), MiSLAS style.

    python train_stage1.py --cfg config/cifar100/cifar100_imb001_stage1_mixup.yaml [KEY VALUE ...]
    python train_stage1.py --cfg CFG --dry-run            # check the config, create nothing
    torchrun --nproc_per_node 4 train_stage1.py --cfg config/imagenet/...yaml
    python -m torch.distributed.launch --nproc_per_node 4 train_stage1.py --cfg ...

The flow: arguments -> config (config/) -> process group and device -> engine.Trainer(cfg)
(data, network, loss; engine/trainer.py) -> train() (epochs, hooks: evaluation, analysis,
metrics, checkpoints). Exit status: 0 done, 2 user error (one line on stderr), 3 non-finite
loss, 128 + N stopped by signal N after saving a resumable checkpoint.
"""
import sys

from engine.commands import train_stage1

if __name__ == "__main__":
    sys.exit(train_stage1())
