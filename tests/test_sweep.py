"""tools/sweep.py: the grid, the summary, and an end-to-end sweep with a killed run."""
import csv
import json
import os
import signal
import sys
import time

import pytest

from tests.fixtures import DIGITS_ARB, DIGITS_CE, ROOT, descendants, finish, run_cli, start
from tools import sweep
from utils.rundir import read_metrics


def fake_run(group, seed, rows, status="done"):
    run = sweep.Run("x.yaml", group, seed, f"{group}_s{seed}", [], len(rows))
    run.rows, run.status = rows, status
    return run


def row(epoch, acc1, many=0.0, medium=0.0, few=0.0, ece=0.0):
    return {"epoch": epoch, "acc1": acc1, "many": many, "medium": medium, "few": few,
            "ece": ece}


def test_table_is_mean_and_sample_std_over_finished_seeds():
    runs = [fake_run("a", 0, [row(1, 50.0, many=90), row(2, 40.0, many=80, ece=5.0)]),
            fake_run("a", 1, [row(1, 30.0), row(2, 60.0, many=100, ece=7.0)]),
            fake_run("a", 2, [row(1, 99.0)], status="failed"),  # not counted
            fake_run("b", 0, [row(1, 10.0), row(2, 20.0, few=3.0)])]
    lines = sweep.markdown_table(runs).splitlines()
    assert lines[0].startswith("| config | n | final Acc@1 | final many | final medium")
    assert len(lines) == 4
    a = [c.strip() for c in lines[2].strip("|").split("|")]
    # final Acc@1 40, 60: mean 50, sample std sqrt(200) = 14.14; best: 50 (epoch 1), 60
    assert a[:3] == ["a", "2", "50.00 ± 14.14"]
    assert a[3] == "90.00 ± 14.14" and a[6] == "6.00 ± 1.41"
    assert a[7] == "55.00 ± 7.07" and a[8] == "95.00 ± 7.07"
    b = [c.strip() for c in lines[3].strip("|").split("|")]
    assert b[:3] == ["b", "1", "20.00"] and b[5] == "3.00"  # one seed: no ± part


def test_best_is_the_first_epoch_reaching_the_maximum():
    run = fake_run("a", 0, [row(1, 50.0), row(2, 70.0, ece=1.0), row(3, 70.0, ece=2.0),
                            {"epoch": 4, "acc1": None}])
    assert run.best()["epoch"] == 2 and run.final()["epoch"] == 3


def test_plan_names_runs_by_config_vary_values_and_seed(tmp_path):
    args = sweep.parse_args(["--cfg", DIGITS_CE, "--cfg", DIGITS_ARB, "--seeds", "3", "1",
                             "--out", str(tmp_path), "--vary", "mixup", "False", "True",
                             "--vary", "loss", "auto", "--", "num_epochs", "2"])
    runs = sweep.plan(args)
    assert [r.name for r in runs] == [
        f"digits_imb005_{c}_mixup{m}_lossauto_s{s}" for c in ("ce", "arbloss")
        for m in ("False", "True") for s in (3, 1)]
    r = runs[2]
    assert r.group == "digits_imb005_ce_mixupTrue_lossauto" and r.num_epochs == 2
    assert r.opts == ["num_epochs", "2", "mixup", "True", "loss", "auto", "seed", "3", "name",
                      r.name, "output_dir", str(tmp_path)]


@pytest.mark.parametrize("argv,message", [
    (["name", "x"], "key 'name' is set by the sweep"),
    (["--vary", "seed", "1", "2"], "key 'seed' is set by --seeds"),
    (["--", "lr"], "KEY VALUE pairs"),
    (["--", "lr", "-1"], "key 'lr' is -1.0"),
    (["--vary", "lr", "0.1", "--", "lr", "0.2"], "a key is given twice"),
])
def test_bad_grids_exit_2_with_one_line_and_run_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    code = sweep.main(["--cfg", DIGITS_CE, "--seeds", "0", "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


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
