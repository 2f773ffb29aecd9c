"""Losses and mixup, as the published code names them:

    from methods import ARBLoss, mixup_data, mixup_criterion, LabelAwareSmoothing

and the factory of the training loss a config names: ``build_criterion(cfg, cls_num_list)``,
``describe_criterion(cfg)`` (:mod:`methods.criterion`).
"""
from __future__ import annotations

from methods.criterion import LOSS_BUILDERS, build_criterion, describe_criterion, resolve_loss
from methods.las import LabelAwareSmoothing, las_epsilons
from methods.losses import (
    ARBLoss,
    BalancedSoftmax,
    ClassBalancedLoss,
    ClassCountLoss,
    CrossEntropy,
    DeferredReweighting,
    DotRegressionLoss,
    FocalLoss,
    LabelSmoothingLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    batch_class_counts,
    class_balanced_weights,
    etf_scales,
    log_counts,
)
from methods.mixup import mixup_criterion, mixup_data

__all__ = ["ARBLoss", "CrossEntropy", "ClassCountLoss", "LabelAwareSmoothing", "mixup_data",
           "mixup_criterion", "batch_class_counts", "log_counts", "las_epsilons",
           "BalancedSoftmax", "LogitAdjustedLoss", "LDAMLoss", "FocalLoss",
           "ClassBalancedLoss", "LabelSmoothingLoss", "DeferredReweighting", "DotRegressionLoss",
           "etf_scales",
           "class_balanced_weights", "LOSS_BUILDERS", "build_criterion", "describe_criterion",
           "resolve_loss"]
