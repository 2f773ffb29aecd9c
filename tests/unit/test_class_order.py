"""Class order of the image-list data sets: numpy 1.24's argsort, reproduced on any numpy.

The golden outputs in tests/data/ were made once with numpy 1.24.4 by
tests/data/make_class_order_golden.py (run by hand, never by the suite).
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

import datasets.class_order as co
from config import get_cfg_defaults, load_config
from datasets import build_data
from datasets.class_order import SMALL_QUICKSORT, class_order, numpy124_argsort
from datasets.imagelist import frequency_class_map
from tests.fixtures import ROOT
from utils.errors import ConfigError

DATA = os.path.join(ROOT, "tests", "data")


def golden_vectors():
    """(name, counts, numpy 1.24's np.argsort(-counts)) of every stored vector."""
    with np.load(os.path.join(DATA, "class_order_golden.npz")) as z:
        assert str(z["numpy_version"]).startswith("1.24.")
        names, cut = z["names"].tolist(), z["offsets"]
        counts, orders = z["counts"].astype(np.int64), z["orders"].astype(np.int64)
    return [(name, counts[a:b], orders[a:b]) for name, a, b in zip(names, cut[:-1], cut[1:])]


GOLDEN = golden_vectors()
with open(os.path.join(DATA, "places_lt_class_order.json")) as f:
    PLACES = json.load(f)


def inverse(order: np.ndarray) -> np.ndarray:
    new_of_old = np.empty_like(order)
    new_of_old[order] = np.arange(len(order))
    return new_of_old


# ------------------------------------------------------------------ the port
def test_port_equals_numpy_1_24_on_every_golden_vector():
    for name, counts, order in GOLDEN:
        assert np.array_equal(numpy124_argsort(-counts), order), name
        assert np.array_equal(class_order(counts), order), name
        assert numpy124_argsort(-counts).dtype == np.int64


def test_golden_vectors_cover_cutoff_ties_and_the_heap_sort_fallback(monkeypatch):
    """The fixture is only as good as what it exercises: lengths on both sides of the
    insertion-sort cutoff, ties that a stable sort orders differently, and inputs whose
    partitions go deep enough for the heap sort to take over."""
    lengths = {len(c) for _, c, _ in GOLDEN}
    assert {SMALL_QUICKSORT, SMALL_QUICKSORT + 1, SMALL_QUICKSORT + 2, 8142} <= lengths
    differ = [name for name, c, o in GOLDEN
              if not np.array_equal(np.argsort(-c, kind="stable"), o)]
    assert len(differ) > 40
    assert all(len(c) > SMALL_QUICKSORT + 1 for name, c, o in GOLDEN if name in differ)

    calls = []

    def counting(v, t, start, n):
        calls.append(n)
        heapsort(v, t, start, n)

    heapsort = co._aheapsort
    monkeypatch.setattr(co, "_aheapsort", counting)
    for name, counts, order in GOLDEN:
        calls.clear()
        assert np.array_equal(numpy124_argsort(-counts), order), name
        if name.startswith("deep_"):
            assert calls, name
        if name.startswith("deep_") and len(counts) >= 100:  # a large part heap-sorted
            assert max(calls) > len(counts) // 2, name
        if name.startswith("deep_ties") and len(counts) >= 100:  # mostly one tie block
            assert np.unique(counts, return_counts=True)[1].max() > len(counts) // 2, name
        if name.startswith(("long_tail", "random")):
            assert not calls, name


def test_places_lt_published_counts():
    """The published Places-LT training list: numpy 1.24 order, and a stable sort breaks the
    ties differently for 153 of the 365 classes."""
    counts = np.array(PLACES["counts"])
    ref = np.array(PLACES["numpy_1_24_order"])
    assert len(counts) == 365 and counts.sum() == PLACES["lines"] == 62500
    assert counts.max() == 4980 and counts.min() == 5
    assert np.array_equal(class_order(counts, "reference"), ref)
    assert np.all(np.diff(counts[ref]) <= 0)
    stable = class_order(counts, "stable")
    assert np.all(np.diff(counts[stable]) <= 0)
    assert int(np.sum(inverse(stable) != inverse(ref))) == 153


def test_sorts_every_integer_vector():
    rng = np.random.default_rng(0)
    for n in list(range(0, 40)) + [100, 257, 1000]:
        for high in (1, 3, 10**6):
            a = rng.integers(-high, high + 1, n)
            order = numpy124_argsort(a)
            assert sorted(order.tolist()) == list(range(n))
            assert np.all(np.diff(a[order]) >= 0)
            if n <= SMALL_QUICKSORT + 1:  # insertion sort only: stable
                assert np.array_equal(order, np.argsort(a, kind="stable"))
        distinct = rng.permutation(n) * 7 - 3
        assert np.array_equal(numpy124_argsort(distinct), np.argsort(distinct))


def test_stable_mode_and_bad_input():
    counts = np.array([1, 3, 2, 2, 2, 3, 0] * 5)
    stable = class_order(counts, "stable")
    assert np.array_equal(stable, np.argsort(-counts, kind="stable"))
    assert not np.array_equal(stable, class_order(counts, "reference"))
    with pytest.raises(ValueError, match="accepted: reference, stable"):
        class_order(counts, "numpy")
    with pytest.raises(ValueError, match="1-D integer array"):
        numpy124_argsort(np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="1-D integer array"):
        numpy124_argsort(np.zeros((2, 2), dtype=np.int64))


def test_frequency_class_map_modes():
    counts = np.array(PLACES["counts"])
    labels = np.repeat(np.arange(365), counts)
    for mode in ("reference", "stable"):
        new_of_old, sorted_counts = frequency_class_map(labels, 365, mode)
        assert np.array_equal(new_of_old, inverse(class_order(counts, mode)))
        assert np.array_equal(sorted_counts, np.sort(counts)[::-1])


# ------------------------------------------------------------------ the bundle
def write_places_lists(root: str, seed: int = 0):
    """Lists with the published Places-LT counts (62,500 shuffled lines) and two test images
    per class; only the first listed training image exists (building opens none)."""
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.repeat(np.arange(365), PLACES["counts"]))
    test_labels = rng.permutation(np.repeat(np.arange(365), 2))
    for name, labels in (("Places_LT_train.txt", train_labels),
                         ("Places_LT_test.txt", test_labels)):
        split = name.split("_")[2][:-4]
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{split}/{i}.jpg {y}\n" for i, y in enumerate(labels.tolist()))
    os.makedirs(os.path.join(root, "train"))
    Image.new("RGB", (8, 8)).save(os.path.join(root, "train", "0.jpg"))
    return train_labels, test_labels


def published_targets(labels: np.ndarray, sorted_classes: np.ndarray) -> np.ndarray:
    """The published remapping (LT_Dataset / LT_Dataset_Eval), with its argsort result
    given: class_map[sorted_classes[i]] = i, then class_map[target] per line."""
    class_map = [0] * len(sorted_classes)
    for i in range(len(sorted_classes)):
        class_map[sorted_classes[i]] = i
    return np.array(class_map)[labels]


@pytest.fixture(scope="module")
def places_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("places"))
    return root, write_places_lists(root)


def places_cfg(root, **kw):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_path, cfg.num_classes = "places", root, 365
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_bundle_labels_are_the_published_ones(places_root):
    root, (train_labels, test_labels) = places_root
    ref = np.array(PLACES["numpy_1_24_order"])
    data = build_data(places_cfg(root))  # class_order defaults to 'reference'
    assert data.extra["class_ids"] == ref.tolist()
    assert data.cls_num_list == np.array(PLACES["counts"])[ref].tolist()
    # line i of each list keeps its place and gets the published remapped label
    assert np.array_equal(data.train.targets, published_targets(train_labels, ref))
    assert np.array_equal(data.train_eval.targets, data.train.targets)
    assert np.array_equal(data.test.targets, published_targets(test_labels, ref))
    assert data.train.images[5] == "train/5.jpg" and data.test.images[7] == "test/7.jpg"


def test_bundle_stable_order_on_request(places_root):
    root, (train_labels, test_labels) = places_root
    counts = np.array(PLACES["counts"])
    stable = np.argsort(-counts, kind="stable")
    data = build_data(places_cfg(root, class_order="stable"))
    assert data.extra["class_ids"] == stable.tolist()
    assert np.array_equal(data.train.targets, published_targets(train_labels, stable))
    assert np.array_equal(data.test.targets, published_targets(test_labels, stable))
    ref = build_data(places_cfg(root))
    changed = np.unique(train_labels[data.train.targets != ref.train.targets])
    assert changed.size == 153  # the classes whose label differs between the two orders


def test_class_order_key(tmp_path, places_root):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("dataset: places\nbackbone: resnet152_fe\n")
    assert load_config(str(cfg_file)).class_order == "reference"
    assert load_config(str(cfg_file), ["class_order", "stable"]).class_order == "stable"
    with pytest.raises(ConfigError, match=r"key 'class_order' is 'numpy'; accepted: "
                                          r"reference, stable"):
        load_config(str(cfg_file), ["class_order", "numpy"])
