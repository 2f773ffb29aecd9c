"""eval.py's command: evaluate a checkpoint (ours or a MiSLAS / ARB-Loss one) on the config's
test set and write an analysis report, or choose a post-hoc tau on held-out data (the
top-level eval.py is a shim over :func:`main`).

    python eval.py --cfg config/cifar10/cifar10_imb001_stage1_mixup.yaml resume CKPT
    python eval.py --cfg CFG --out DIR --no-nc resume CKPT
    python eval.py --cfg CFG resume CKPT --json           # flags may come anywhere
    python eval.py --cfg CFG resume CKPT --tau-sweep tau_norm [--tau-grid 0:2:0.1]

Prints the metrics (``--json``: one JSON object) and writes a report folder: by default
``<run folder>/eval_<checkpoint stem>/`` for a checkpoint in a run's ``ckps`` folder (the
sibling of ``ckps``), else ``eval_<checkpoint stem>/`` beside the checkpoint (with
``_tau_norm<tau>`` / ``_logit_adjust<tau>`` appended under post-hoc corrections); ``--out DIR``
chooses it, ``--no-report`` skips it. The folder holds ``report.json`` (overall and
per-class metrics, calibration table, neural-collapse metrics), ``per_class.csv`` and the
figures ``reliability.png``, ``per_class_accuracy.png`` and ``weight_norm.png``.
Neural-collapse metrics need one pass over the training set; ``--no-nc`` skips it.

``--tau-sweep tau_norm | logit_adjust`` chooses the tau of a post-hoc correction on held-out
data instead (``engine/tau_sweep.py``): it scores every tau of ``--tau-grid`` on the selection
split (``--select-on``: the data set's validation list, or a class-stratified half of the test
set where there is none), prints the table and the report split's metrics at the chosen tau,
and writes ``tau_sweep_<method>.json`` / ``.csv`` into the report folder.

Exit status: 0 done; 2 user error (one line on stderr, no report written: a checkpoint that
cannot be read, does not fit or holds NaN / Inf weights, an unreadable image...); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from analysis.metrics import class_ranges, classification_report
from analysis.neural_collapse import nc_analysis
from analysis.report import (
    build_eval_report,
    classifier_row_norms,
    json_safe,
    write_eval_report,
    write_tau_sweep,
)
from config import load_config
from datasets import build_data
from datasets.loader import eval_loader
from engine import autocast_factory, distributed_session
from engine.cli import ScriptParser
from engine.evaluation import PostHoc, predict, training_features
from engine.tau_sweep import (
    DEFAULT_GRID,
    METHODS,
    SELECT_ON,
    Outputs,
    as_json,
    format_table,
    parse_grid,
    resolve_select_on,
    run_sweep,
    stratified_halves,
)
from models import build_network, classifier_for_checkpoint
from models.heads import LearnableWeightScaling
from utils import comm
from utils.checkpoint import load_checkpoint, load_network_state
from utils.errors import ConfigError, exit_on_user_error

log = logging.getLogger("eval")

_CKPT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags anywhere; ``opts``: the KEY VALUE overrides ('resume CKPT' among them)."""
    p = ScriptParser("eval.py", "Evaluate a checkpoint (stage 1 or 2) and write a report.",
                     overrides="config overrides; 'resume CKPT' names the checkpoint")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default: eval_<checkpoint stem> in the run folder, "
                        "or beside the checkpoint)")
    p.add_argument("--no-report", action="store_true", help="only print the metrics")
    p.add_argument("--no-nc", action="store_true",
                   help="skip the neural-collapse metrics (a pass over the training set)")
    p.add_argument("--tau-sweep", choices=METHODS, default=None, metavar="METHOD",
                   help="choose the tau of a post-hoc correction on held-out data: "
                        + " | ".join(METHODS))
    p.add_argument("--tau-grid", default=DEFAULT_GRID, metavar="GRID",
                   help=f"taus of the sweep: start:stop:step or a,b,c (default {DEFAULT_GRID})")
    p.add_argument("--select-on", choices=SELECT_ON, default="auto",
                   help="selection split of the sweep: val (the validation list), test-half (a "
                        "stratified half of the test set; the report uses the other half), auto "
                        "(val where the data set has one)")
    return p.parse_args(argv)


def checkpoint_stem(path: str) -> str:
    """``model_best.pth.tar`` -> ``model_best``."""
    name = os.path.basename(path)
    for suffix in _CKPT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def default_report_dir(ckpt: str, cfg) -> str:
    """``<run>/eval_<stem>`` when the checkpoint sits in a ``<model_dir>`` folder of a run
    (ours and MiSLAS's layout), else ``eval_<stem>`` beside the checkpoint; with post-hoc
    corrections ``_tau_norm<tau>`` / ``_logit_adjust<tau>`` are appended, so a corrected
    report never replaces the plain one."""
    folder = os.path.dirname(os.path.abspath(ckpt))
    if os.path.basename(folder) == cfg.model_dir:
        folder = os.path.dirname(folder)
    suffix = "".join(f"_{name}{value:g}" for name, value in
                     (("tau_norm", cfg.eval_tau_norm), ("logit_adjust", cfg.eval_logit_adjust))
                     if value)
    return os.path.join(folder, f"eval_{checkpoint_stem(ckpt)}{suffix}")


def run_eval(cfg, local_rank: Optional[int] = None, out_dir: Optional[str] = None,
             nc: bool = True, report: bool = True) -> dict:
    """Metrics of the checkpoint ``cfg.resume`` on the test set (all ranks return them).

    With ``nc`` the neural-collapse metrics of the training features are added (flat keys,
    see :func:`analysis.neural_collapse.nc_metrics`); with ``report`` rank 0 writes the report
    folder (``out_dir`` or :func:`default_report_dir`) and ``report_dir`` names it.
    """
    return _run_eval(cfg, local_rank, out_dir, nc, report)[0]


def run_tau_sweep(cfg, method: str, grid: List[float], select_on: str = "auto",
                  local_rank: Optional[int] = None, out_dir: Optional[str] = None,
                  report: bool = True) -> dict:
    """The tau sweep of ``method`` for the checkpoint ``cfg.resume`` (all ranks return it):
    :func:`engine.tau_sweep.as_json` plus the checkpoint, and ``report_dir`` where rank 0
    wrote ``tau_sweep_<method>.json`` / ``.csv`` (with ``report``)."""
    return _run_tau_sweep(cfg, method, grid, select_on, local_rank, out_dir, report)[0]


@dataclass
class _Loaded:
    """What both commands start from: the process group, the data, the class ranges, the
    checkpoint's network on the device, the checkpoint and the autocast factory."""

    dist: object
    data: object
    ranges: dict
    net: torch.nn.Module
    ckpt: dict
    autocast: object

    def predict(self, cfg, split: str, net: Optional[torch.nn.Module] = None,
                with_features: bool = False):
        """(logits, targets, features) of ``net`` (default: the checkpoint's) on a split."""
        loader = eval_loader(cfg, self.data, split, self.dist.device, self.dist.rank,
                             self.dist.world_size)
        return predict(net or self.net, loader, self.dist.device, self.autocast,
                       with_features=with_features, progress_every=cfg.print_freq, desc=split)

    def checkpoint_meta(self, cfg) -> dict:
        return {"checkpoint": os.path.abspath(cfg.resume),
                "checkpoint_epoch": int(self.ckpt.get("epoch", 0))}


@contextlib.contextmanager
def _loaded(cfg, local_rank: Optional[int]) -> Iterator[_Loaded]:
    if not cfg.resume:
        raise ConfigError("no checkpoint given: add 'resume PATH' after the config")
    with distributed_session(cfg, local_rank) as dist:
        data = build_data(cfg)
        ranges = class_ranges(cfg, data.cls_num_list)
        net, ckpt = _network(cfg, data, dist.device)
        yield _Loaded(dist, data, ranges, net, ckpt, autocast_factory(cfg, dist.device))


def _network(cfg, data, device: torch.device) -> Tuple[torch.nn.Module, dict]:
    """The network of the config with the weights of the checkpoint ``cfg.resume``, on
    ``device``, and that checkpoint."""
    ckpt = load_checkpoint(cfg.resume, legacy=cfg.legacy_checkpoint)
    net = build_network(cfg, cfg.num_classes, data.in_channels,
                        classifier=classifier_for_checkpoint(cfg, ckpt, cfg.resume))
    if "state_dict_lws_model" in ckpt:  # a stage-2 checkpoint (ours or MiSLAS's)
        net.lws = LearnableWeightScaling(cfg.num_classes)
    load_network_state(net, ckpt, cfg.resume)
    return net.to(device), ckpt


def _write_on_main(out: str, write: Callable[[], None]) -> str:
    """Rank 0 writes the report folder ``out``; every rank waits; returns its absolute path."""
    if comm.is_main_process():
        write()
    comm.synchronize()
    return os.path.abspath(out)


def _run_tau_sweep(cfg, method: str, grid: List[float], select_on: str,
                   local_rank: Optional[int], out_dir: Optional[str], report: bool
                   ) -> Tuple[dict, int]:
    if cfg.eval_tau_norm or cfg.eval_logit_adjust:
        raise ConfigError("--tau-sweep chooses tau itself: set keys 'eval_tau_norm' and "
                          "'eval_logit_adjust' to 0 (they are "
                          f"{cfg.eval_tau_norm:g} and {cfg.eval_logit_adjust:g})")
    with _loaded(cfg, local_rank) as run:
        where = resolve_select_on(select_on, run.data.val is not None, cfg.dataset)

        def outputs(split: str) -> Outputs:
            logits, target, feats = run.predict(cfg, split, with_features=True)
            return Outputs(logits, feats, target)

        test = outputs("test")
        if where == "val":
            select, rest = outputs("val"), test
        else:
            halves = stratified_halves(test.target, cfg.seed)
            select, rest = test.subset(halves[0]), test.subset(halves[1])
        res = run_sweep(method, grid, select, rest, run.net, run.data.cls_num_list,
                        run.ranges, where)
        result = as_json(res, {**run.checkpoint_meta(cfg), "table": format_table(res)})
        if report:
            out = out_dir or default_report_dir(cfg.resume, cfg)

            def write() -> None:
                paths = write_tau_sweep(result, out)
                log.info("tau sweep written to %s", ", ".join(paths.values()))

            result["report_dir"] = _write_on_main(out, write)
        return result, run.dist.rank


def format_sweep(r: dict) -> str:
    """The sweep's table and its outcome, for the terminal."""
    sel = {"val": "the validation split", "test-half": "half of the test set"}[r["select_on"]]
    rep = {"val": "the test set", "test-half": "the other half"}[r["select_on"]]

    def line(m: dict) -> str:
        return (f"Acc@1 {m['acc1']:.3f} many {m['many']:.3f} medium {m['medium']:.3f} "
                f"few {m['few']:.3f} ECE {m['ece']:.3f}")

    return (f"{r['method']} sweep, selected on {sel} ({r['n_select']} images):\n{r['table']}\n"
            f"chosen tau {r['tau']:g}; on {rep} ({r['n_report']} images): {line(r['report'])}\n"
            f"without the correction: {line(r['uncorrected'])}")


def _run_eval(cfg, local_rank: Optional[int], out_dir: Optional[str], nc: bool,
              report: bool) -> Tuple[dict, int]:
    """:func:`run_eval` and this process's rank (the process group is gone afterwards)."""
    with _loaded(cfg, local_rank) as run:
        posthoc = PostHoc.from_config(cfg, run.data.cls_num_list)
        if posthoc:
            log.info("evaluating with %s", posthoc.describe())
        logits, target, _ = run.predict(cfg, "test", net=posthoc.network(run.net))
        metrics = classification_report(posthoc.logits(logits), target, run.ranges)
        metrics["posthoc"] = posthoc.describe()
        metrics.update(run.checkpoint_meta(cfg))
        nc_flat, feat_norms = None, None
        if nc:
            dist = run.dist
            got = training_features(cfg, run.net, run.data, dist.device, dist.rank,
                                    dist.world_size, run.autocast)
            if got is not None:
                nc_flat, feat_norms = nc_analysis(got[0], got[1],
                                                  run.net.classifier.class_weights(),
                                                  run.ranges, device=dist.device)
                metrics.update(nc_flat)
        if report:
            out = out_dir or default_report_dir(cfg.resume, cfg)

            def write() -> None:
                rep = build_eval_report(
                    metrics, run.data.cls_num_list, run.ranges,
                    torch.bincount(target, minlength=cfg.num_classes).tolist(),
                    classifier_row_norms(run.net).tolist(), nc_flat,
                    None if feat_norms is None else feat_norms.tolist(),
                    meta={**run.checkpoint_meta(cfg), "config_name": cfg.name,
                          "dataset": cfg.dataset, "posthoc": metrics["posthoc"],
                          "backbone": cfg.backbone},
                    class_names=(run.data.extra or {}).get("class_names"))
                title = f"{cfg.name or checkpoint_stem(cfg.resume)} ep {rep['checkpoint_epoch']}"
                paths = write_eval_report(rep, out, title)
                log.info("report written to %s (%s)", out,
                         ", ".join(os.path.basename(p) for p in paths.values()))

            metrics["report_dir"] = _write_on_main(out, write)
        return metrics, run.dist.rank


def format_metrics(m: dict) -> str:
    """One line of the headline metrics (percent)."""
    return (f"Acc@1 {m['acc1']:.3f} Acc@5 {m['acc5']:.3f} many {m['many']:.3f} "
            f"medium {m['medium']:.3f} few {m['few']:.3f} ECE {m['ece']:.3f} MCE {m['mce']:.3f} "
            f"({m['num_samples']} test images)")


def format_nc(m: dict) -> str:
    """One line of the whole-set neural-collapse metrics."""
    return (f"NC1 {m['nc1']:.4f} equinorm means {m['equinorm_means']:.4f} W "
            f"{m['equinorm_w']:.4f} equiangularity means {m['equiangular_means']:.4f} W "
            f"{m['equiangular_w']:.4f} NC3 {m['nc3']:.4f}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    with exit_on_user_error("eval.py"):
        args = parse_args(argv)
        cfg = load_config(args.cfg, args.opts, stage=None)
        if args.tau_sweep:
            grid = parse_grid(args.tau_grid)
            r, rank = _run_tau_sweep(cfg, args.tau_sweep, grid, args.select_on, args.local_rank,
                                     args.out, report=not args.no_report)
            if rank == 0:
                print(json.dumps(json_safe(r)) if args.json else format_sweep(r))
                if "report_dir" in r and not args.json:
                    print(f"written to: {r['report_dir']}")
            return 0
        m, rank = _run_eval(cfg, args.local_rank, out_dir=args.out, nc=not args.no_nc,
                            report=not args.no_report)
        if rank == 0:
            if args.json:
                # Strict JSON: NaN (an empty group, an undefined NC value) becomes null.
                print(json.dumps(json_safe({k: v for k, v in m.items()
                                            if k != "calibration"})))
            else:
                print(f"{os.path.basename(cfg.resume)} (epoch {m['checkpoint_epoch']}): "
                      + format_metrics(m))
                if "nc1" in m:
                    print(format_nc(m))
                if "report_dir" in m:
                    print(f"report: {m['report_dir']}")
    return 0


