"""The parts of a run a trainer builds, each an overridable method (stage 2 overrides several):
network, loss, optimiser, training loader, learning rate, train mode, default hooks, and the
summary ``--dry-run`` prints. The builders themselves live with their owners
(:func:`models.build_network`, :func:`methods.build_criterion`, :mod:`datasets.loader`); these
methods only hand them the config.
"""
from __future__ import annotations

from typing import List

import torch

from config import classifier_kind
from datasets.loader import train_loader
from engine.hooks import DEFAULT_HOOKS, GradMonitorHook, HookBase
from engine.schedule import lr_at_epoch
from methods import ClassCountLoss, build_criterion, describe_criterion
from models import LTNet, build_network, count_parameters


class RunParts:
    """Mixed into :class:`engine.trainer.Trainer`: reads ``cfg``, ``data``, ``dry_run``,
    ``net``, ``dist``, ``device``, ``optimizer`` and ``train_net`` of the trainer."""

    def build_network(self) -> LTNet:
        """The network of ``cfg.backbone`` with a ``num_classes``-way classifier."""
        return build_network(self.cfg, self.cfg.num_classes, self.data.in_channels,
                             pretrained=False if self.dry_run else None,
                             classifier=self.classifier_kind())

    def classifier_kind(self) -> str:
        """The classifier head to build (key ``classifier``, :func:`config.classifier_kind`)."""
        return classifier_kind(self.cfg)

    def build_criterion(self) -> ClassCountLoss:
        """The training loss of the config (``loss`` and the reference flags)."""
        return build_criterion(self.cfg, self.data.cls_num_list, self.net.classifier)

    def describe_loss(self) -> str:
        """One line naming the training loss (logs, ``--dry-run``)."""
        return describe_criterion(self.cfg)

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(self.cfg, self.net)

    def build_train_loader(self):
        """The training loader (:func:`datasets.loader.train_loader`)."""
        return train_loader(self.cfg, self.data, self.device, self.dist.rank,
                            self.dist.world_size)

    def set_lr(self, epoch: int) -> float:
        """Set the learning rate of ``epoch`` (0-based) in every group; returns it."""
        lr = lr_at_epoch(self.cfg, epoch)
        for g in self.optimizer.param_groups:
            set_group_lr(g, lr, self.lr_tensor_device)
        return lr

    @property
    def lr_tensor_device(self):
        """Where the groups' learning rates live as tensors: the device under a compiled step
        (``compile_mode``: a float the schedule rewrites would be a constant compiled again at
        every change), None (plain floats) otherwise."""
        return None if self.cfg.compile_mode == "none" else self.device

    def train_mode(self) -> None:
        """Put the network in training mode (a frozen backbone stays in eval mode)."""
        self.train_net.train()

    def default_hooks(self) -> List[HookBase]:
        """The hooks of :data:`engine.hooks.DEFAULT_HOOKS`, in that order (the gradient monitor
        only with ``grad_stats_freq`` > 0)."""
        hooks: List[HookBase] = []
        for kind in DEFAULT_HOOKS:
            if kind is GradMonitorHook:
                if self.cfg.grad_stats_freq > 0:
                    hooks.append(GradMonitorHook(self.cfg.grad_stats_freq))
            else:
                hooks.append(kind())
        return hooks

    def summary(self) -> str:
        """Data set, class groups, parameter counts and loss: what ``--dry-run`` prints."""
        cfg, counts, net = self.cfg, self.data.cls_num_list, self.net
        parts = [f"dataset: {cfg.dataset} ({self.data.name}), {cfg.num_classes} classes, "
                 f"data_path {cfg.data_path}",
                 f"training images: {sum(counts)} (largest class {max(counts)}, smallest "
                 f"{min(counts)}, imbalance ratio {max(counts) / max(min(counts), 1):.1f})",
                 f"test images: {len(self.data.test)}",
                 "classes many / medium / few: " + " / ".join(
                     f"{b - a} [{a}, {b})" for a, b in self.ranges.values()),
                 f"backbone: {cfg.backbone}, {count_parameters(net.model):,} parameters"]
        if net.block is not None:
            parts.append(f"block: {count_parameters(net.block):,} parameters")
        parts.append(f"classifier: {net.classifier.kind}, "
                     f"{count_parameters(net.classifier):,} parameters")
        parts.append(f"loss: {self.describe_loss()}")
        return "\n".join(parts)


def set_group_lr(group: dict, lr: float, tensor_device=None) -> None:
    """Set a parameter group's learning rate: in place when it is a tensor (a compiled
    optimiser step keeps reading the same tensor), as a new tensor on ``tensor_device`` when
    one is asked for (e.g. after loading a checkpoint whose groups held floats), else as a
    float."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    elif tensor_device is not None:
        group["lr"] = torch.tensor(lr, dtype=torch.float32, device=tensor_device)
    else:
        group["lr"] = lr


def build_optimizer(cfg, net: LTNet) -> torch.optim.Optimizer:
    """SGD with one parameter group per trainable part (backbone, block, classifier), as the
    reference; the trainer sets ``lr`` every epoch."""
    groups = [{"params": [p for p in m.parameters() if p.requires_grad]}
              for m in net.parts().values()]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr,
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay)
