"""Stage 2: classifier re-training on a frozen stage-1 network, MiSLAS's recipe and the decoupled
baselines, on the same engine as stage 1.

MiSLAS (Zhong et al., "Improving Calibration for Long-Tailed Recognition", CVPR 2021;
github.com/dvlab-research/MiSLAS, train_stage2.py), ``stage2_method: mislas``:

* the network of the stage-1 checkpoint given as ``resume``; the backbone (and, for
  Places-LT, the block) is frozen and runs under ``torch.no_grad``;
* ``shift_bn: True`` keeps the frozen feature extractor's BatchNorm layers in train mode, so
  their running statistics move to the class-balanced data (the backbone; for Places-LT, whose
  backbone is frozen since stage 1, the block); ``False`` keeps them in eval mode;
* trained: the classifier and a learnable weight scaling (LWS: one scale per class, initialised
  to 1, multiplying the logits), with label-aware smoothing (``smooth_head`` / ``smooth_tail``);
* class-aware sampling (MiSLAS datasets/sampler.py: a class at a time, 4 images of it), an epoch
  of ceil(N / batch_size) + 1 steps (its loop breaks once i > ceil(N / batch_size));
* SGD over two groups: the classifier at ``lr_factor`` x lr, LWS at lr; lr follows the cosine
  0.5 lr (1 + cos(pi epoch / num_epochs)) (``cos`` is not read), weight decay on both.

The decoupled baselines of Kang et al. ("Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020) on the same machinery: ``crt`` re-initialises the
classifier and trains it with the config's loss (cross-entropy by default), ``lws`` trains only
the weight scaling on the stage-1 classifier. tau-normalisation and post-hoc logit adjustment
need no training: they are the evaluation keys ``eval_tau_norm`` / ``eval_logit_adjust``.

Differences from the published script, on purpose: under DDP the class-aware sampler gives each
rank a disjoint share (MiSLAS lets every process draw the whole epoch), a stage-2 run's best
Acc@1 starts at 0 (MiSLAS starts it at the stage-1 checkpoint's, so its ``model_best`` is
written only when stage 2 beats stage 1), and an interrupted stage-2 run resumes exactly from
its own checkpoint (``resume`` that checkpoint, or ``resume auto``).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from datasets.loader import per_rank_batch, train_loader
from datasets.samplers import build_sampler
from engine.hooks import HookBase
from engine.parts import set_group_lr
from engine.trainer import Trainer
from methods import ClassCountLoss, LabelAwareSmoothing
from models import LTNet, classifier_for_checkpoint, count_parameters
from models.heads import LearnableWeightScaling
from utils import comm
from utils.checkpoint import load_checkpoint, load_network_state
from utils.errors import ConfigError

log = logging.getLogger("train")

METHODS = ("mislas", "crt", "lws")


class Stage2Trainer(Trainer):
    """:class:`engine.Trainer` for stage 2 (see the module docstring)."""

    STAGE = 2

    def __init__(self, cfg, dist: comm.DistInfo, hooks: Sequence[HookBase] = (), data=None,
                 dry_run: bool = False):
        self.method = cfg.stage2_method
        self.init_from: Optional[Tuple[str, dict]] = None  # the stage-1 checkpoint
        self._read: Optional[Tuple[str, dict]] = None  # the checkpoint 'resume', read once
        super().__init__(cfg, dist, hooks, data, dry_run)

    def _checkpoint(self, path: str) -> dict:
        if self._read is None or self._read[0] != path:
            self._read = (path, load_checkpoint(path, legacy=self.cfg.legacy_checkpoint))
        return self._read[1]

    def classifier_kind(self) -> str:
        """The head of the checkpoint stage 2 starts from (a cosine or ETF head stays one);
        see :func:`models.classifier_for_checkpoint`."""
        path = self.cfg.resume
        if not path or path == "auto" or not os.path.isfile(path):
            return super().classifier_kind()
        return classifier_for_checkpoint(self.cfg, self._checkpoint(path), path)

    # ------------------------------------------------------------------ parts
    def build_network(self) -> LTNet:
        """The stage-1 network with LWS (``mislas``, ``lws``); the feature extractor frozen;
        ``lws`` also freezes the classifier. Which BatchNorm statistics move
        (:func:`shifted_parts`): with ``shift_bn``, MiSLAS's the last feature part's (the
        backbone; Places-LT: the block), Kang et al.'s (crt, lws) every feature part's."""
        net = super().build_network()
        if self.method in ("mislas", "lws"):
            net.lws = LearnableWeightScaling(self.cfg.num_classes)
        features = ["model"] + (["block"] if net.block is not None else [])
        net.freeze(features + (["classifier"] if self.method == "lws" else []),
                   shifted_parts(self.method, features, self.cfg.shift_bn))
        return net

    def build_criterion(self) -> ClassCountLoss:
        """Label-aware smoothing for ``mislas``; the config's loss for ``crt`` / ``lws``."""
        cfg = self.cfg
        if self.method != "mislas":
            return super().build_criterion()
        # smooth_head / smooth_tail are set: config.check_stage refuses a mislas run without
        return LabelAwareSmoothing(self.data.cls_num_list, cfg.smooth_head, cfg.smooth_tail,
                                   shape=cfg.las_shape, power=cfg.las_power)

    def describe_loss(self) -> str:
        if self.method != "mislas":
            return super().describe_loss()
        cfg = self.cfg
        name = (f"label-aware smoothing ({cfg.las_shape}, head {cfg.smooth_head}, tail "
                f"{cfg.smooth_tail})")
        return name + (f" + {self.mix}" if self.mix is not None else "")

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD over the classifier (lr x ``lr_factor``) and LWS (lr) groups, as MiSLAS."""
        cfg, net = self.cfg, self.net
        groups: List[dict] = []
        if self.method != "lws":
            groups.append({"params": list(net.classifier.parameters()),
                           "lr_scale": self.lr_factor, "name": "classifier"})
        if net.lws is not None:
            groups.append({"params": list(net.lws.parameters()), "lr_scale": 1.0,
                           "name": "lws"})
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)

    @property
    def lr_factor(self) -> float:
        return 1.0 if self.cfg.lr_factor is None else float(self.cfg.lr_factor)

    def set_lr(self, epoch: int) -> float:
        """MiSLAS's cosine schedule; each group at its scale of it. Returns the base lr."""
        lr = 0.5 * self.cfg.lr * (1.0 + math.cos(math.pi * epoch / self.cfg.num_epochs))
        for g in self.optimizer.param_groups:
            set_group_lr(g, g["lr_scale"] * lr, self.lr_tensor_device)
        return lr

    def build_train_loader(self):
        """Class-aware sampling with MiSLAS's epoch of ceil(N / batch_size) + 1 steps, rank-aware
        under DDP; ``train_stage2_instance: True`` (a key of the ARB-Loss code) samples
        instances instead, and another ``sampler`` than ``instance`` is used as it is."""
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        if cfg.train_stage2_instance or cfg.sampler != "instance":
            kind = "instance" if cfg.train_stage2_instance else cfg.sampler
            return train_loader(cfg, self.data, self.device, rank, world, sampler=kind)
        steps = math.ceil(len(self.data.train) / cfg.batch_size) + 1
        sampler = build_sampler("class_aware", self.data.train.targets, seed=cfg.seed,
                                rank=rank, world_size=world,
                                num_samples=steps * per_rank_batch(cfg.batch_size, world) * world)
        return train_loader(cfg, self.data, self.device, rank, world, sampler=sampler)

    def summary(self) -> str:
        cfg, net = self.cfg, self.net
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        resume = cfg.resume or "(not set)"
        if cfg.resume and cfg.resume != "auto" and not os.path.isfile(cfg.resume):
            resume += " (not found)"
        lines = [super().summary(),
                 f"stage 2: {self.method}; frozen: {', '.join(net.frozen)}; BatchNorm "
                 f"statistics moving: {', '.join(net.shift_bn) or 'none'}; trainable "
                 f"parameters: {trainable:,}"
                 + (f" (LWS {count_parameters(net.lws):,})" if net.lws is not None else ""),
                 f"stage-1 checkpoint (resume): {resume}"]
        return "\n".join(lines)

    # ------------------------------------------------------------------ set-up
    def resolve_resume(self) -> str:
        """``resume`` is the stage-1 checkpoint the network starts from (MiSLAS's meaning),
        or a stage-2 checkpoint of ours to continue exactly (``auto``: the newest run of this
        name). Returns the checkpoint to resume from ('' when starting from stage 1)."""
        cfg = self.cfg
        if not cfg.resume:
            raise ConfigError("key 'resume' is empty: train_stage2.py starts from a stage-1 "
                              "checkpoint; set resume PATH (or resume auto to continue an "
                              "interrupted stage-2 run)")
        path = super().resolve_resume()
        if not path:
            raise ConfigError(f"resume auto: no earlier stage-2 run of '{cfg.name}' under "
                              f"{cfg.output_dir}; give the stage-1 checkpoint as resume PATH")
        ckpt = self._checkpoint(path)
        self._read = None  # held by init_from from here on, or read again by the resume
        if int(ckpt.get("stage", 1)) == 2:  # a stage-2 run of ours: continue it
            return path
        self.init_from = (path, ckpt)
        return ""

    def prepare(self) -> None:
        """Stage-1 weights into the network (all parts but LWS), the classifier
        re-initialised for ``crt``, then :meth:`Trainer.prepare`."""
        if self.init_from is not None:
            path, ckpt = self.init_from
            load_stage1_weights(self.net, ckpt, path)
            if self.method == "crt":
                self.net.classifier = reinitialised(self.net.classifier)
            log.info("stage 2 (%s) starts from %s (epoch %s of stage 1)", self.method, path,
                     ckpt.get("epoch", "?"))
        super().prepare()


def load_stage1_weights(net: LTNet, ckpt: Dict, path: str) -> None:
    """Backbone, block and classifier of ``net`` from a stage-1 checkpoint (ours or MiSLAS /
    ARB-Loss, ``module.`` prefixes allowed); LWS keeps its initialisation."""
    lws, net.lws = net.lws, None
    try:
        load_network_state(net, ckpt, path)
    finally:
        net.lws = lws


def shifted_parts(method: str, features: List[str], shift_bn: bool) -> List[str]:
    """The frozen feature parts whose BatchNorm layers stay in train mode, so that their running
    statistics move to the stage-2 batches. ``shift_bn`` False: none. True: for ``mislas`` the
    last feature part (MiSLAS train_stage2.py: ``model.train()`` if shift_bn, or for Places-LT
    ``block.train()``); for ``crt`` / ``lws`` every feature part (Kang et al.,
    classifier-balancing run_networks.py: every network is put in train mode each epoch and
    the fixed feature model only loses ``requires_grad``)."""
    if not shift_bn:
        return []
    return list(features) if method in ("crt", "lws") else [features[-1]]


def reinitialised(classifier):
    """A new classifier of the same kind and shape, initialised as stage 1 initialises it
    (:meth:`models.heads.Classifier.fresh`; an ETF head keeps its fixed ETF): cRT's start."""
    device = next(iter(classifier.state_dict().values())).device
    return classifier.fresh().to(device)
