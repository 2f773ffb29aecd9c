"""tools/sweep.py: the grid, the summary, and an end-to-end sweep with a killed run.

Here: the checks without a training loop or a process; the rest in tests/processes/test_sweep.py."""
import sys

import pytest

from tests.fixtures import DIGITS_ARB, DIGITS_CE
from tools import sweep


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


def test_the_slurm_launcher_without_submitit_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    out = tmp_path / "out"
    code = sweep.main(["--cfg", DIGITS_CE, "--seeds", "0", "--out", str(out),
                       "--launcher", "slurm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["sweep.py: error: --launcher slurm needs submitit: "
                                 "pip install submitit"]
    assert not out.exists()
