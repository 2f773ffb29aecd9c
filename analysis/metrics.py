"""Evaluation metrics: top-k accuracy, per-class and many/medium/few accuracy, ECE / MCE."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from config import CLASS_RANGE_KEYS, check_class_ranges
from utils.errors import ConfigError

N_BINS = 15
ClassRanges = Dict[str, Tuple[int, int]]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int]) -> Dict[int, int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at C)."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(target[:, None])
    return {k: int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (NaN where a class has no test sample)."""
    total = torch.bincount(target, minlength=num_classes).double()
    correct = torch.bincount(target[pred == target], minlength=num_classes).double()
    return correct / total


def calibration_errors(confidence: torch.Tensor, correct: torch.Tensor,
                       n_bins: int = N_BINS) -> Tuple[float, float, Dict[str, list]]:
    """ECE and MCE with ``n_bins`` equal-width bins.

    The bin of a confidence c is numpy.digitize(c, linspace(0, 1, n_bins + 1), right=True),
    i.e. bin i holds (edge[i-1], edge[i]] and bin 0 only c == 0 -- as the reference computes it.
    ECE = sum_b n_b / N * |acc_b - conf_b|; MCE = max_b |acc_b - conf_b| over non-empty bins.
    Also returns the per-bin counts, accuracies and confidences (for reliability diagrams).
    """
    confidence = confidence.double().cpu()
    correct = correct.double().cpu()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bins = torch.bucketize(confidence, edges, right=False)  # == np.digitize(right=True)
    nb = n_bins + 1
    count = torch.bincount(bins, minlength=nb).double()
    acc_sum = torch.bincount(bins, weights=correct, minlength=nb)
    conf_sum = torch.bincount(bins, weights=confidence, minlength=nb)
    nonempty = count > 0
    acc = torch.where(nonempty, acc_sum / count.clamp(min=1), torch.zeros_like(count))
    conf = torch.where(nonempty, conf_sum / count.clamp(min=1), torch.zeros_like(count))
    gap = (acc - conf).abs()
    n = max(confidence.numel(), 1)
    ece = float((count / n * gap).sum())
    mce = float(gap[nonempty].max()) if bool(nonempty.any()) else 0.0
    table = {"count": count.tolist(), "accuracy": acc.tolist(), "confidence": conf.tolist(),
             "edges": edges.tolist()}
    return ece, mce, table


def derive_class_ranges(cls_num_list: Sequence[int], many: int = 100, few: int = 20) -> ClassRanges:
    """Many (> ``many`` images) / medium / few (< ``few``) index ranges from training counts.

    Classes are expected in descending-count order (as every data set here provides them),
    so each group is a contiguous range.
    """
    counts = list(cls_num_list)
    n_many = sum(c > many for c in counts)
    n_few = sum(c < few for c in counts)
    c = len(counts)
    return {"many": (0, n_many), "medium": (n_many, c - n_few), "few": (c - n_few, c)}


def class_ranges(cfg, cls_num_list: Sequence[int]) -> ClassRanges:
    """The config's ``head/med/tail_class_idx`` when given, else derived from the counts.

    The three keys are given together or not at all (all at the placeholder ``[0, 1]``);
    given ones must be contiguous (:func:`config.check_class_ranges`) and end at the number
    of classes of the data.
    """
    c = len(cls_num_list)
    if not check_class_ranges(cfg):
        return derive_class_ranges(cls_num_list)
    end = cfg.tail_class_idx[1]
    if end != c:
        raise ConfigError(f"key 'tail_class_idx' is {list(cfg.tail_class_idx)} but the data "
                          f"has {c} classes; accepted: class ranges covering [0, {c}) (few "
                          f"ending at {c}), or none of head / med / tail_class_idx (derived "
                          "from the training counts)")
    return {name: (int(cfg[key][0]), int(cfg[key][1]))
            for name, key in zip(("many", "medium", "few"), CLASS_RANGE_KEYS)}


def shot_accuracies(class_acc: torch.Tensor, ranges: ClassRanges) -> Dict[str, float]:
    """Mean per-class accuracy over each many / medium / few index range (NaN if empty)."""
    out = {}
    for name, (a, b) in ranges.items():
        part = class_acc[a:b]
        part = part[~torch.isnan(part)]
        out[name] = float(part.mean()) if part.numel() else float("nan")
    return out


def classification_report(logits: torch.Tensor, target: torch.Tensor,
                          ranges: ClassRanges) -> Dict[str, object]:
    """All metrics of one evaluation, in percent (ECE / MCE in percent too)."""
    logits = logits.float().cpu()
    target = target.long().cpu()
    c = logits.shape[1]
    n = max(target.numel(), 1)
    hits = topk_correct(logits, target, (1, 5))
    prob = logits.softmax(dim=1)
    conf, pred = prob.max(dim=1)
    class_acc = per_class_accuracy(pred, target, c)
    shots = shot_accuracies(class_acc, ranges)
    ece, mce, table = calibration_errors(conf, pred.eq(target))
    return {
        "acc1": 100.0 * hits[1] / n,
        "acc5": 100.0 * hits[5] / n,
        "many": 100.0 * shots["many"],
        "medium": 100.0 * shots["medium"],
        "few": 100.0 * shots["few"],
        "ece": 100.0 * ece,
        "mce": 100.0 * mce,
        "class_acc": (100.0 * class_acc).tolist(),
        "calibration": table,
        "num_samples": int(target.numel()),
    }
