"""End-to-end training / evaluation on the embedded digits data and generated CIFAR.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_train.py."""
import json
import os

import pytest

from engine import commands
from tests.fixtures import DIGITS_ARB, DIGITS_CE, ROOT, only_run_dir, read_metrics
from utils.checkpoint import load_checkpoint

FAST = ["num_epochs", "2", "print_freq", "5"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert commands.train_stage1(["--cfg", DIGITS_ARB, "output_dir", str(out), "mixup", "True",
                              *FAST]) == 0
    return only_run_dir(str(out))


def test_run_folder_layout(digits_run):
    name = "digits_imb005_arbloss"
    assert os.path.basename(digits_run).startswith(name + "_")
    assert os.path.isfile(os.path.join(digits_run, "logs", name + ".txt"))
    for f in ("current.pth.tar", "model_best.pth.tar"):
        assert os.path.isfile(os.path.join(digits_run, "ckps", f))
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(digits_run, "logs")))
    rows = read_metrics(digits_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "train_acc1", "acc1", "acc5", "many", "medium",
                "few", "ece", "seconds"):
        assert key in rows[-1]
    assert rows[-1]["acc5"] >= rows[-1]["acc1"]
    log = open(os.path.join(digits_run, "logs", name + ".txt")).read()
    assert "Epoch 2: Acc@1" in log and "loss: ARB-Loss (batch counts) + mixup" in log


def test_checkpoint_keys(digits_run):
    ckpt = load_checkpoint(os.path.join(digits_run, "ckps", "current.pth.tar"))
    for key in ("epoch", "state_dict_model", "state_dict_classifier", "best_acc1", "its_ece",
                "optimizer", "config"):
        assert key in ckpt
    assert ckpt["epoch"] == 2 and isinstance(ckpt["config"], str)
    assert "arbloss: true" in ckpt["config"]
    best = load_checkpoint(os.path.join(digits_run, "ckps", "model_best.pth.tar"))
    rows = read_metrics(digits_run)
    assert best["best_acc1"] == max(r["acc1"] for r in rows)


def test_eval_reproduces_logged_metrics(digits_run, capsys):
    ckpt = os.path.join(digits_run, "ckps", "current.pth.tar")
    assert commands.evaluate(["--cfg", DIGITS_ARB, "--json", "resume", ckpt]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    last = read_metrics(digits_run)[-1]
    for k in ("acc1", "acc5", "many", "medium", "few", "ece"):
        assert m[k] == pytest.approx(last[k], abs=1e-9), k


@pytest.mark.slow
def test_deterministic_runs_are_identical(tmp_path):
    rows = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "mixup", "True",
                                  *FAST]) == 0
        rows.append([{k: v for k, v in r.items() if k != "seconds"}
                     for r in read_metrics(only_run_dir(str(out)))])
    assert rows[0] == rows[1]


@pytest.mark.slow
def test_two_runs_in_the_same_minute_get_distinct_folders(tmp_path):
    for _ in range(2):
        assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path),
                                  "num_epochs", "1"]) == 0
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.slow
def test_cifar_short_run_and_eval_cli(small_cifar10, tmp_path, capsys):
    cfg = os.path.join(ROOT, "config", "cifar10", "cifar10_imb01_stage1_mixup.yaml")
    common = ["data_path", small_cifar10, "download", "False", "backbone", "resnet8_fe",
              "batch_size", "32", "workers", "0"]
    assert commands.train_stage1(["--cfg", cfg, "output_dir", str(tmp_path), "num_epochs", "1",
                              *common]) == 0
    run = only_run_dir(str(tmp_path))
    capsys.readouterr()
    assert commands.evaluate(["--no-report", "--cfg", cfg, *common, "resume",
                             os.path.join(run, "ckps", "model_best.pth.tar")]) == 0
    logged = read_metrics(run)[-1]
    assert f"Acc@1 {logged['acc1']:.3f}" in capsys.readouterr().out
