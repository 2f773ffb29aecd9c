"""Evaluation reports (JSON, per-class CSV, figures) and the trainer's per-epoch analysis hook.

``eval.py`` writes a report folder with :func:`build_eval_report` + :func:`write_eval_report`;
the trainer calls :func:`epoch_analysis` after each evaluated epoch.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from datasets.loader import build_loader, per_rank_workers
from utils import comm
from utils.errors import UserError
from utils.evaluation import predict
from utils.neural_collapse import nc_analysis

log = logging.getLogger(__name__)

ClassRanges = Mapping[str, Tuple[int, int]]
CSV_COLUMNS = ("class", "train_count", "group", "test_count", "accuracy", "weight_norm",
               "feature_mean_norm")
FIGURES = ("reliability.png", "per_class_accuracy.png", "weight_norm.png")


class ReportError(UserError):
    """The report folder cannot be created or written."""


# ----------------------------------------------------------------------------- helpers
def classifier_row_norms(net: nn.Module) -> torch.Tensor:
    """||w_c|| of every row of the network's ``classifier.fc`` weight (length C, CPU)."""
    return net.classifier.fc.weight.detach().float().norm(dim=1).cpu()


def class_groups(ranges: ClassRanges, num_classes: int) -> List[str]:
    """The group name of each class index (the first range holding it; '' if none)."""
    names = [""] * num_classes
    for name, (a, b) in reversed(list(ranges.items())):  # first listed range wins
        a, b = max(a, 0), min(b, num_classes)
        names[a:b] = [name] * max(b - a, 0)
    return names


def is_due(freq: int, epoch: int, last: bool = False) -> bool:
    """Whether an every-``freq``-epochs task runs after ``epoch`` (1-based); 0 = never.
    ``last`` (the final epoch) makes an enabled task run even off its period."""
    return freq > 0 and (epoch % freq == 0 or last)


def json_safe(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, tensors become lists."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _num(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def analysis_loader(cfg, dataset, device: torch.device):
    """An in-order loader over ``dataset`` for this rank (every sample on exactly one rank),
    with the config's evaluation batch size and workers."""
    world = comm.get_world_size()
    batch = max((cfg.test_batch_size or cfg.batch_size) // world, 1)
    return build_loader(dataset, batch, train=False, seed=cfg.seed, rank=comm.get_rank(),
                        world_size=world, workers=per_rank_workers(cfg.workers, world),
                        pin_memory=device.type == "cuda")


def training_features(cfg, net: nn.Module, data, device: torch.device, autocast=None,
                      loader=None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) of the training set seen with test transforms (``data.train_eval``),
    gathered over ranks; None when the data set has no such view. All ranks must call it."""
    if data.train_eval is None:
        log.warning("the data set offers no training view with test transforms; "
                    "neural-collapse metrics skipped")
        return None
    loader = loader or analysis_loader(cfg, data.train_eval, device)
    _, labels, feats = predict(net, loader, device, autocast, with_features=True,
                               progress_every=cfg.print_freq, desc="training features")
    return feats, labels


# ----------------------------------------------------------------------------- eval report
def build_eval_report(metrics: Mapping[str, Any], cls_num_list: Sequence[int],
                      ranges: ClassRanges, test_counts: Sequence[int],
                      weight_norms: Sequence[float], nc: Optional[Mapping[str, float]] = None,
                      feature_norms: Optional[Sequence[float]] = None,
                      meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The JSON-ready report of one evaluation.

    ``metrics`` is :func:`utils.metrics.classification_report`'s dict (percent);
    ``nc`` the flat NC dict (None when skipped); ``feature_norms`` the per-class centred
    feature-mean norms; ``meta`` extra top-level entries (checkpoint, epoch, config...).
    Non-finite numbers become null.
    """
    c = len(cls_num_list)
    groups = class_groups(ranges, c)
    acc = list(metrics["class_acc"])
    classes = []
    for i in range(c):
        classes.append({
            "class": i, "train_count": int(cls_num_list[i]), "group": groups[i],
            "test_count": int(test_counts[i]), "accuracy": _num(acc[i]),
            "weight_norm": _num(weight_norms[i]),
            "feature_mean_norm": None if feature_norms is None else _num(feature_norms[i])})
    report: Dict[str, Any] = dict(meta or {})
    report.update({
        "num_classes": c,
        "num_train_samples": int(sum(cls_num_list)),
        "num_test_samples": int(metrics["num_samples"]),
        "ranges": {k: [int(a), int(b)] for k, (a, b) in ranges.items()},
        **{k: metrics[k] for k in ("acc1", "acc5", "many", "medium", "few", "ece", "mce")},
        "calibration": metrics.get("calibration"),
        "neural_collapse": dict(nc) if nc is not None else None,
        "classes": classes,
    })
    return json_safe(report)


def write_eval_report(report: Mapping[str, Any], out_dir: str, title: str = "") -> Dict[str, str]:
    """Write ``report.json``, ``per_class.csv`` and the PNG figures (reliability diagram,
    per-class accuracy and classifier weight norm against training count) into ``out_dir``;
    returns name -> path."""
    from utils import plots
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the report folder {out_dir!r} "
                          f"({e.strerror or e}); choose another with --out") from None
    paths = {"json": os.path.join(out_dir, "report.json"),
             "csv": os.path.join(out_dir, "per_class.csv")}
    try:
        with open(paths["json"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, allow_nan=False)
            f.write("\n")
        with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for row in report["classes"]:
                w.writerow(["" if row[k] is None else
                            (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                            for k in CSV_COLUMNS])
    except OSError as e:
        raise ReportError(f"cannot write the report in {out_dir!r} ({e.strerror or e})") \
            from None
    prefix = f"{title}: " if title else ""
    counts = [r["train_count"] for r in report["classes"]]
    ranges = {k: tuple(v) for k, v in report["ranges"].items()}
    figs = {
        "reliability.png": plots.reliability_diagram(
            report["calibration"], report["ece"], f"{prefix}reliability diagram"),
        "per_class_accuracy.png": plots.per_class_accuracy_plot(
            counts, [r["accuracy"] for r in report["classes"]], ranges,
            f"{prefix}per-class accuracy (Acc@1 {report['acc1']:.2f}%)"),
        "weight_norm.png": plots.weight_norm_plot(
            counts, [r["weight_norm"] for r in report["classes"]], ranges,
            f"{prefix}classifier weight norm per class"),
    }
    for name, fig in figs.items():
        paths[name] = plots.save_figure(fig, os.path.join(out_dir, name))
    return paths


# ----------------------------------------------------------------------------- trainer hook
def epoch_analysis(cfg, epoch: int, net: nn.Module, data, ranges: ClassRanges,
                   metrics: Mapping[str, Any], writer, device: torch.device,
                   autocast: Optional[Callable] = None, *, last: bool = False,
                   loader=None) -> Dict[str, float]:
    """Per-epoch analysis for the trainer; call it on every rank after each evaluation.

    * ``epoch``: epochs completed (1-based), the TensorBoard step and the period counter.
    * ``net``: the plain :class:`models.LTNet` (not the DDP / compiled wrapper).
    * ``metrics``: the dict :func:`utils.evaluation.evaluate` returned for this epoch.
    * ``writer``: a SummaryWriter on rank 0, None elsewhere (then nothing is logged).
    * ``last``: True at the final epoch: enabled periodic tasks then run off-period too.
    * ``loader``: optional reusable loader over ``data.train_eval`` (else one is built).

    Logs a histogram of the classifier row norms every call; every ``cfg.plot_freq`` epochs
    the reliability diagram, per-class accuracy and weight-norm figures; every
    ``cfg.nc_freq`` epochs computes NC metrics on the training features (all ranks take
    part in the feature pass) and returns them on every rank as a flat dict of floats
    (``nc1``, ``nc1_many``, ..., ``equinorm_means``, ``equiangular_w``, ``nc3``...; NaN
    where undefined) for the metrics row. Returns {} when NC is not due.
    """
    if writer is not None:
        from utils import plots
        norms = classifier_row_norms(net)
        writer.add_histogram("classifier/row_norm", norms, epoch)
        if is_due(cfg.plot_freq, epoch, last):
            counts = list(data.cls_num_list)
            writer.add_figure("figures/reliability", plots.reliability_diagram(
                metrics["calibration"], metrics["ece"], f"epoch {epoch}"), epoch)
            writer.add_figure("figures/per_class_accuracy", plots.per_class_accuracy_plot(
                counts, metrics["class_acc"], ranges,
                f"epoch {epoch}: per-class accuracy"), epoch)
            writer.add_figure("figures/weight_norm", plots.weight_norm_plot(
                counts, norms.tolist(), ranges, f"epoch {epoch}: classifier weight norm"),
                epoch)
    out: Dict[str, float] = {}
    if is_due(cfg.nc_freq, epoch, last):
        got = training_features(cfg, net, data, device, autocast, loader)
        if got is not None and comm.is_main_process():
            feats, labels = got
            out, _ = nc_analysis(feats, labels, net.classifier.fc.weight, ranges,
                                 device=device)
        # Only rank 0 computes; every rank returns the same dict.
        out = comm.broadcast_object(out) if got is not None else {}
    if writer is not None:
        writer.flush()
    return out
