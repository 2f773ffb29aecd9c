"""Evaluation reports (JSON, per-class CSV, figures) and the per-epoch TensorBoard figures.

``eval.py`` writes a report folder with :func:`build_eval_report` + :func:`write_eval_report`;
the trainer's analysis hook calls :func:`log_epoch_figures` after each evaluated epoch.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from utils.errors import ReportError

log = logging.getLogger(__name__)

ClassRanges = Mapping[str, Tuple[int, int]]
CSV_COLUMNS = ("class", "train_count", "group", "test_count", "accuracy", "weight_norm",
               "feature_mean_norm")
FIGURES = ("reliability.png", "per_class_accuracy.png", "weight_norm.png")


# ----------------------------------------------------------------------------- helpers
def classifier_row_norms(net: nn.Module) -> torch.Tensor:
    """||w_c|| of every class vector of the network's classifier (length C, CPU): the rows
    of ``classifier.class_weights()`` (the effective weights: 1 for a cosine or ETF head)."""
    return net.classifier.class_weights().detach().float().norm(dim=1).cpu()


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


# ----------------------------------------------------------------------------- eval report
def build_eval_report(metrics: Mapping[str, Any], cls_num_list: Sequence[int],
                      ranges: ClassRanges, test_counts: Sequence[int],
                      weight_norms: Sequence[float], nc: Optional[Mapping[str, float]] = None,
                      feature_norms: Optional[Sequence[float]] = None,
                      meta: Optional[Mapping[str, Any]] = None,
                      class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The JSON-ready report of one evaluation.

    ``metrics`` is :func:`analysis.metrics.classification_report`'s dict (percent);
    ``nc`` the flat NC dict (None when skipped); ``feature_norms`` the per-class centred
    feature-mean norms; ``meta`` extra top-level entries (checkpoint, epoch, config...);
    ``class_names`` (a folder tree's) adds each class's ``name``.
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
            "feature_mean_norm": None if feature_norms is None else _num(feature_norms[i]),
            **({"name": class_names[i]} if class_names else {})})
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
    from analysis import plots
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
        msg = f"cannot write the report in {out_dir!r} ({e.strerror or e})"
        raise ReportError(msg) from None
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


# ----------------------------------------------------------------------------- training figures
def log_epoch_figures(writer, epoch: int, net: nn.Module, cls_num_list: Sequence[int],
                      ranges: ClassRanges, metrics: Mapping[str, Any], figures: bool) -> None:
    """TensorBoard records of one evaluated epoch (rank 0's writer): a histogram of the
    classifier row norms always; with ``figures`` also the reliability diagram, per-class
    accuracy and weight-norm figures. ``epoch`` (1-based) is the step."""
    from analysis import plots
    norms = classifier_row_norms(net)
    writer.add_histogram("classifier/row_norm", norms, epoch)
    if figures:
        counts = list(cls_num_list)
        writer.add_figure("figures/reliability", plots.reliability_diagram(
            metrics["calibration"], metrics["ece"], f"epoch {epoch}"), epoch)
        writer.add_figure("figures/per_class_accuracy", plots.per_class_accuracy_plot(
            counts, metrics["class_acc"], ranges, f"epoch {epoch}: per-class accuracy"), epoch)
        writer.add_figure("figures/weight_norm", plots.weight_norm_plot(
            counts, norms.tolist(), ranges, f"epoch {epoch}: classifier weight norm"), epoch)
    writer.flush()


def write_tau_sweep(result: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    """Write a tau sweep (:func:`engine.tau_sweep.as_json`) as ``tau_sweep_<method>.json``
    and ``tau_sweep_<method>.csv`` (one row per tau, the selection split's metrics) into
    ``out_dir``; returns name -> path."""
    stem = os.path.join(out_dir, f"tau_sweep_{result['method']}")
    paths = {"json": stem + ".json", "csv": stem + ".csv"}
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(paths["json"], "w", encoding="utf-8") as f:
            json.dump(json_safe(dict(result)), f, indent=1, allow_nan=False)
            f.write("\n")
        with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            columns = list(result["rows"][0]) if result["rows"] else ["tau"]
            w.writerow(columns + ["chosen"])
            for row in result["rows"]:
                w.writerow([f"{row[k]:.6g}" for k in columns] + [int(row["tau"] == result["tau"])])
    except OSError as e:
        raise ReportError(f"cannot write the tau sweep in {out_dir!r} ({e.strerror or e}); "
                          "choose another folder with --out") from None
    return paths
