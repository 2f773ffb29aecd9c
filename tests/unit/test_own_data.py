"""Your own data: a class-per-folder tree (dataset folder) and generic list files (dataset
imagelist).

Here: the checks without a training loop or a process; the rest in
tests/integration/test_own_data.py."""
import os

import numpy as np
import pytest
from PIL import Image

from config import load_config
from datasets import build_data
from datasets.common import lt_counts
from datasets.folder import IMG_EXTENSIONS, long_tailed_subset, scan_tree
from engine import commands
from tests.fixtures import CLASSES, folder_yaml, write_folder_tree
from utils.errors import ConfigError, DataError, UserError


def test_the_tree_is_scanned_as_imagefolder_does(tmp_path):
    root = write_folder_tree(tmp_path / "t", train_per_class=2, test_per_class=1)
    # other extensions ImageFolder takes (any case), nested folders; other files are ignored
    Image.new("RGB", (8, 8)).save(os.path.join(root, "train", "dog", "x.PNG"))
    os.makedirs(os.path.join(root, "train", "dog", "deeper"))
    Image.new("RGB", (8, 8)).save(os.path.join(root, "train", "dog", "deeper", "y.bmp"))
    open(os.path.join(root, "train", "dog", "notes.txt"), "w").close()
    tree = scan_tree(root)
    assert tree.classes == CLASSES and tree.val is None
    assert np.bincount(tree.train.labels).tolist() == [2, 4, 2, 2, 2, 2]
    paths = [tree.train.images[i] for i in range(len(tree.train.images))]
    assert paths[:6] == ["train/cat/000.jpg", "train/cat/001.jpg", "train/dog/000.jpg",
                         "train/dog/001.jpg", "train/dog/x.PNG", "train/dog/deeper/y.bmp"]
    # the same images, order and class ids as torchvision's ImageFolder
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS as TV_EXTENSIONS
    ref = ImageFolder(os.path.join(root, "train"))
    assert [(os.path.relpath(p, root), y) for p, y in ref.samples] == list(
        zip(paths, tree.train.labels.tolist()))
    assert ref.classes == tree.classes and set(IMG_EXTENSIONS) == set(TV_EXTENSIONS)
    # test/ is the test split; val/ beside it the validation split; val/ alone the test split
    write_folder_tree(tmp_path / "t", train_per_class=0, test_per_class=3, test_split="val")
    tree = scan_tree(root)
    assert tree.test.path.endswith("test") and len(tree.test.labels) == 6
    assert len(tree.val.labels) == 18


def test_the_long_tail_follows_the_cifar_formula_and_the_seed():
    labels = np.repeat(np.arange(6), [30, 20, 25, 20, 40, 22])
    keep, target = long_tailed_subset(labels, 6, 0.1, "exp", seed=3)
    # n_max = the smallest class (20), so that every class can give its share
    profile = lt_counts(20, 6, 0.1, "exp")
    assert profile == [20, 12, 7, 5, 3, 2]
    rank = np.random.RandomState(3).permutation(6)
    assert target.tolist() == [profile[r] for r in rank]
    assert np.bincount(labels[keep], minlength=6).tolist() == target.tolist()
    again, _ = long_tailed_subset(labels, 6, 0.1, "exp", seed=3)
    other, t2 = long_tailed_subset(labels, 6, 0.1, "exp", seed=4)
    assert np.array_equal(keep, again) and not np.array_equal(keep, other)
    assert sorted(t2.tolist()) == sorted(profile)
    _, step = long_tailed_subset(labels, 6, 0.1, "step", seed=3)
    assert sorted(step.tolist()) == [2, 2, 2, 20, 20, 20]


def test_a_folder_config_counts_classes_and_keeps_the_tree_by_default(tmp_path):
    root = write_folder_tree(tmp_path / "t", train_per_class=[9, 3, 5, 5, 1, 2])
    cfg = load_config(folder_yaml(tmp_path), ["data_path", root])
    assert cfg.num_classes is None and cfg.imb_factor is None
    data = build_data(cfg)
    assert cfg.num_classes == 6 and data.cls_num_list == [9, 5, 5, 3, 2, 1]
    # remapped by frequency (ties by folder order); class_names follow the new ids
    assert data.extra["class_names"] == ["cat", "eel", "fox", "dog", "yak", "gnu"]
    x, y = data.train[0][:2]
    assert tuple(x.shape) == (3, 224, 224) and data.extra["class_names"][y] == "cat"
    cfg = load_config(folder_yaml(tmp_path), ["data_path", root, "num_classes", "7"])
    with pytest.raises(DataError, match=r"6 class folders but num_classes is 7"):
        build_data(cfg)


def test_imagelist_reads_any_list_files(tmp_path):
    root = write_folder_tree(tmp_path / "t", train_per_class=[4, 2, 3, 1, 1, 1])
    lines = {"train": [], "test": []}
    for split in lines:
        for k, c in enumerate(CLASSES):
            for f in sorted(os.listdir(os.path.join(root, split, c))):
                lines[split].append(f"{split}/{c}/{f} {k}\n")
        (tmp_path / "t" / f"my_{split}.txt").write_text("".join(lines[split]))
    p = tmp_path / "l.yaml"
    p.write_text("dataset: imagelist\ntrain_list: my_train.txt\ntest_list: my_test.txt\n")
    cfg = load_config(str(p), ["data_path", root])
    data = build_data(cfg)
    assert cfg.num_classes == 6 and data.cls_num_list == [4, 3, 2, 1, 1, 1]
    assert data.name == "image list" and len(data.test) == 12
    p.write_text("dataset: imagelist\ntrain_list: my_train.txt\n")
    with pytest.raises(ConfigError, match=r"key 'test_list' is empty; dataset imagelist"):
        load_config(str(p))


@pytest.mark.parametrize("damage,match", [
    ("no_train", "train: no such folder; dataset 'folder' expects data_path to hold"),
    ("no_test", "no test/ or val/ folder beside train/"),
    ("empty_class", "train/eel: empty class folder"),
    ("test_only_class", "test/zebra: class folder 'zebra' is not in"),
    ("corrupt", "train/dog/001.jpg: not a readable image"),
])
def test_a_bad_tree_is_one_line_and_creates_nothing(tmp_path, capsys, damage, match):
    root = write_folder_tree(tmp_path / "t", train_per_class=2, test_per_class=1)
    t = tmp_path / "t"
    if damage == "no_train":
        os.rename(t / "train", t / "elsewhere")
    elif damage == "no_test":
        os.rename(t / "test", t / "elsewhere")
    elif damage == "empty_class":
        for f in os.listdir(t / "train" / "eel"):
            os.remove(t / "train" / "eel" / f)
    elif damage == "test_only_class":
        os.makedirs(t / "test" / "zebra")
    else:
        (t / "train" / "dog" / "001.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as e:
            commands.train_stage1(["--cfg", folder_yaml(tmp_path), *dry, "data_path", root,
                                   "output_dir", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and match in err[0], err
    assert not out.exists()


def flat_tree(root, per_class=(12, 9, 15, 10)):
    """root/<class>/<image>: the input of tools/make_lt_split.py."""
    for k, n in enumerate(per_class):
        os.makedirs(os.path.join(root, CLASSES[k]), exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (10 * k, i, 0)).save(
                os.path.join(root, CLASSES[k], f"{i}.png"))
    return str(root)


def test_make_lt_split_writes_lists_counts_and_a_histogram(tmp_path, capsys):
    import csv

    from tools import make_lt_split
    root = flat_tree(tmp_path / "pool")
    out = tmp_path / "split"
    assert make_lt_split.main([root, "--imb-factor", "0.25", "--out", str(out), "--seed", "2",
                               "--test-per-class", "3"]) == 0
    assert "4 classes, 12 training images (largest class 6, smallest 1" in capsys.readouterr().out
    train = [ln.split() for ln in (out / "train.txt").read_text().splitlines()]
    test = [ln.split() for ln in (out / "test.txt").read_text().splitlines()]
    # balanced test, disjoint from training; the training profile is the CIFAR formula with
    # n_max = the smallest class left after the hold-out (9 - 3 = 6)
    assert np.bincount([int(y) for _, y in test]).tolist() == [3, 3, 3, 3]
    assert not {p for p, _ in train} & {p for p, _ in test}
    counts = np.bincount([int(y) for _, y in train], minlength=4)
    assert sorted(counts.tolist(), reverse=True) == lt_counts(6, 4, 0.25, "exp") == [6, 3, 2, 1]
    assert all(p.startswith(CLASSES[int(y)] + "/") for p, y in train + test)
    rows = list(csv.DictReader(open(out / "counts.csv")))
    assert [(r["folder"], int(r["train"]), int(r["test"])) for r in rows] == [
        (CLASSES[k], int(counts[k]), 3) for k in range(4)]
    assert Image.open(out / "class_sizes.png").size[0] > 100
    # the same seed gives the same split; the lists train as dataset imagelist
    again = tmp_path / "again"
    make_lt_split.main([root, "--imb-factor", "0.25", "--out", str(again), "--seed", "2",
                        "--test-per-class", "3"])
    assert (again / "train.txt").read_text() == (out / "train.txt").read_text()
    p = tmp_path / "l.yaml"
    p.write_text(f"dataset: imagelist\ntrain_list: {out / 'train.txt'}\n"
                 f"test_list: {out / 'test.txt'}\n")
    data = build_data(load_config(str(p), ["data_path", root]))
    assert data.cls_num_list == [6, 3, 2, 1] and len(data.test) == 12


@pytest.mark.parametrize("args,match", [
    (["--imb-factor", "0"], "--imb-factor 0: accepted: a number in (0, 1]"),
    (["--imb-factor", "0.5", "--test-per-class", "9"], "9 images, not more than "
                                                        "--test-per-class 9"),
])
def test_make_lt_split_refuses_in_one_line_and_writes_nothing(tmp_path, capsys, args, match):
    from tools import make_lt_split
    root = flat_tree(tmp_path / "pool")
    with pytest.raises(SystemExit) as e:
        make_lt_split.main([root, *args, "--out", str(tmp_path / "split")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / "split").exists()


# ---------------------------------------------------------------- timm backbones
def test_a_timm_backbone_is_built_headless_with_our_classifier(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")  # requirements-test.txt installs it
    import torch

    from config import check_value
    from models import build_network
    assert check_value("backbone", "timm:test_resnet") == "timm:test_resnet"
    with pytest.raises(ConfigError, match=r"or timm:<name>"):
        check_value("backbone", "timm:")
    cfg = load_config(folder_yaml(tmp_path), ["backbone", "timm:test_resnet",
                                              "num_classes", "6"])
    net = build_network(cfg, 6)
    ref = timm.create_model("test_resnet", num_classes=0)
    assert net.model.out_dim == ref.num_features and net.classifier.fc.in_features == 96
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    # a local timm checkpoint (with its 1000-way head) loads into the headless model
    full = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save(full.state_dict(), path)
    cfg = load_config(folder_yaml(tmp_path), ["backbone", "timm:test_resnet", "num_classes", "6",
                                              "pretrained_path", str(path)])
    net = build_network(cfg, 6)
    x = torch.randn(2, 3, 32, 32)
    full.eval(), net.eval()
    assert torch.allclose(net.model(x), full.forward_head(full.forward_features(x),
                                                          pre_logits=True))
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match=r"not weights of timm model test_resnet"):
        build_network(cfg, 6)
    cfg = load_config(folder_yaml(tmp_path), ["backbone", "timm:no_such_net", "num_classes", "6"])
    with pytest.raises(ConfigError, match=r"timm .* has no model 'no_such_net'"):
        build_network(cfg, 6)
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^backbone timm:<name> needs timm: pip install timm$"):
        build_network(load_config(folder_yaml(tmp_path), ["backbone", "timm:test_resnet",
                                                          "num_classes", "6"]), 6)


def test_the_digits_as_a_folder_tree(tmp_path):
    from tools import digits_to_folder
    flat = tmp_path / "flat"
    assert digits_to_folder.write_tree(str(flat), size=16) == 1797
    assert sorted(os.listdir(flat)) == [str(d) for d in range(10)]
    img = Image.open(flat / "0" / "0000.png")
    assert img.size == (16, 16) and img.mode == "RGB"
    tree = tmp_path / "tree"
    digits_to_folder.write_tree(str(tree), size=16, test_per_class=50)
    cfg = load_config(folder_yaml(tmp_path), ["data_path", str(tree)])
    data = build_data(cfg)
    assert cfg.num_classes == 10 and len(data.test) == 500 and sum(data.cls_num_list) == 1297
    with pytest.raises(UserError, match="not empty"):
        digits_to_folder.write_tree(str(tree))
