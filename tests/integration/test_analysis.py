"""Neural-collapse metrics, the eval.py report folder and the trainer's epoch_analysis hook.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_analysis.py."""
import csv
import json
import os

import numpy as np
import pytest

from analysis.neural_collapse import nc_keys
from engine import commands
from tests.fixtures import DIGITS_CE, only_run_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    assert os.path.getsize(path) > 1024, path


# ----------------------------------------------------------------------------- eval report
@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis_runs")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "1",
                              "print_freq", "5"]) == 0
    run = only_run_dir(str(out))
    return run, os.path.join(run, "ckps", "model_best.pth.tar")


@pytest.mark.slow
def test_eval_writes_report_json_csv_and_figures(digits_ckpt, tmp_path, capsys):
    run, ckpt = digits_ckpt
    out = tmp_path / "report"
    assert commands.evaluate(["--cfg", DIGITS_CE, "--json", "--out", str(out),
                             "resume", ckpt]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rep = json.load(open(out / "report.json"))
    for k in ("acc1", "acc5", "many", "medium", "few", "ece", "mce"):
        assert rep[k] == pytest.approx(printed[k]), k
    assert rep["checkpoint"] == os.path.abspath(ckpt) and rep["checkpoint_epoch"] == 1
    assert rep["ranges"] == {"many": [0, 1], "medium": [1, 6], "few": [6, 10]}
    assert len(rep["calibration"]["count"]) == 16 and rep["num_test_samples"] == 500
    classes = rep["classes"]
    assert [c["class"] for c in classes] == list(range(10))
    assert [c["group"] for c in classes] == ["many"] + ["medium"] * 5 + ["few"] * 4
    counts = [c["train_count"] for c in classes]
    assert counts == sorted(counts, reverse=True) and sum(counts) == rep["num_train_samples"]
    assert all(c["test_count"] == 50 for c in classes)
    assert all(c["weight_norm"] > 0 and c["feature_mean_norm"] > 0 for c in classes)
    med = np.mean([c["accuracy"] for c in classes[1:6]])
    assert med == pytest.approx(rep["medium"])
    acc1 = sum(c["accuracy"] * c["test_count"] for c in classes) / 500
    assert acc1 == pytest.approx(rep["acc1"])
    nc = rep["neural_collapse"]
    assert set(nc_keys()) <= set(nc)
    assert nc["nc1"] > 0 and nc["nc1"] == pytest.approx(printed["nc1"])
    assert nc["equiangular_means_many"] is None  # one many-shot class: no pairs
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "train_count", "group", "test_count", "accuracy",
                             "weight_norm", "feature_mean_norm"]
    assert len(rows) == 10 and rows[6]["group"] == "few"
    assert float(rows[3]["accuracy"]) == pytest.approx(classes[3]["accuracy"], rel=1e-5)
    for name in ("reliability.png", "per_class_accuracy.png", "weight_norm.png"):
        assert_png(str(out / name))


@pytest.mark.slow
def test_eval_default_report_folder_and_no_nc(digits_ckpt, capsys):
    run, ckpt = digits_ckpt
    assert commands.evaluate(["--cfg", DIGITS_CE, "--no-nc", "resume", ckpt]) == 0
    text = capsys.readouterr().out
    folder = os.path.join(run, "eval_model_best")  # the sibling of ckps/
    assert f"report: {folder}" in text and "NC1" not in text
    rep = json.load(open(os.path.join(folder, "report.json")))
    assert rep["neural_collapse"] is None
    assert all(c["feature_mean_norm"] is None for c in rep["classes"])
    assert_png(os.path.join(folder, "reliability.png"))
