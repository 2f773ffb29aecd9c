"""Your own data: a class-per-folder tree (dataset folder) and generic list files (dataset
imagelist).

Here: the in-process training and evaluation runs; the rest in tests/unit/test_own_data.py."""
import json
import os

import pytest

from engine import commands
from tests.fixtures import (
    CLASSES,
    SMALL,
    folder_yaml,
    only_run_dir,
    read_metrics,
    write_folder_tree,
)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_a_folder_tree_trains_at_a_chosen_imbalance_and_evaluates(tmp_path, capsys, pipeline):
    root = write_folder_tree(tmp_path / "t", train_per_class=20, test_per_class=2)
    out = tmp_path / "out"
    common = ["data_path", root, "imb_factor", "0.1", "seed", "5", *SMALL, "workers", "0",
              "imagelist_pipeline", pipeline]
    args = ["--cfg", folder_yaml(tmp_path), *common, "batch_size", "8", "num_epochs", "1",
            "print_freq", "1", "output_dir", str(out)]
    assert commands.train_stage1([*args[:2], "--dry-run", *args[2:]]) == 0
    text = capsys.readouterr().out
    assert "6 classes" in text and "training images: 49 (largest class 20, smallest 2" in text
    assert commands.train_stage1(args) == 0
    run = only_run_dir(str(out))
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1]
    capsys.readouterr()
    # the run folder's config.yaml alone rebuilds the same data (imb_factor, seed, classes)
    ckpt = os.path.join(run, "ckps", "current.pth.tar")
    assert commands.evaluate(["--json", "--cfg", os.path.join(run, "config.yaml"),
                              "resume", ckpt]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["num_samples"] == 12 and m["acc1"] == pytest.approx(rows[0]["acc1"], abs=1e-9)
    # the report names each class by its folder; the training counts are the profile's
    with open(os.path.join(m["report_dir"], "report.json")) as f:
        classes = json.load(f)["classes"]
    assert sorted(c["name"] for c in classes) == sorted(CLASSES)
    assert [c["train_count"] for c in classes] == [20, 12, 7, 5, 3, 2]


@pytest.mark.slow
def test_a_timm_backbone_trains_evaluates_and_reloads(tmp_path, capsys):
    pytest.importorskip("timm")
    root = write_folder_tree(tmp_path / "t", train_per_class=[8, 6, 4, 2, 2, 2])  # no batch of 1
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", folder_yaml(tmp_path), "data_path", root,
                                  "backbone", "timm:test_resnet", *SMALL, "workers", "0",
                                  "batch_size", "8", "num_epochs", "2", "print_freq", "1",
                                  "output_dir", str(out)]) == 0
    run = only_run_dir(str(out))
    rows = read_metrics(run)
    capsys.readouterr()
    ckpt = os.path.join(run, "ckps", "model_best.pth.tar")
    assert commands.evaluate(["--json", "--cfg", os.path.join(run, "config.yaml"),
                              "resume", ckpt]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["acc1"] == pytest.approx(max(r["acc1"] for r in rows), abs=1e-9)
    from utils.checkpoint import load_checkpoint
    assert load_checkpoint(ckpt)["backbone"] == "timm:test_resnet"
