"""Image-list data sets (ImageNet-LT, iNaturalist 2018, Places-LT) on generated JPEG trees.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_imagelist.py."""
import json
import os

import pytest
import torch

from engine import commands
from tests.fixtures import (
    RANGES,
    ROOT,
    SEED_CONFIGS,
    SMALL,
    labels_in,
    only_run_dir,
    read_metrics,
    write_image_tree,
)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One generated tree per data set kind."""
    return {name: write_image_tree(str(tmp_path_factory.mktemp(name)), name)
            for name in SEED_CONFIGS}


def test_cli_reports_missing_image_as_one_line(tmp_path, capsys):
    root = write_image_tree(str(tmp_path / "data"), "imagenet",
                            train_counts={0: 3, 1: 2, 2: 2}, test_per_class=1)
    # remove the image of the list's last line (the first one is checked when building)
    gone = labels_in(os.path.join(root, "ImageNet_LT_train.txt"))[-1][0]
    os.remove(os.path.join(root, gone))
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", os.path.join(ROOT, SEED_CONFIGS["imagenet"]), "data_path",
                           root, "num_classes", "3", "backbone", "resnet8_fe", *SMALL,
                           "head_class_idx", "[0, 1]", "med_class_idx", "[1, 2]",
                           "tail_class_idx", "[2, 3]", "batch_size", "8", "workers", "0",
                           "output_dir", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train_stage1.py: error: image file not found: ")
    assert err[-1].endswith(os.path.join(root, gone) + " (listed in "
                            + os.path.join(root, "ImageNet_LT_train.txt") + ")")


@pytest.mark.parametrize("dataset,pipeline", [(d, "fast") for d in sorted(SEED_CONFIGS)]
                         + [("imagenet", "reference")])
@pytest.mark.slow
def test_train_and_eval_each_kind(trees, dataset, pipeline, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cfg = os.path.join(ROOT, SEED_CONFIGS[dataset])
    common = ["data_path", trees[dataset], "num_classes", "5", *RANGES, "backbone",
              "resnet10_fe", *SMALL, "workers", "0", "imagelist_pipeline", pipeline]
    extra = ["not_pretrained", "True"] if dataset == "places" else []
    # batch 6: no batch of one (BatchNorm cannot train on a 1 x 1 map of a single image)
    assert commands.train_stage1(["--cfg", cfg, *common, *extra, "batch_size", "6",
                              "num_epochs", "1", "print_freq", "1",
                              "output_dir", str(out)]) == 0
    run = only_run_dir(str(out))
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1] and 0 <= rows[0]["acc1"] <= 100
    ckpt = os.path.join(run, "ckps", "current.pth.tar")
    # eval builds the network again: for Places no ImageNet weights are fetched (the
    # checkpoint holds the frozen backbone), so this works offline without not_pretrained
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("eval tried to download weights"))
    capsys.readouterr()
    assert commands.evaluate(["--json", "--cfg", cfg, *common, "resume", ckpt]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["acc1"] == pytest.approx(rows[0]["acc1"], abs=1e-9)
    assert m["num_samples"] == 10
