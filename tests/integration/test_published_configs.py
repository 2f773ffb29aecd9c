"""The published yaml files of ARB-Loss and MiSLAS (verbatim copies under
tests/data/published_configs, see the README.txt there) run unchanged, and our configs of the same
name carry the published values.

Here: the in-process training and evaluation runs; the rest in
tests/unit/test_published_configs.py, tests/processes/test_published_configs.py."""
import glob
import os

import pytest
import yaml

from engine import commands
from tests.fixtures import (
    PUBLISHED_TRAIN,
    ROOT,
    SEED_CONFIGS,
    expected_loss,
    one_error_line,
    only_run_dir,
    read_metrics,
    write_cifar,
    write_image_tree,
)

PUB = os.path.join(ROOT, "tests", "data", "published_configs")


def raw(rel: str) -> dict:
    with open(os.path.join(PUB, rel)) as f:
        return yaml.safe_load(f)




@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    paths = {"cifar10": write_cifar(str(root / "cifar10"), "cifar10", 10, 2)}
    for name in SEED_CONFIGS:  # the published image-list data sets
        paths[name] = write_image_tree(str(root / name), name)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("rel", PUBLISHED_TRAIN)
def test_stage1_files_train(rel, small_data, tmp_path):
    r = raw(rel)
    opts = ["data_path", small_data[r["dataset"]], "download", "False", "num_epochs", "1",
            "workers", "0", "output_dir", str(tmp_path)]
    if r["dataset"].startswith("cifar"):
        opts += ["backbone", "resnet8_fe"]
    else:  # 5 generated classes, 17 training images
        opts += ["num_classes", "5", "head_class_idx", "[0, 1]", "med_class_idx", "[1, 3]",
                 "tail_class_idx", "[3, 5]", "backbone", "resnet10_fe", "image_size", "32",
                 "resize_size", "36", "batch_size", "6", "not_pretrained", "True"]
    assert commands.train_stage1(["--cfg", os.path.join(PUB, rel), *opts]) == 0
    run = only_run_dir(str(tmp_path))
    assert [row["epoch"] for row in read_metrics(run)] == [1]
    (log,) = glob.glob(os.path.join(run, "logs", "*.txt"))
    assert f"loss: {expected_loss(r)}" in open(log).read()


def test_stage2_file_run_as_stage1_reaches_the_placeholder_resume(small_data, tmp_path, capsys):
    """alpha: null with mixup: False is accepted; the placeholder checkpoint path is the normal
    one-line 'not found' error, before anything is created."""
    rel = os.path.join("mislas", "cifar10", "cifar10_imb01_stage2_mislas.yaml")  # imb 0.1
    assert raw(rel)["alpha"] is None and raw(rel)["mixup"] is False
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", os.path.join(PUB, rel), "mode", "stage1", "shift_bn",
                               "False",
                           "lr_factor", "None", "data_path", small_data["cifar10"], "download",
                           "False", "backbone", "resnet8_fe", "output_dir", str(out)])
    assert e.value.code == 2
    line = one_error_line(capsys, "train_stage1.py")
    assert line.endswith("checkpoint not found: Path/to/Stage1_checkpoint.pth.tar")
    assert not out.exists()
