"""Image-list data sets (ImageNet-LT, iNaturalist 2018, Places-LT) on generated JPEG trees.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_imagelist.py."""
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DATASETS, build_data
from datasets.common import apply_seeded
from datasets.imagelist import (
    IMAGENET_MEAN,
    LIST_SPECS,
    _parse_vectorised,
    build_imagelist,
    frequency_class_map,
    read_image_list,
    transforms,
)
from engine import commands
from tests.fixtures import (
    RANGES,
    ROOT,
    SEED_CONFIGS,
    TEST_PER_CLASS,
    TRAIN_COUNTS,
    labels_in,
    make_cfg,
    write_image_tree,
)
from utils.errors import DataError

EXPECTED_ORDER = [1, 2, 3, 0, 4]  # original id of remapped class 0, 1, ...


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One generated tree per data set kind."""
    return {name: write_image_tree(str(tmp_path_factory.mktemp(name)), name)
            for name in SEED_CONFIGS}


# ------------------------------------------------------------------ class map and bundle
def test_frequency_class_map_sorts_by_count_then_id():
    labels = np.array([3, 1, 1, 0, 2, 3, 1, 2, 4, 4])  # counts 1, 3, 2, 2, 2
    for mode in ("stable", "reference"):  # the same up to 16 classes (insertion sort)
        new_of_old, counts = frequency_class_map(labels, 5, mode)
        assert counts.tolist() == [3, 2, 2, 2, 1]
        assert new_of_old.tolist() == [4, 0, 1, 2, 3]  # ties 2, 3, 4 keep id order


@pytest.mark.parametrize("dataset", sorted(SEED_CONFIGS))
def test_registry_bundle_remaps_train_and_test(trees, dataset):
    assert dataset in DATASETS
    root = trees[dataset]
    data = build_data(make_cfg(dataset, root))
    assert data.cls_num_list == [TRAIN_COUNTS[c] for c in EXPECTED_ORDER] == [6, 4, 4, 2, 1]
    assert data.extra["class_ids"] == EXPECTED_ORDER
    assert data.extra["mean"] == LIST_SPECS[dataset].mean
    assert data.in_channels == 3 and data.name == LIST_SPECS[dataset].title
    new_of_old = {old: new for new, old in enumerate(EXPECTED_ORDER)}
    train_list, test_list = LIST_SPECS[dataset].train_list, LIST_SPECS[dataset].test_list
    for ds, lst in ((data.train, train_list), (data.test, test_list),
                    (data.train_eval, train_list)):
        rows = labels_in(os.path.join(root, lst))
        assert [ds.images[i] for i in range(len(ds))] == [p for p, _ in rows]
        assert ds.targets.tolist() == [new_of_old[y] for _, y in rows]
    assert np.bincount(data.train.targets).tolist() == data.cls_num_list
    assert len(data.test) == 5 * TEST_PER_CLASS


def test_items_by_index_and_seed(trees):
    data = build_data(make_cfg("imagenet", trees["imagenet"]))
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int) and y == int(data.train.targets[0])
    a, _ = data.train[(3, 1234)]
    b, _ = data.train[(3, 1234)]
    c, _ = data.train[(3, 99)]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    # same (seed -> transform) keying as ArrayImageDataset: apply_seeded on the loaded image
    torch.testing.assert_close(a, apply_seeded(data.train.transform, data.train.load(3), 1234))
    t1, _ = data.test[(0, 1)]
    t2, _ = data.test[(0, 2)]
    torch.testing.assert_close(t1, t2)  # test transform is deterministic
    assert t1.shape == (3, 32, 32)
    e, _ = data.train_eval[0]
    torch.testing.assert_close(e, data.train_eval.transform(data.train.load(0)))


def test_default_transforms_are_the_reference_ones(trees):
    import torchvision.transforms as T
    train, test = transforms(True), transforms(False)
    kinds = [type(t) for t in train.transforms]
    assert kinds[:3] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter]
    assert train.transforms[0].size == (224, 224)
    jitter = train.transforms[2]
    assert (jitter.brightness == (0.6, 1.4) and jitter.saturation == (0.6, 1.4)
        and jitter.hue is None)
    assert [type(t) for t in test.transforms[:2]] == [T.Resize, T.CenterCrop]
    assert test.transforms[0].size == 256 and test.transforms[1].size == (224, 224)
    assert tuple(test.transforms[-1].mean) == IMAGENET_MEAN


# MiSLAS and ARB-Loss datasets/{imagenet,ina2018,places}.py: one Normalize for train and test
REFERENCE_NORM = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "ina2018": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    "places": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@pytest.mark.parametrize("dataset", sorted(SEED_CONFIGS))
def test_normalisation_is_the_reference_one_per_data_set(trees, dataset):
    import torchvision.transforms as T
    mean, std = REFERENCE_NORM[dataset]
    data = build_data(make_cfg(dataset, trees[dataset]))
    assert data.extra["mean"] == mean and data.extra["std"] == std
    for ds in (data.train, data.test, data.train_eval):
        norm = ds.transform.transforms[-1]
        assert isinstance(norm, T.Normalize)
        assert tuple(norm.mean) == mean and tuple(norm.std) == std
    # the test item is the centre crop normalised with these values
    img = data.test.load(0)
    raw = T.Compose(data.test.transform.transforms[:-1])(img)
    expected = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(data.test[0][0], expected)


def test_building_opens_no_image(trees, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("an image was opened while building the bundle")
    monkeypatch.setattr(Image, "open", refuse)
    data = build_data(make_cfg("places", trees["places"]))
    assert len(data.train) == sum(TRAIN_COUNTS.values())


def test_list_keys_override_file_names(trees):
    root = trees["ina2018"]
    os.rename(os.path.join(root, "iNaturalist18_val.txt"), os.path.join(root, "my_val.txt"))
    try:
        data = build_data(make_cfg("ina2018", root, test_list="my_val.txt"))
        assert len(data.test) == 10
        with pytest.raises(DataError, match="iNaturalist18_val.txt"):
            build_data(make_cfg("ina2018", root))
    finally:
        os.rename(os.path.join(root, "my_val.txt"), os.path.join(root, "iNaturalist18_val.txt"))


# ------------------------------------------------------------------ parsing
def test_parser_edge_cases(tmp_path):
    text = ("a/with space.jpg 3\r\n"  # path with a space, CRLF
            "\n"
            "   \t \n"  # blank line with whitespace
            "  lead/b.jpg\t\t1  \n"  # leading spaces, tabs, trailing spaces
            "c.jpg +2\n"
            "d.jpg 0")  # no final newline
    p = tmp_path / "l.txt"
    p.write_bytes(text.encode())
    lst = read_image_list(str(p))
    assert [lst.images[i] for i in range(4)] == ["a/with space.jpg", "lead/b.jpg", "c.jpg",
                                                 "d.jpg"]
    assert lst.labels.tolist() == [3, 1, 2, 0]
    assert lst.lines.tolist() == [1, 4, 5, 6]


def _per_line(raw: bytes):
    """Straightforward per-line reference parser (None: some line is malformed)."""
    out = []
    for i, line in enumerate(raw.split(b"\n")):
        parts = line.rsplit(None, 1)
        if not parts:
            continue
        if (len(parts) == 1 or not parts[1].lstrip(b"+-").isdigit()
                or parts[1][1:].startswith((b"+", b"-"))):
            return None
        out.append((parts[0].lstrip(), int(parts[1]), i + 1))
    return out or None


def test_vectorised_parser_matches_per_line_parser():
    rng = random.Random(1)
    pieces = [b"a", b"b/", b" ", b"\t", b"7", b"\xc3\xa9", b"-"]
    for _ in range(400):
        lines = []
        for _ in range(rng.randint(0, 5)):
            r = rng.random()
            if r < 0.1:
                lines.append(rng.choice([b"", b"  ", b"\t\r"]))
            elif r < 0.15:
                lines.append(rng.choice([b"x", b"  x", b"12 ", b" -3"]))
            else:
                path = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
                label = rng.choice([b"0", b"42", b"-1", b"+5", b"1x", b"1.0", b"--2"])
                lines.append(rng.choice([b"", b" "]) + (path.strip() or b"p")
                             + rng.choice([b" ", b"\t", b"  "]) + label
                             + rng.choice([b"", b" ", b"\r"]))
        raw = b"\n".join(lines) + rng.choice([b"", b"\n"])
        buf = np.frombuffer(raw if raw.endswith(b"\n") else raw + b"\n", dtype=np.uint8)
        got = _parse_vectorised(buf)
        expected = _per_line(raw)
        if expected is None:
            assert got is None, raw
            continue
        ps, pe, labels, lines_no = got
        assert [(bytes(buf[a:b]), int(y), int(n)) for a, b, y, n in
                zip(ps, pe, labels, lines_no)] == expected, raw


# ------------------------------------------------------------------ errors
def _write_lists(root, train_lines, test_lines=("test/0/0.jpg 0",)):
    os.makedirs(os.path.join(root, "train", "0"), exist_ok=True)
    Image.new("RGB", (8, 8)).save(os.path.join(root, "train", "0", "0.jpg"))
    with open(os.path.join(root, "ImageNet_LT_train.txt"), "w") as f:
        f.write("\n".join(train_lines) + "\n")
    with open(os.path.join(root, "ImageNet_LT_test.txt"), "w") as f:
        f.write("\n".join(test_lines) + "\n")


GOOD = ["train/0/0.jpg 0", "train/0/1.jpg 1", "train/0/2.jpg 1"]


@pytest.mark.parametrize("lines, test_lines, pattern", [
    (GOOD + ["train/0/3.jpg"], None,
     r"ImageNet_LT_train.txt, line 4: malformed line 'train/0/3.jpg'"),
    (GOOD[:1] + ["train/0/9.jpg one"] + GOOD[1:], None,
     r"ImageNet_LT_train.txt, line 2: label 'one' is not an integer"),
    (GOOD + ["train/0/4.jpg -1"], None,
     r"ImageNet_LT_train.txt, line 4: label -1 outside \[0, 2\)"),
    (GOOD + ["", "train/0/4.jpg 2"], None,
     r"ImageNet_LT_train.txt, line 5: label 2 outside \[0, 2\) \(num_classes is 2\)"),
    (GOOD, ["test/0/0.jpg 0", "test/0/1.jpg 7"],
     r"ImageNet_LT_test.txt, line 2: label 7 outside \[0, 2\)"),
    (["train/0/0.jpg 0", "train/0/1.jpg 0"], None,
     r"ImageNet_LT_train.txt: 1 distinct classes but num_classes is 2 \(class ids without "
     r"training images: 1\)"),
    ([""], None, r"ImageNet_LT_train.txt: no '<relative image path> <label>' lines"),
])
def test_bad_lists_name_file_and_line(tmp_path, lines, test_lines, pattern):
    root = str(tmp_path)
    _write_lists(root, lines, test_lines or ["test/0/0.jpg 0"])
    with pytest.raises(DataError, match=pattern):
        build_imagelist(make_cfg("imagenet", root, num_classes=2), "imagenet")


def test_missing_list_file_names_it_and_the_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    with pytest.raises(DataError) as e:
        build_imagelist(make_cfg("places", str(data)), "places")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Places-LT training list 'Places_LT_train.txt' not found; looked in: ")
    tried = [os.path.join(str(data), "Places_LT_train.txt"),
             str(tmp_path / "datasets" / "data_txt" / "Places_LT_train.txt"),
             str(tmp_path / "data" / "Places" / "Places-LT" / "Places_LT_train.txt")]
    assert ", ".join(tried) in msg
    assert "'<relative image path> <label>'" in msg and "data_path" in msg
    # a data_path that is itself a published folder is named once
    with pytest.raises(DataError) as e:
        build_imagelist(make_cfg("places", "data/Places/Places-LT"), "places")
    assert str(e.value).count("Places-LT" + os.sep + "Places_LT_train.txt") == 1
    # an absolute list path is the only place tried
    with pytest.raises(DataError, match=r"looked in: /nowhere/t.txt; expected"):
        build_imagelist(make_cfg("places", str(data), train_list="/nowhere/t.txt"), "places")


# Where the published code reads the lists, relative to the working directory:
# MiSLAS datasets/{imagenet,ina2018,places}.py and ARB-Loss datasets/{ina2018,places}.py.
PUBLISHED_LIST_DIRS = [("imagenet", "datasets/data_txt"), ("ina2018", "datasets/data_txt"),
                       ("places", "datasets/data_txt"), ("ina2018", "data/iNaturelist2018"),
                       ("places", "data/Places/Places-LT")]


@pytest.mark.parametrize("dataset, folder", PUBLISHED_LIST_DIRS)
def test_lists_in_the_published_location(tmp_path, monkeypatch, dataset, folder):
    """Lists where the published code reads them (under the working directory), images
    under data_path: works unchanged."""
    clone, images = tmp_path / "clone", str(tmp_path / "images")
    list_dir = str(clone / folder)
    write_image_tree(images, dataset, list_dir=list_dir)
    monkeypatch.chdir(clone)
    data = build_data(make_cfg(dataset, images))
    spec = LIST_SPECS[dataset]
    train_file = os.path.join(os.path.realpath(list_dir), spec.train_list)
    assert os.path.realpath(data.train.list_file) == train_file
    assert data.extra["class_ids"] == EXPECTED_ORDER
    new_of_old = {old: new for new, old in enumerate(EXPECTED_ORDER)}
    rows = labels_in(train_file)
    assert data.train.targets.tolist() == [new_of_old[y] for _, y in rows]
    assert data.train.path(0) == os.path.join(images, rows[0][0])
    assert len(data.test) == 5 * TEST_PER_CLASS
    assert data.train[(0, 1)][0].shape == (3, 32, 32)  # the image is read from data_path


def test_lists_in_data_path_come_first(tmp_path, monkeypatch):
    images = str(tmp_path / "images")
    write_image_tree(images, "places", seed=1)
    write_image_tree(images, "places", list_dir=str(tmp_path / "datasets" / "data_txt"),
                     seed=2)  # same images, other line order
    monkeypatch.chdir(tmp_path)
    data = build_data(make_cfg("places", images))
    assert data.train.list_file == os.path.join(images, "Places_LT_train.txt")
    assert [data.train.images[i] for i in range(len(data.train))] == [
        p for p, _ in labels_in(os.path.join(images, "Places_LT_train.txt"))]
    # an override name is looked for in the same places
    os.rename(tmp_path / "datasets" / "data_txt" / "Places_LT_test.txt",
              tmp_path / "datasets" / "data_txt" / "my_test.txt")
    data = build_data(make_cfg("places", images, test_list="my_test.txt"))
    assert data.test.list_file == str(tmp_path / "datasets" / "data_txt" / "my_test.txt")


def test_utf8_bom_is_not_part_of_the_first_path(tmp_path):
    root = write_image_tree(str(tmp_path), "imagenet")
    path = os.path.join(root, "ImageNet_LT_train.txt")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + raw)
    lst = read_image_list(path)
    assert lst.images[0] == raw.split(b" ", 1)[0].decode()
    assert lst.lines[0] == 1 and len(lst.labels) == sum(TRAIN_COUNTS.values())
    data = build_data(make_cfg("imagenet", root))  # the first image is found
    assert data.train.images[0] == lst.images[0]


def test_missing_first_image_is_caught_at_build(tmp_path):
    _write_lists(str(tmp_path), ["elsewhere/a.jpg 0", "train/0/0.jpg 1"])
    with pytest.raises(DataError, match=r"line 1: image file not found: .*elsewhere/a.jpg"):
        build_imagelist(make_cfg("imagenet", str(tmp_path), num_classes=2), "imagenet")


def test_missing_image_in_getitem_names_path(trees, tmp_path):
    data = build_data(make_cfg("imagenet", trees["imagenet"]))
    data.train.images = type(data.train.images).from_strings(
        [data.train.images[0], "train/1/gone.jpg"])
    data.train.targets = data.train.targets[:2]
    data.train[0]
    with pytest.raises(DataError, match=r"image file not found: .*train/1/gone.jpg \(listed in "
                                        r".*ImageNet_LT_train.txt\)"):
        data.train[(1, 5)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    data.train.root = str(tmp_path)
    data.train.images = type(data.train.images).from_strings(["bad.jpg"])
    with pytest.raises(DataError, match=r"cannot read image .*bad.jpg"):
        data.train[0]


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_unreadable_image_message_is_plain_on_both_paths(trees, tmp_path, pipeline):
    """PIL's own text for an unidentifiable file quotes a Python object's repr
    (<_io.BufferedReader name=...>): the message says what is wrong instead."""
    from datasets.imagelist_pipeline import imagelist_loader_for
    data = build_data(make_cfg("imagenet", trees["imagenet"]))
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    data.test.root = str(tmp_path)
    data.test.images = type(data.test.images).from_strings(["bad.jpg"])
    data.test.targets = data.test.targets[:1]
    loader = (imagelist_loader_for(data, 1, torch.device("cpu"), 0, split="test",
                                   image_size=32, resize_size=36)
              if pipeline == "fast" else (data.test[i] for i in range(1)))
    with pytest.raises(DataError) as e:
        list(loader)
    assert str(e.value) == (f"cannot read image {tmp_path / 'bad.jpg'} (listed in "
                            f"{os.path.join(trees['imagenet'], 'ImageNet_LT_test.txt')}): not an "
                            "image file (PIL cannot identify its format)")


# ------------------------------------------------------------------ command line
@pytest.mark.parametrize("dataset", sorted(SEED_CONFIGS))
def test_dry_run_of_seed_configs(trees, dataset, tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("--dry-run opened an image")
    monkeypatch.setattr(Image, "open", refuse)
    # Places: a dry run fetches no ImageNet weights either
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("--dry-run tried to download weights"))
    extra = []
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", os.path.join(ROOT, SEED_CONFIGS[dataset]), "--dry-run",
                              "data_path", trees[dataset], "num_classes", "5", *RANGES,
                              "output_dir", str(out), *extra]) == 0
    text = capsys.readouterr().out
    assert f"dataset: {dataset} ({LIST_SPECS[dataset].title}), 5 classes" in text
    assert "training images: 17 (largest class 6, smallest 1" in text
    assert "test images: 10" in text
    # Places: the frozen ResNet-50 less its last bottleneck (MiSLAS's Places recipe)
    frozen = "19,045,440" if dataset == "places" else "23,508,032"
    assert f"backbone: resnet50_fe, {frozen} parameters" in text
    assert "loss: ARB-Loss (global counts) + mixup" in text
    if dataset == "places":
        assert "block: 4,462,592 parameters" in text
        assert "classifier: linear, 10,245 parameters" in text
    assert not out.exists() and not (tmp_path / "hub").exists()


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_the_pipeline_key_chooses_the_loaders(trees, pipeline):
    from torch.utils.data import DataLoader

    from datasets.imagelist_pipeline import ImageListLoader
    from datasets.loader import eval_loader, train_loader
    cfg = make_cfg("imagenet", trees["imagenet"], imagelist_pipeline=pipeline, workers=0)
    data = build_data(cfg)
    cpu = torch.device("cpu")
    kind = ImageListLoader if pipeline == "fast" else DataLoader
    loaders = [train_loader(cfg, data, cpu, 0, 1)] + [
        eval_loader(cfg, data, split, cpu, 0, 1) for split in ("test", "train_eval")]
    assert all(isinstance(ld, kind) for ld in loaders)
    if pipeline == "reference":  # the published transform objects themselves
        assert loaders[0].dataset.transform is data.train.transform


@pytest.mark.slow
def test_loader_workers_come_from_a_fork_server_and_match_in_process_loading(trees):
    """Workers start from a fork server (forking a multi-threaded DDP rank can deadlock);
    the data set must survive the trip, so batches equal those of an in-process loader."""
    from datasets.loader import build_loader
    data = build_data(make_cfg("imagenet", trees["imagenet"]))
    batches = {}
    for workers in (0, 1):
        loader = build_loader(data.train, 4, train=True, seed=3, rank=0, world_size=1,
                              workers=workers, pin_memory=False)
        if workers:
            assert loader.multiprocessing_context.get_start_method() == "forkserver"
        loader.sampler.set_epoch(1)
        batches[workers] = list(loader)
    assert len(batches[1]) == len(batches[0]) == 5  # 17 images, batch 4
    for (xa, ya), (xb, yb) in zip(batches[0], batches[1]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
