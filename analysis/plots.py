"""Figures of an evaluation: reliability diagram, per-class accuracy and classifier weight norm
against training count, and accuracy curves of several runs.

Every function returns a :class:`matplotlib.figure.Figure` drawn on an Agg canvas and never
touches pyplot's global state (safe in a training process, a notebook or a test runner).
matplotlib is imported inside the functions so that importing this module -- and the
trainer that imports it -- stays fast.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

GROUP_COLOURS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#55a868"}
SERIES_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width: float = 6.4, height: float = 4.2):
    """A Figure with an Agg canvas attached (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str, dpi: int = 110) -> str:
    """Write ``fig`` as PNG to ``path`` (folders created); returns the path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    return path


def reliability_diagram(calibration: Mapping[str, Sequence[float]], ece: float,
                        title: str = "Reliability diagram"):
    """Accuracy against mean confidence per confidence bin, with the gap to the diagonal.

    ``calibration`` is the table of :func:`analysis.metrics.calibration_errors` (``count``,
    ``accuracy``, ``confidence`` per bin, ``edges``; bin 0 holds only confidence 0 and is
    drawn with bin 1); ``ece`` in percent goes into the title. A lower panel shows the share
    of samples per bin.
    """
    import numpy as np
    edges = np.asarray(calibration["edges"], dtype=float)
    count = np.asarray(calibration["count"], dtype=float)
    acc = np.asarray(calibration["accuracy"], dtype=float)
    conf = np.asarray(calibration["confidence"], dtype=float)
    # Fold the zero-confidence bin into the first real bin (weighted by counts).
    if count.shape[0] == edges.shape[0]:
        c0, c1 = count[0], count[1]
        if c0 > 0:
            tot = c0 + c1
            acc[1] = (acc[0] * c0 + acc[1] * c1) / tot
            conf[1] = (conf[0] * c0 + conf[1] * c1) / tot
            count[1] = tot
        count, acc, conf = count[1:], acc[1:], conf[1:]
    left, width = edges[:-1], np.diff(edges)
    nonempty = count > 0
    fig = new_figure(5.0, 5.6)
    gs = fig.add_gridspec(2, 1, height_ratios=(3.2, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    ax.bar(left[nonempty], acc[nonempty], width=width[nonempty], align="edge",
           color="#4c72b0", edgecolor="black", linewidth=0.6, label="accuracy")
    gap_lo = np.minimum(acc, conf)[nonempty]
    gap_h = np.abs(conf - acc)[nonempty]
    ax.bar(left[nonempty], gap_h, bottom=gap_lo, width=width[nonempty], align="edge",
           color="#d62728", alpha=0.35, edgecolor="#d62728", hatch="//", linewidth=0.6,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    ax.set_title(f"{title}\nECE {ece:.2f}%  ({len(left)} bins)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(gs[1], sharex=ax)
    total = max(count.sum(), 1.0)
    ax2.bar(left, count / total, width=width, align="edge", color="grey",
            edgecolor="black", linewidth=0.4)
    ax2.set_xlabel("confidence (max softmax probability)")
    ax2.set_ylabel("share")
    ax2.grid(alpha=0.3)
    return fig


def _group_spans(counts: Sequence[float], ranges: Mapping[str, Tuple[int, int]]
                 ) -> Dict[str, Tuple[float, float]]:
    """x-extent (in training count) of each non-empty group, meeting its neighbours halfway
    on the log axis so the shading tiles the plot without gaps."""
    spans = []
    for name, (a, b) in ranges.items():
        part = [float(c) for c in counts[a:b] if c > 0]
        if part:
            spans.append([name, min(part), max(part)])
    spans.sort(key=lambda s: s[1])
    for lo, hi in zip(spans, spans[1:]):
        if lo[2] < hi[1]:
            mid = math.sqrt(lo[2] * hi[1])
            lo[2], hi[1] = mid, mid
    out = {}
    for name, lo, hi in spans:
        out[name] = (lo / 1.25 if lo == min(s[1] for s in spans) else lo,
                     hi * 1.25 if hi == max(s[2] for s in spans) else hi)
    return out


def _shade_groups(ax, counts, ranges) -> None:
    for name, (lo, hi) in _group_spans(counts, ranges).items():
        ax.axvspan(lo, hi, color=GROUP_COLOURS.get(name, "#cccccc"), alpha=0.13, lw=0)
        ax.text(math.sqrt(lo * hi), 1.0, name, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color="dimgray")


def _series(values) -> Dict[str, Sequence[float]]:
    return dict(values) if isinstance(values, Mapping) else {"": values}


def draw_per_class(ax, counts: Sequence[float], values, ranges: Mapping[str, Tuple[int, int]],
                   ylabel: str, title: str, ylim: Optional[Tuple[float, float]] = None) -> None:
    """Draw a per-class value against the class's training count on ``ax`` (log x axis,
    many / medium / few shaded). ``values`` is one sequence (length C) or a mapping
    label -> sequence to overlay several runs; NaN / None entries are skipped."""
    import numpy as np
    x = np.asarray(counts, dtype=float)
    series = _series(values)
    markers = "osD^v<>"
    for i, (label, vals) in enumerate(series.items()):
        y = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
        ok = np.isfinite(y) & (x > 0)
        order = np.argsort(x[ok])
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        ax.plot(x[ok][order], y[ok][order], color=colour, lw=0.8, alpha=0.5)
        ax.scatter(x[ok], y[ok], s=22 if len(x) <= 200 else 6, color=colour,
                   marker=markers[i % len(markers)], label=label or None, zorder=3,
                   edgecolors="white", linewidths=0.4)
    ax.set_xscale("log")
    _shade_groups(ax, counts, ranges)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, pad=14)
    ax.grid(alpha=0.3, which="both")
    if any(series):
        ax.legend(fontsize=8, loc="best")


def per_class_plot(counts: Sequence[float], values, ranges: Mapping[str, Tuple[int, int]],
                   ylabel: str, title: str, ylim: Optional[Tuple[float, float]] = None):
    """A figure of one per-class value against training count; see :func:`draw_per_class`."""
    fig = new_figure(6.4, 4.0)
    draw_per_class(fig.add_subplot(1, 1, 1), counts, values, ranges, ylabel, title, ylim)
    return fig


ACC_PANEL = ("test accuracy (%)", (-3.0, 103.0))
NORM_PANEL = ("classifier weight norm ||w_c||", None)


def per_class_comparison(counts: Sequence[float], accuracy, weight_norm,
                         ranges: Mapping[str, Tuple[int, int]], title: str = ""):
    """Two panels side by side: per-class accuracy and classifier weight norm against
    training count; ``accuracy`` / ``weight_norm`` map a run label to its per-class values."""
    fig = new_figure(11.0, 4.0)
    for i, (vals, (ylabel, ylim), sub) in enumerate((
            (accuracy, ACC_PANEL, "per-class test accuracy"),
            (weight_norm, NORM_PANEL, "classifier weight norm per class"))):
        draw_per_class(fig.add_subplot(1, 2, i + 1), counts, vals, ranges, ylabel, sub, ylim)
    if title:
        fig.suptitle(title, fontsize=11, y=1.02)
    return fig


def per_class_accuracy_plot(counts, class_acc, ranges, title: str = "Per-class accuracy"):
    """Per-class test accuracy (percent) against training count; see :func:`per_class_plot`."""
    return per_class_plot(counts, class_acc, ranges, ACC_PANEL[0], title, ACC_PANEL[1])


def weight_norm_plot(counts, norms, ranges, title: str = "Classifier weight norm per class"):
    """||w_c|| of the classifier rows against training count; see :func:`per_class_plot`."""
    return per_class_plot(counts, norms, ranges, NORM_PANEL[0], title, NORM_PANEL[1])


def curves_plot(curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
                ylabel: str = "test Acc@1 (%)", title: str = "Test accuracy"):
    """One line per run: ``curves`` maps a run label to (epochs, values)."""
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, color=SERIES_COLOURS[i % len(SERIES_COLOURS)], lw=1.5,
                marker="o" if len(xs) <= 40 else None, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best")
    return fig
