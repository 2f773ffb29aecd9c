"""Run every config x seed (x --vary value) as a normal training run and summarise them.

    python tools/sweep.py --cfg A.yaml [B.yaml ...] --seeds 0 1 2 --out DIR
                          [--jobs N] [--plot] [--vary KEY V1 V2 ...] [KEY VALUE ...]

Each run is ``train_stage1.py --cfg CFG [KEY VALUE ...] [KEY V] seed S name NAME
output_dir DIR resume auto``, a normal run folder ``DIR/NAME_<stamp>``; NAME encodes the
config, the --vary values and the seed (``digits_imb005_ce_mixupTrue_s0``). ``--vary KEY V1
V2 ...`` (repeatable) adds one run per value (the cross product of several); the KEY VALUE
overrides apply to every run (put them last; after --cfg, --seeds or --vary, write ``--``
first).

Runs go one after the other, or N at a time (``--jobs N``) as subprocesses on this machine;
each child gets ``OMP_NUM_THREADS = cpus // N`` unless the variable is set (results depend on
the thread count in the last bits: set it to reproduce a table on another machine). The
output of each run is kept in ``DIR/sweep_logs/NAME.log``.

``--launcher slurm`` submits each run as a SLURM job through submitit (``pip install
submitit``): ``--partition``, ``--nodes``, ``--gpus-per-node`` (one task per GPU; the tasks
form one process group from their SLURM variables) and ``--time-min`` set the job; SLURM sends
SIGUSR2 90 s before the time limit and the run saves a resumable checkpoint and requeues its
job (README, "On a SLURM cluster"). The sweep waits for every job, then writes the same run
folders, ``sweep.csv`` and table; submitit's own logs go to ``DIR/sweep_logs/submitit/``.

Rerunning the same command skips finished runs (``num_epochs`` rows in metrics.jsonl and a
``current.pth.tar`` of the last epoch) and resumes unfinished ones (``resume auto``: the newest
run of that name under DIR). A failing run is reported with the last line of its output and
the sweep goes on; the exit status is then 1 (2 for a bad command line or config, 128 + N when
stopped by signal N -- rerun to continue).

Finally ``DIR/sweep.csv`` (one row per run: final and best-epoch Acc@1, many, medium, few,
ECE) and a markdown table (also ``DIR/sweep.md``): mean +- sample standard deviation over
the seeds, one row per config (and --vary value); ``--plot`` draws ``DIR/sweep.png``, per
group (many / medium / few / all) bars with error bars at the final epoch.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from config import load_config
from utils.errors import EXIT_USER_ERROR, CheckpointError, UserError, one_line
from utils.rundir import (
    MetricsLog,
    RunLock,
    find_latest_checkpoint,
    is_finite_number,
    read_metrics,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROG = "sweep.py"
SWEEP_LOCK = ".sweep.lock"  # held by the sweep running in an --out folder
SET_BY_SWEEP = {"seed": "--seeds", "name": "the sweep (config and seed)",
                "output_dir": "--out", "resume": "the sweep (resume auto)"}
METRICS = ("acc1", "many", "medium", "few", "ece")
METRIC_NAMES = {"acc1": "Acc@1", "many": "many", "medium": "medium", "few": "few",
                "ece": "ECE"}
CSV_FIELDS = (["config", "cfg", "seed", "status", "run_dir", "epochs"]
              + [f"{at}_{k}" for at in ("final", "best") for k in ("epoch",) + METRICS])


@dataclass
class Run:
    """One training run of the sweep."""

    cfg_path: str
    group: str  # table row: config stem and --vary values
    seed: int
    name: str
    opts: List[str]  # every KEY VALUE given to train_stage1.py
    num_epochs: int = 0
    model_dir: str = "ckps"
    run_dir: Optional[str] = None
    status: str = "pending"  # pending | done | failed | stopped (by a signal, resumable)
    message: str = ""
    rows: List[Dict[str, Any]] = field(default_factory=list)

    def final(self) -> Optional[Dict[str, Any]]:
        return MetricsLog(self.rows).final()

    def best(self) -> Optional[Dict[str, Any]]:
        return MetricsLog(self.rows).best()


_finite = is_finite_number


def _safe(text: str) -> str:
    """A value as it may appear in a folder name."""
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


# ------------------------------------------------------------------ the grid
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Run configs x seeds and summarise.")
    p.add_argument("--cfg", action="extend", nargs="+", required=True, metavar="YAML",
                   help="config files (one or more; repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to run")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the run folders")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--plot", action="store_true", help="also draw DIR/sweep.png")
    p.add_argument("--vary", action="append", nargs="+", default=[], metavar="KEY V",
                   help="KEY V1 V2 ...: one run per value (repeatable: cross product)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: subprocesses on this machine (default); slurm: a SLURM job "
                        "per run through submitit")
    p.add_argument("--partition", default="", help="slurm: the partition (default: the "
                                                   "cluster's)")
    p.add_argument("--nodes", type=int, default=1, help="slurm: nodes per run (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=1,
                   help="slurm: GPUs (= tasks) per node (default 1)")
    p.add_argument("--time-min", type=int, default=24 * 60,
                   help="slurm: time limit of a job in minutes (default 1440)")
    # submitit's executor kind: None = detect SLURM; tests use "local"
    p.add_argument("--submitit-cluster", default=None, help=argparse.SUPPRESS)
    # the training script (tests use one with a fault hook)
    p.add_argument("--script", default=os.path.join(ROOT, "train_stage1.py"),
                   help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of every run")
    args = p.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if min(args.nodes, args.gpus_per_node, args.time_min) < 1:
        p.error("--nodes, --gpus-per-node and --time-min must be >= 1")
    for v in args.vary:
        if len(v) < 2:
            p.error(f"--vary {' '.join(v)}: give a key and at least one value")
    return args


def plan(args: argparse.Namespace) -> List[Run]:
    """Every run of the grid, in order: config, --vary values, seed (configs checked)."""
    if len(args.opts) % 2:
        raise UserError(f"overrides must come as KEY VALUE pairs; got {args.opts}")
    keys = args.opts[0::2] + [v[0] for v in args.vary]
    for key in keys:
        if key in SET_BY_SWEEP:
            raise UserError(f"key '{key}' is set by {SET_BY_SWEEP[key]}; remove it")
    if len(set(keys)) != len(keys):
        raise UserError(f"a key is given twice among the overrides and --vary: {keys}")
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds repeats a seed: {args.seeds}")
    out = os.path.abspath(args.out)
    variants = list(itertools.product(*[[(v[0], x) for x in v[1:]] for v in args.vary]))
    runs, names = [], {}
    for cfg_path in stage1_configs(args):
        stem = os.path.splitext(os.path.basename(cfg_path))[0]
        for variant in variants:
            group = stem + "".join(f"_{_safe(k)}{_safe(x)}" for k, x in variant)
            if group in names and names[group] != cfg_path:
                raise UserError(f"{cfg_path} and {names[group]} would share the run names "
                                f"{group}_s*; give the config files distinct names")
            names[group] = cfg_path
            for seed in args.seeds:
                name = f"{group}_s{seed}"
                opts = (list(args.opts) + [s for kv in variant for s in kv]
                        + ["seed", str(seed), "name", name, "output_dir", out])
                cfg = load_config(cfg_path, opts)  # a bad config stops the sweep before it runs
                runs.append(Run(cfg_path, group, seed, name, opts, cfg.num_epochs,
                                cfg.model_dir))
    return runs


def stage1_configs(args: argparse.Namespace) -> List[str]:
    """The configs of ``--cfg`` that the (stage-1) script trains: a stage-2 file (``mode:
    'stage2'``) that a pattern such as ``cifar100_imb001_*.yaml`` also matches is skipped with a
    note on stdout (it needs a stage-1 checkpoint: train_stage2.py); only stage-2 files is an
    error."""
    if os.path.basename(args.script) != "train_stage1.py":
        return list(args.cfg)
    kept = []
    for cfg_path in args.cfg:
        if load_config(cfg_path, stage=None).mode == "stage2":
            print(f"skipping {cfg_path}: a stage-2 config (mode: 'stage2'); train_stage2.py "
                  "runs it from a stage-1 checkpoint", flush=True)
        else:
            kept.append(cfg_path)
    if not kept:
        raise UserError("every --cfg file is a stage-2 config (mode: 'stage2'); the sweep "
                        "trains stage-1 configs (train_stage1.py)")
    return kept


# ------------------------------------------------------------------ run folders
def locate(run: Run, out: str) -> None:
    """Find the run's folder (the one ``resume auto`` continues: newest current.pth.tar of
    its name under ``out``) and whether it is finished: ``num_epochs`` metrics rows and a
    checkpoint of the last epoch."""
    ckpt = find_latest_checkpoint(out, run.name, run.model_dir)
    run.run_dir, run.rows = None, []
    if not ckpt:
        return
    run.run_dir = os.path.dirname(os.path.dirname(ckpt))
    run.rows = read_metrics(run.run_dir).rows
    epochs = [int(r["epoch"]) for r in run.rows]
    if epochs[-1:] != [run.num_epochs] or len(set(epochs)) != run.num_epochs:
        return
    from utils.checkpoint import load_checkpoint  # imports torch: only once a run exists
    try:
        state = load_checkpoint(ckpt)
    except CheckpointError:
        return
    if state.get("epoch") == run.num_epochs and not state.get("iteration"):
        run.status = "done"


def last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [s.strip() for s in f.read().splitlines()[-50:] if s.strip()]
    except OSError:
        return ""
    return one_line(lines[-1]) if lines else ""


# ------------------------------------------------------------------ running
class Runner:
    """Starts the runs as subprocesses, ``jobs`` at a time; forwards SIGTERM / SIGINT to
    them (they save a resumable checkpoint) and starts nothing new after one."""

    def __init__(self, args: argparse.Namespace, out: str):
        self.args, self.out = args, out
        self.log_dir = os.path.join(out, "sweep_logs")
        self.env = dict(os.environ)
        if "OMP_NUM_THREADS" not in self.env:
            self.env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
        self.signum = 0
        self.running: Dict[subprocess.Popen, Tuple[Run, float]] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for p in self.running:
            try:
                p.send_signal(signum)
            except OSError:
                pass

    def start(self, run: Run) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        cmd = [sys.executable, self.args.script, "--cfg", run.cfg_path, *run.opts,
               "resume", "auto"]
        log_path = os.path.join(self.log_dir, run.name + ".log")
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.running[p] = (run, time.time())

    def finish(self, p: subprocess.Popen, total: int, done: List[Run]) -> None:
        run, t0 = self.running.pop(p)
        done.append(run)
        locate(run, self.out)
        took = f"{time.time() - t0:.0f} s"
        if p.returncode == 0 and run.status == "done":
            print(f"[{len(done)}/{total}] done {run.name} ({took})", flush=True)
            return
        if self.signum and p.returncode == 128 + self.signum:
            run.status = "stopped"  # saved a resumable checkpoint: the next sweep goes on
            print(f"[{len(done)}/{total}] stopped {run.name} ({took})", flush=True)
            return
        run.status = "failed"
        why = (f"killed by signal {-p.returncode}" if p.returncode < 0
               else f"exit status {p.returncode}")
        run.message = last_line(os.path.join(self.log_dir, run.name + ".log"))
        print(f"[{len(done)}/{total}] FAILED {run.name} ({why}, {took}): {run.message}",
              flush=True)

    def run_all(self, todo: Sequence[Run]) -> None:
        old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        pending, done = list(todo), []
        try:
            while pending or self.running:
                while pending and not self.signum and len(self.running) < self.args.jobs:
                    run = pending.pop(0)
                    print(f"start {run.name}", flush=True)
                    self.start(run)
                for p in [p for p in self.running if p.poll() is not None]:
                    self.finish(p, len(todo), done)
                if self.signum and not self.running:
                    break
                time.sleep(0.2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def require_submitit():
    """The submitit module, or a UserError line saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install submitit") from None
    return submitit


def run_in_job(argv: List[str]) -> int:
    """What a submitit job runs: one training run in this process (each SLURM task of the
    job runs it; they form one group from their SLURM variables)."""
    from engine import commands
    return commands.train_stage1(argv)


class SlurmRunner:
    """Submits every run as a job through submitit and waits for them all."""

    def __init__(self, args: argparse.Namespace, out: str):
        submitit = require_submitit()
        self.args, self.out, self.signum = args, out, 0
        self.executor = submitit.AutoExecutor(
            folder=os.path.join(out, "sweep_logs", "submitit", "%j"),
            cluster=args.submitit_cluster)
        params = dict(nodes=args.nodes, tasks_per_node=args.gpus_per_node,
                      timeout_min=args.time_min, slurm_signal_delay_s=90)
        if self.executor.cluster == "slurm":
            params.update(gpus_per_node=args.gpus_per_node, slurm_additional_parameters={
                "requeue": True})
            if args.partition:
                params["slurm_partition"] = args.partition
        self.executor.update_parameters(**params)

    def run_all(self, todo: Sequence[Run]) -> None:
        jobs = []
        for run in todo:
            self.executor.update_parameters(name=run.name)
            argv = ["--cfg", run.cfg_path, *run.opts, "resume", "auto"]
            jobs.append((run, self.executor.submit(run_in_job, argv)))
            print(f"submitted {run.name}: job {jobs[-1][1].job_id}", flush=True)
        for k, (run, job) in enumerate(jobs, 1):
            try:
                code = job.result()
            except Exception as e:  # noqa: BLE001 - the job failed: report and go on
                code, run.message = None, one_line(str(e)).split(" Traceback")[0][-300:]
            locate(run, self.out)
            if code == 0 and run.status == "done":
                print(f"[{k}/{len(jobs)}] done {run.name} (job {job.job_id})", flush=True)
            else:
                run.status = "failed"
                run.message = run.message or f"exit status {code}"
                print(f"[{k}/{len(jobs)}] FAILED {run.name} (job {job.job_id}): "
                      f"{run.message}", flush=True)


# ------------------------------------------------------------------ summary
def write_csv(runs: Sequence[Run], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for run in runs:
            row: Dict[str, Any] = {"config": run.group, "cfg": run.cfg_path, "seed": run.seed,
                                   "status": run.status, "run_dir": run.run_dir or "",
                                   "epochs": max((int(r["epoch"]) for r in run.rows),
                                                 default=0)}
            for at, ref in (("final", run.final()), ("best", run.best())):
                row[f"{at}_epoch"] = ref["epoch"] if ref else ""
                for k in METRICS:
                    row[f"{at}_{k}"] = ref.get(k, "") if ref else ""
            w.writerow(row)


def group_stats(runs: Sequence[Run]) -> Dict[str, Dict[str, Any]]:
    """Per group (in order): n finished seeds and, per (at, metric), the list of values."""
    out: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        g = out.setdefault(run.group, {"n": 0, "values": {}})
        if run.status != "done":
            continue
        g["n"] += 1
        for at, ref in (("final", run.final()), ("best", run.best())):
            for k in METRICS:
                if ref is not None and _finite(ref.get(k)):
                    g["values"].setdefault((at, k), []).append(float(ref[k]))
    return out


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {s:.2f}"


def markdown_table(runs: Sequence[Run]) -> str:
    """One row per config: n seeds, then mean ± std of Acc@1, many, medium, few, ECE at the
    final and at the best epoch."""
    head = (["config", "n"] + [f"final {METRIC_NAMES[k]}" for k in METRICS]
            + [f"best {METRIC_NAMES[k]}" for k in METRICS])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1))
             + "|"]
    for group, g in group_stats(runs).items():
        cells = [group, str(g["n"])] + [_cell(g["values"].get((at, k), []))
                                        for at in ("final", "best") for k in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: Sequence[Run], path: str) -> str:
    """One panel per class group (many / medium / few / all): a bar per config with the
    sample standard deviation over seeds as error bar, at the final epoch."""
    from analysis import plots
    stats = group_stats(runs)
    names = [n for n, g in stats.items() if g["n"]]
    panels = [("many", "many-shot"), ("medium", "medium-shot"), ("few", "few-shot"),
              ("acc1", "all classes")]
    fig = plots.new_figure(11.0, 1.2 + 0.28 * max(len(names), 1))
    axes = fig.subplots(1, len(panels), sharey=True)
    ys = list(range(len(names)))[::-1]  # the first config on top
    for ax, (key, title) in zip(axes, panels):
        ms = [mean_std(stats[n]["values"].get(("final", key), [])) for n in names]
        ax.barh(ys, [m for m, _ in ms], xerr=[s for _, s in ms], height=0.7, capsize=2,
                color=plots.GROUP_COLOURS.get(key, "#7f7f7f"), error_kw={"lw": 0.8})
        for y, (m, _) in zip(ys, ms):
            ax.text(1, y, f"{m:.1f}", va="center", ha="left", fontsize=7, color="white")
        ax.set_xlim(0, 100)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("Acc@1 (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([f"{n} (n={stats[n]['n']})" for n in names], fontsize=7)
    fig.suptitle("test accuracy at the final epoch: mean and standard deviation over seeds",
                 fontsize=10)
    return plots.save_figure(fig, path)


# ------------------------------------------------------------------ entry point
def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    lock = RunLock(out, SWEEP_LOCK, "another sweep is running there")
    try:
        runs = plan(args)
        if args.launcher == "slurm":
            require_submitit()
        os.makedirs(out, exist_ok=True)
        lock.acquire()  # one sweep per folder: a second would train every run again
    except UserError as e:
        sys.stderr.write(f"{PROG}: error: {one_line(str(e))}\n")
        return EXIT_USER_ERROR
    except OSError as e:
        sys.stderr.write(f"{PROG}: error: --out: cannot create {out} ({e.strerror or e})\n")
        return EXIT_USER_ERROR
    try:
        return _sweep(args, runs, out)
    finally:
        lock.release()  # (a process that ends releases it too; main() may run in-process)


def _sweep(args: argparse.Namespace, runs: List[Run], out: str) -> int:
    for run in runs:
        locate(run, out)
    todo = [r for r in runs if r.status != "done"]
    if args.launcher == "slurm":
        runner = SlurmRunner(args, out)
        how = f"as {runner.executor.cluster} jobs through submitit"
    else:
        runner = Runner(args, out)
        how = (f"{args.jobs} at a time (OMP_NUM_THREADS={runner.env['OMP_NUM_THREADS']})")
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished; {len(todo)} to run, "
          f"{how}", flush=True)
    runner.run_all(todo)
    failed = [r for r in runs if r.status == "failed"]
    write_csv(runs, os.path.join(out, "sweep.csv"))
    table = markdown_table(runs)
    with open(os.path.join(out, "sweep.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table)
    print("(mean ± sample standard deviation over the n finished seeds; final: the last "
          "epoch, best: the epoch of the highest test Acc@1; accuracies and ECE in %)")
    print(f"results: {os.path.join(out, 'sweep.csv')}")
    if args.plot:
        print(f"plot: {plot(runs, os.path.join(out, 'sweep.png'))}")
    for run in failed:
        print(f"failed: {run.name}: {run.message}")
    if runner.signum:
        print(f"stopped by signal {runner.signum}; rerun the same command to continue")
        return 128 + runner.signum
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
