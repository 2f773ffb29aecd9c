"""tools/sweep.py: the grid, the summary, and an end-to-end sweep with a killed run.

Here: the launched processes; the rest in tests/unit/test_sweep.py."""
import csv
import json
import os
import signal
import sys
import time

import pytest

from tests.fixtures import DIGITS_ARB, DIGITS_CE, ROOT, descendants, finish, run_cli, start
from utils.rundir import read_metrics


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def metrics_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return f.read().splitlines()


@pytest.mark.slow
def test_sweep_end_to_end_with_a_killed_run_then_rerun(tmp_path):
    """2 configs x 2 seeds, 2 epochs, 2 at a time. One training process is SIGKILLed after its
    first epoch: the sweep reports it, finishes the others and exits 1. The rerun skips the
    three finished runs (no new folder, metrics untouched) and resumes the killed one in its
    folder."""
    out = str(tmp_path / "sweep")
    grid = ["--cfg", DIGITS_CE, "--cfg", DIGITS_ARB, "--seeds", "0", "1", "--out", out,
            "--jobs", "2"]
    overrides = ["--", "num_epochs", "2", "print_freq", "50", "digits_test_per_class", "10"]
    # every training step 0.2 s longer: the kill surely comes before the run ends
    slow_script = ["--script", os.path.join(ROOT, "tests", "train_with_fault.py")]
    p = start([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), *grid, *slow_script,
               *overrides], {"ARB_TEST_FAULT": "slow"})
    victim = None
    t0 = time.time()
    while victim is None and time.time() - t0 < 300:
        assert p.poll() is None, finish(p)
        for d in os.listdir(out) if os.path.isdir(out) else []:
            f = os.path.join(out, d, "metrics.jsonl")
            # the first epoch's row and checkpoint (written after the row, atomically)
            ckpt = os.path.join(out, d, "ckps", "current.pth.tar")
            if os.path.isfile(ckpt) and open(f).read().count("\n") >= 1:
                victim = d.rsplit("_", 1)[0]  # the run name, without the time stamp
                break
        time.sleep(0.1)
    assert victim is not None, finish(p)
    killed = 0
    for pid in descendants(p.pid):
        try:
            cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
        except OSError:
            continue
        if "name" in cmd and cmd[cmd.index("name") + 1] == victim:
            os.kill(pid, signal.SIGKILL)
            killed += 1
    assert killed == 1
    text, _ = finish(p)
    assert p.returncode == 1, text
    assert f"FAILED {victim} (killed by signal 9" in text and f"failed: {victim}: " in text
    folders = sorted(d for d in os.listdir(out) if d.startswith("digits"))
    assert len(folders) == 4
    done = {d: metrics_rows(os.path.join(out, d)) for d in folders
            if not d.startswith(victim + "_")}
    assert all(len(rows) == 2 for rows in done.values())
    table = {(r["config"], r["seed"]): r for r in read_csv(os.path.join(out, "sweep.csv"))}
    assert len(table) == 4
    assert [r["status"] for r in table.values()].count("failed") == 1

    res = run_cli("tools/sweep.py", *grid, "--plot", *overrides)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 runs, 3 already finished; 1 to run" in res.stdout
    assert f"done {victim}" in res.stdout
    assert sorted(d for d in os.listdir(out) if d.startswith("digits")) == folders
    for d, rows in done.items():
        assert metrics_rows(os.path.join(out, d)) == rows
    (resumed,) = [d for d in folders if d.startswith(victim + "_")]
    assert [json.loads(r)["epoch"] for r in metrics_rows(os.path.join(out, resumed))] == [1, 2]
    log = open(os.path.join(out, "sweep_logs", victim + ".log")).read()
    assert log.count("=== ") == 2 and "resumed from" in log
    rows = read_csv(os.path.join(out, "sweep.csv"))
    assert [(r["config"], r["seed"], r["status"]) for r in rows] == [
        ("digits_imb005_ce", "0", "done"), ("digits_imb005_ce", "1", "done"),
        ("digits_imb005_arbloss", "0", "done"), ("digits_imb005_arbloss", "1", "done")]
    for r in rows:
        last = read_metrics(r["run_dir"]).rows[-1]
        assert float(r["final_acc1"]) == last["acc1"] and r["final_epoch"] == "2"
    assert "| digits_imb005_ce | 2 |" in res.stdout and "| digits_imb005_arbloss | 2 |" in (
        res.stdout)
    assert os.path.getsize(os.path.join(out, "sweep.png")) > 0


@pytest.mark.slow
def test_a_submitit_sweep_end_to_end(tmp_path, capsys):
    """--launcher slurm through submitit's local executor: each config x seed a job (a process
    of its own), the same run folders, sweep.csv and table as the default launcher; a rerun
    submits nothing."""
    pytest.importorskip("submitit")  # requirements-test.txt installs it
    from tools import sweep
    out = str(tmp_path / "sweep")
    argv = ["--cfg", DIGITS_CE, "--seeds", "0", "1", "--out", out, "--launcher", "slurm",
            "--submitit-cluster", "local", "--time-min", "10", "--", "num_epochs", "1",
            "print_freq", "50", "digits_test_per_class", "10"]
    assert sweep.main(argv) == 0
    text = capsys.readouterr().out
    assert "2 to run, as local jobs through submitit" in text and text.count("submitted ") == 2
    rows = read_csv(os.path.join(out, "sweep.csv"))
    assert [(r["seed"], r["status"], r["epochs"]) for r in rows] == [("0", "done", "1"),
                                                                    ("1", "done", "1")]
    for r in rows:
        assert os.path.basename(r["run_dir"]).startswith(f"digits_imb005_ce_s{r['seed']}_")
        assert len(read_metrics(r["run_dir"]).rows) == 1
    assert os.listdir(os.path.join(out, "sweep_logs", "submitit"))  # submitit's own logs
    assert "| digits_imb005_ce | 2 |" in open(os.path.join(out, "sweep.md")).read()
    assert sweep.main(argv) == 0
    assert "0 to run" in capsys.readouterr().out
