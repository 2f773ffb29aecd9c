"""Compare training runs from their ``metrics.jsonl``: a table and a plot of the test curves.

    python tools/compare.py saved/digits_imb005_ce_* saved/digits_imb005_arbloss_*
    python tools/compare.py RUN_A RUN_B --out curves.png --labels CE,ARB --at final
    python tools/compare.py RUN_A RUN_B --per-class-out per_class.png   # needs eval.py reports

The table gives, per run: epochs done, best Acc@1 and its epoch, the last evaluated Acc@1,
and many / medium / few / ECE at the best epoch (``--at final``: at the last evaluated
epoch). Runs still in progress are fine: a partial last line of metrics.jsonl is ignored,
epochs without evaluation (or with a null Acc@1) are left out of the accuracy columns.
The table goes to stdout; the curve plot to ``--out``, by default ``compare_<metric>.png``
beside the first run folder (``saved/compare_acc1.png`` for runs under ``saved/``), never into
the current folder. Exit status 2 when a run folder has no readable metrics.jsonl.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from utils.errors import EXIT_USER_ERROR, RunError, UserError, one_line
from utils.rundir import (
    METRICS_FILE,
    MetricsLog,
    is_finite_number,
    metrics_path,
    read_metrics,
)

log = logging.getLogger("compare")

PLOTTABLE = ("acc1", "acc5", "many", "medium", "few", "ece", "mce", "train_loss", "train_acc1")
LABELS = {"acc1": "test Acc@1 (%)", "acc5": "test Acc@5 (%)", "many": "many-shot Acc@1 (%)",
          "medium": "medium-shot Acc@1 (%)", "few": "few-shot Acc@1 (%)", "ece": "ECE (%)",
          "mce": "MCE (%)", "train_loss": "training loss", "train_acc1": "training Acc@1 (%)"}


@dataclass
class Run(MetricsLog):
    """One run's metrics.jsonl rows (:class:`utils.rundir.MetricsLog`) and its name."""

    name: str = ""
    path: str = ""

    @property
    def epochs(self) -> int:
        return max((int(r["epoch"]) for r in self.rows), default=0)


_finite = is_finite_number


def read_run(run: str) -> Run:
    """Parse a run's metrics.jsonl (:func:`utils.rundir.read_metrics`), tolerating a partial
    last line (a run in progress); unreadable lines and rows without an ``epoch`` are skipped
    with a note. A folder without the file is a :class:`RunError`."""
    path = metrics_path(run)
    if not os.path.isfile(path):
        raise RunError(f"{run}: no {METRICS_FILE} found (not a run folder, or the run has "
                       "not finished an epoch yet)")
    got = read_metrics(path)
    if not got.rows and got.notes and got.notes[0].startswith(path):
        raise RunError(got.notes[0])
    folder = os.path.dirname(os.path.abspath(path))
    return Run(got.rows, got.notes, os.path.basename(folder), folder)


def _fmt(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "-"


def table(runs: Sequence[Run], at: str = "best", labels: Optional[Sequence[str]] = None) -> str:
    """The comparison table, columns aligned (text left, numbers right)."""
    head = ["run", "epochs", "best Acc@1", "best ep", "final Acc@1", "final ep",
            "many", "medium", "few", "ECE"]
    body = []
    for i, run in enumerate(runs):
        best, final = run.best(), run.final()
        ref = best if at == "best" else final
        body.append([
            labels[i] if labels else run.name, str(run.epochs),
            _fmt(best and best["acc1"]), str(best["epoch"]) if best else "-",
            _fmt(final and final["acc1"]), str(final["epoch"]) if final else "-",
            *(_fmt(ref.get(k)) if ref else "-" for k in ("many", "medium", "few", "ece"))])
    widths = [max(len(r[j]) for r in [head] + body) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths)))
    where = "the best epoch" if at == "best" else "the final evaluated epoch"
    out = [line(head), line(["-" * w for w in widths]), *map(line, body),
           f"(many / medium / few / ECE at {where}; accuracies and ECE in %)"]
    return "\n".join(out)


def plot_curves(runs: Sequence[Run], path: str, metric: str = "acc1",
                labels: Optional[Sequence[str]] = None) -> str:
    """Plot ``metric`` against epoch for every run into ``path`` (PNG)."""
    from analysis import plots
    curves = {}
    for i, run in enumerate(runs):
        pts = [(r["epoch"], r[metric]) for r in run.rows if _finite(r.get(metric))]
        curves[labels[i] if labels else run.name] = ([p[0] for p in pts], [p[1] for p in pts])
    fig = plots.curves_plot(curves, LABELS.get(metric, metric),
                            f"{LABELS.get(metric, metric)} per epoch")
    return plots.save_figure(fig, path)


def read_report(run: Run, report: str) -> Dict[str, Any]:
    """The eval.py report ``<run>/<report>/report.json`` of a run."""
    path = os.path.join(run.path, report, "report.json")
    if not os.path.isfile(path):
        raise RunError(f"{run.path}: no {report}/report.json; run eval.py on the run's "
                       f"checkpoint first (or pick the folder with --report)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def plot_per_class(runs: Sequence[Run], path: str, report: str,
                   labels: Optional[Sequence[str]] = None) -> str:
    """Per-class accuracy and classifier weight norm against training count, all runs
    overlaid, from their eval.py reports (the first run's counts and groups are used)."""
    from analysis import plots
    reps = [read_report(r, report) for r in runs]
    counts = [c["train_count"] for c in reps[0]["classes"]]
    for run, rep in zip(runs, reps):
        if [c["train_count"] for c in rep["classes"]] != counts:
            raise RunError(f"{run.path}: its training counts differ from {runs[0].path}'s; "
                           "per-class plots need runs on the same data")
    names = [labels[i] if labels else r.name for i, r in enumerate(runs)]
    acc = {n: [c["accuracy"] for c in rep["classes"]] for n, rep in zip(names, reps)}
    norm = {n: [c["weight_norm"] for c in rep["classes"]] for n, rep in zip(names, reps)}
    ranges = {k: tuple(v) for k, v in reps[0]["ranges"].items()}
    return plots.save_figure(plots.per_class_comparison(counts, acc, norm, ranges), path)


def default_plot_path(first: Run, metric: str) -> str:
    """``compare_<metric>.png`` in the folder holding the first run (its output_dir)."""
    return os.path.join(os.path.dirname(first.path), f"compare_{metric}.png")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Compare runs from their metrics.jsonl.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or metrics.jsonl)")
    p.add_argument("--out", default=None, metavar="PNG",
                   help="curve plot path (default: compare_<metric>.png beside the first run "
                        "folder, i.e. in the folder that holds it)")
    p.add_argument("--no-plot", action="store_true", help="only print the table")
    p.add_argument("--metric", default="acc1", choices=PLOTTABLE,
                   help="what the curve plot shows (default %(default)s)")
    p.add_argument("--at", default="best", choices=("best", "final"),
                   help="epoch of the many / medium / few / ECE columns (default %(default)s)")
    p.add_argument("--labels", default=None,
                   help="comma-separated display names, one per run (default: folder names)")
    p.add_argument("--per-class-out", default=None, metavar="PNG",
                   help="also plot per-class accuracy and weight norms of the runs' eval.py "
                        "reports")
    p.add_argument("--report", default="eval_model_best",
                   help="report folder name inside each run (default %(default)s)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status (2 for a user error, message on stderr)."""
    args = parse_args(argv)
    try:
        labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
        if labels is not None and len(labels) != len(args.runs):
            raise UserError(f"--labels names {len(labels)} runs but {len(args.runs)} were "
                            "given")
        runs = [read_run(r) for r in args.runs]
        print(table(runs, args.at, labels))
        for i, run in enumerate(runs):
            for note in run.notes:
                print(f"note: {labels[i] if labels else run.name}: {note}")
        try:
            if not args.no_plot:
                out = args.out or default_plot_path(runs[0], args.metric)
                print(f"plot: {plot_curves(runs, out, args.metric, labels)}")
            if args.per_class_out:
                path = plot_per_class(runs, args.per_class_out, args.report, labels)
                print(f"per-class plot: {path}")
        except OSError as e:
            raise UserError(f"cannot write a plot: {e.filename or ''} "
                            f"({e.strerror or e})") from None
    except UserError as e:
        sys.stderr.write(f"compare.py: error: {one_line(str(e))}\n")
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
