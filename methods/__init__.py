"""Losses and mixup, as the published code names them:

    from methods import ARBLoss, mixup_data, mixup_criterion, LabelAwareSmoothing
"""
from __future__ import annotations

from typing import Sequence

from config import mixup_enabled
from methods.las import LabelAwareSmoothing, las_epsilons
from methods.losses import ARBLoss, ClassCountLoss, CrossEntropy, batch_class_counts, log_counts
from methods.mixup import mixup_criterion, mixup_data

__all__ = ["ARBLoss", "CrossEntropy", "ClassCountLoss", "LabelAwareSmoothing", "mixup_data",
           "mixup_criterion", "batch_class_counts", "log_counts", "las_epsilons",
           "build_criterion", "describe_criterion"]


def build_criterion(cfg, cls_num_list: Sequence[int]) -> ClassCountLoss:
    """The training loss named by the config flags (arbloss, warbloss, arbloss_fl,
    arb_loss_use_global_class_cnt, LAS)."""
    use_arb = cfg.arbloss or cfg.warbloss or cfg.arbloss_fl
    if use_arb:
        base = ARBLoss(cls_num_list=cls_num_list if cfg.arb_loss_use_global_class_cnt else None,
                       weighted=cfg.warbloss, focal_gamma=2.0 if cfg.arbloss_fl else 0.0)
    else:
        base = CrossEntropy()
    base.global_batch_counts = bool(cfg.arb_global_batch_counts)
    if cfg.LAS:
        return LabelAwareSmoothing(cls_num_list, cfg.smooth_head, cfg.smooth_tail,
                                   shape=cfg.las_shape, power=cfg.las_power, base=base)
    return base


def describe_criterion(cfg) -> str:
    """One line naming the loss in use (for logs and --dry-run)."""
    if cfg.arbloss or cfg.warbloss or cfg.arbloss_fl:
        name = "weighted ARB-Loss" if cfg.warbloss else "ARB-Loss"
        if cfg.arbloss_fl:
            name = "focal " + name
        name += " (global counts)" if cfg.arb_loss_use_global_class_cnt else " (batch counts)"
    else:
        name = "cross-entropy"
    if cfg.LAS:
        name += (f" + label-aware smoothing ({cfg.las_shape}, head {cfg.smooth_head}, "
                f"tail {cfg.smooth_tail})")
    if mixup_enabled(cfg):
        name += f" + mixup (alpha {cfg.alpha})"
    return name
