"""Training samplers: class frequencies against p_j, class-aware structure, DDP shares, exact
resume (samplers and every training loader), determinism, and `instance` unchanged."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from config import _CHOICES, check_value, get_cfg_defaults
from datasets import build_data
from datasets.common import ArrayImageDataset, DataBundle, EpochSampler, sample_seed
from datasets.device_pipeline import DeviceLoader
from datasets.imagelist_pipeline import ImageListLoader
from datasets.loader import build_loader, eval_loader, train_loader, train_sampler
from datasets.samplers import (
    SAMPLERS,
    ClassAwareSampler,
    PowerSampler,
    ProgressiveSampler,
    build_sampler,
    class_probabilities,
)
from tests.fixtures import make_cfg, write_image_tree
from utils.errors import ConfigError

COUNTS = [200, 100, 50, 20, 10, 5]
CPU = torch.device("cpu")


def labels(counts, seed=0):
    """Targets with ``counts[c]`` images of class c, in a shuffled order."""
    t = np.repeat(np.arange(len(counts)), counts)
    return np.random.RandomState(seed).permutation(t)


def chi2_limit(df):
    """Upper 1e-4 quantile of chi-square(df) (Wilson-Hilferty: 26.3 for df = 5 against the
    exact 25.7, 490.10 for df = 379 against 490.04).
    The seeds are fixed, so a test using it passes or fails the same way every run."""
    z = 3.719  # upper 1e-4 quantile of the standard normal
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(observed, expected):
    observed, expected = np.asarray(observed, float), np.asarray(expected, float)
    return float(((observed - expected) ** 2 / expected).sum())


def epoch_items(sampler, epoch, start=0):
    sampler.set_epoch(epoch)
    sampler.start = start
    return list(sampler)


# ---------------------------------------------------------------- instance: unchanged
def test_instance_is_the_old_epoch_sampler_bit_for_bit():
    # the order EpochSampler produced before the other samplers existed (recorded)
    s = build_sampler("instance", range(10), seed=0)
    assert isinstance(s, EpochSampler)
    assert epoch_items(s, 0) == [
        (0, 0), (5, 7498898715228747993), (9, 4274645657603313252),
        (6, 8998678462862794566), (7, 1275086169871447382), (8, 2774865918382839017),
        (3, 4499339227136429987), (2, 2999559488809403706), (4, 5999118977618807412),
        (1, 1499779740109734557)]
    s = build_sampler("instance", labels([13]), seed=5, rank=1, world_size=3)
    assert epoch_items(s, 3) == [
        (7, 7408486277887749385), (2, 9132959590923163091), (6, 5908706531527256964),
        (5, 4408926789775603767), (9, 1184673731272581667)]
    # and its definition: torch.randperm seeded by sample_seed(seed, epoch, -1), per-index seeds
    g = torch.Generator().manual_seed(sample_seed(4, 2, -1))
    order = torch.randperm(50, generator=g).tolist()
    assert epoch_items(build_sampler("instance", range(50), seed=4), 2) == [
        (i, sample_seed(4, 2, i)) for i in order]
    assert isinstance(train_sampler(get_cfg_defaults(), range(7), 0, 1), EpochSampler)


def test_the_config_accepts_exactly_the_samplers():
    assert _CHOICES["sampler"] == SAMPLERS and get_cfg_defaults().sampler == "instance"
    with pytest.raises(ConfigError, match="key 'sampler'"):
        check_value("sampler", "balanced")
    with pytest.raises(ValueError, match="accepted: instance"):  # a programming error below
        build_sampler("balanced", [0, 1])


# ---------------------------------------------------------------- class frequencies
@pytest.mark.parametrize("kind,q", [("class_balanced", 0.0), ("sqrt", 0.5)])
def test_power_sampler_class_and_image_frequencies(kind, q):
    t = labels(COUNTS)
    s = build_sampler(kind, t, seed=3)
    assert isinstance(s, PowerSampler) and len(s) == len(t)  # an epoch of N samples
    drawn = np.concatenate([[i for i, _ in epoch_items(s, e)] for e in range(30)])
    p = np.power(COUNTS, q) / np.power(COUNTS, q).sum()
    np.testing.assert_allclose(class_probabilities(COUNTS, q), p)
    # class frequencies against p_j: chi-square, 5 degrees of freedom
    n = drawn.size
    assert chi2(np.bincount(t[drawn], minlength=6), n * p) < chi2_limit(5)
    # images uniform inside their class: expected n p_c / n_c per image
    per_image = np.bincount(drawn, minlength=t.size)
    expected = n * p[t] / np.asarray(COUNTS)[t]
    assert chi2(per_image, expected) < chi2_limit(t.size - 6)
    # with replacement: duplicates within an epoch, and their augmentation seeds differ
    items = epoch_items(s, 0)
    assert len({i for i, _ in items}) < len(items)
    assert len({seed for _, seed in items}) == len(items)


def test_class_probabilities_skip_empty_classes():
    np.testing.assert_allclose(class_probabilities([4, 0, 1], 0.0), [0.5, 0.0, 0.5])
    s = build_sampler("class_balanced", labels([30, 0, 10]), seed=0)
    assert 1 not in {int(c) for c in labels([30, 0, 10])[s.indices()]}


def test_progressive_moves_linearly_from_instance_to_class_balanced():
    counts = [2000, 1000, 500, 200, 100, 50]
    t = labels(counts)
    s = build_sampler("progressive", t, seed=1, num_epochs=10)
    assert isinstance(s, ProgressiveSampler)
    ib, cb = np.array(counts) / sum(counts), np.full(6, 1 / 6)
    for epoch in (0, 5, 9):
        s.set_epoch(epoch)
        p = (1 - epoch / 10) * ib + epoch / 10 * cb  # Kang et al. 2020, t = epoch, T = 10
        np.testing.assert_allclose(s.probabilities(), p)
        got = np.bincount(t[s.indices()], minlength=6)
        assert chi2(got, len(t) * p) < chi2_limit(5), epoch


# ---------------------------------------------------------------- class-aware (MiSLAS)
CA_COUNTS = [9, 6, 5, 3, 2, 1]


def test_class_aware_structure():
    t = labels(CA_COUNTS)
    s = build_sampler("class_aware", t, seed=2)
    assert isinstance(s, ClassAwareSampler)
    s.set_epoch(1)
    order = s.global_order()
    assert order.size == len(s) == 9 * 6  # max_count * num_classes, as MiSLAS
    classes = t[order]
    # runs of 4 consecutive images of one class (the last visit cut by the epoch's end)
    visits = [classes[a:a + 4] for a in range(0, order.size, 4)]
    assert all((v == v[0]).all() for v in visits)
    seq = [int(v[0]) for v in visits]
    # the class sequence is a chain of permutations of the 6 classes, reshuffled each cycle
    cycles = [seq[a:a + 6] for a in range(0, len(seq), 6)]
    assert all(sorted(c) == list(range(6)) for c in cycles[:-1])
    assert len({tuple(c) for c in cycles[:-1]}) > 1
    # each class reads its own chain of permutations of its images, 4 at a time
    reshuffled = False
    for c, n_c in enumerate(CA_COUNTS):
        chain = order[classes == c]
        own = set(np.flatnonzero(t == c).tolist())
        blocks = [chain[a:a + n_c].tolist() for a in range(0, chain.size, n_c)]
        assert all(sorted(b) == sorted(own) for b in blocks if len(b) == n_c)
        assert set(blocks[-1]) <= own and len(set(blocks[-1])) == len(blocks[-1])
        reshuffled |= n_c > 1 and len({tuple(b) for b in blocks if len(b) == n_c}) > 1
    assert reshuffled
    # balanced: every class gets 4 x its visits, visits differ by at most one per class
    per_class = np.bincount(classes, minlength=6)
    assert per_class.max() - per_class.min() <= 4


def test_class_aware_frequencies_over_epochs():
    t = labels(CA_COUNTS)
    s = build_sampler("class_aware", t, seed=0)
    drawn = []
    for e in range(40):
        s.set_epoch(e)
        drawn.append(s.global_order())
    drawn = np.concatenate(drawn)
    per_class = np.bincount(t[drawn], minlength=6)
    assert chi2(per_class, np.full(6, drawn.size / 6)) < chi2_limit(5)
    per_image = np.bincount(drawn, minlength=t.size)
    expected = drawn.size / 6 / np.asarray(CA_COUNTS)[t]
    assert chi2(per_image, expected) < chi2_limit(t.size - 6)


def test_class_aware_short_epoch_is_the_start_of_the_full_one():
    t = labels(CA_COUNTS)
    full = ClassAwareSampler(t, seed=4)
    short = ClassAwareSampler(t, seed=4, num_samples=21)
    for s in (full, short):
        s.set_epoch(3)
    assert len(short) == 21
    assert short.indices() == full.indices()[:21]


# ---------------------------------------------------------------- DDP shares, resume
def make(kind, targets, **kw):
    return build_sampler(kind, targets, num_epochs=8, **kw)


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_equal_shares_of_one_global_order(kind, world):
    t = labels([11, 5, 3, 1])  # 20 images: shares padded for world 3
    whole = epoch_items(make(kind, t), 5)
    shares = [epoch_items(make(kind, t, rank=r, world_size=world), 5) for r in range(world)]
    size = math.ceil(len(whole) / world)
    assert all(len(s) == size == len(make(kind, t, rank=r, world_size=world))
               for r, s in enumerate(shares))
    # interleaving the shares gives the global order, padded by repeating its start
    merged = [shares[p % world][p // world] for p in range(size * world)]
    want = [i for i, _ in whole]
    assert [i for i, _ in merged] == (want * 2)[:size * world]
    if kind != "instance":  # seeds by position: distinct for every item of the epoch
        assert len({seed for _, seed in merged}) == size * world
        assert [seed for _, seed in merged][:len(whole)] == [seed for _, seed in whole]


@pytest.mark.parametrize("kind", SAMPLERS)
def test_start_resumes_the_uninterrupted_epoch(kind):
    t = labels([11, 5, 3, 1])
    for rank, world in ((0, 1), (1, 2), (2, 3)):
        s = make(kind, t, seed=7, rank=rank, world_size=world)
        full = epoch_items(s, 2)
        for k in (0, 3, len(full) - 1, len(full), len(full) + 2):
            s = make(kind, t, seed=7, rank=rank, world_size=world)
            assert epoch_items(s, 2, start=k) == full[k:]
            assert len(s) == len(full[k:]) and s.indices() == [i for i, _ in full[k:]]


@pytest.mark.parametrize("kind", SAMPLERS)
def test_deterministic_per_seed_and_epoch_whatever_the_global_rng(kind):
    t = labels([11, 5, 3, 1])
    s = make(kind, t, seed=1)
    a = epoch_items(s, 4)
    torch.manual_seed(123)
    np.random.seed(321)
    assert epoch_items(make(kind, t, seed=1), 4) == a
    b = epoch_items(s, 5)
    assert b != a and epoch_items(s, 4) == a  # the per-epoch cache follows set_epoch
    assert epoch_items(make(kind, t, seed=2), 4) != a


# ---------------------------------------------------------------- every training loader
def digits_like(counts=(11, 5, 3, 1), seed=0):
    t = labels(list(counts), seed)
    images = np.random.RandomState(seed).randint(0, 256, (t.size, 6, 6, 3), dtype=np.uint8)
    return images, t


def batches(loader, epoch, start=0):
    loader.sampler.set_epoch(epoch)
    loader.sampler.start = start
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_resumes(make_loader, batch):
    full = batches(make_loader(), 3)
    assert len(full) >= 3
    k = 2
    ld = make_loader()
    rest = batches(ld, 3, start=k * batch)
    assert len(ld) == len(rest) == len(full) - k
    for (xa, ya), (xb, yb) in zip(full[k:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    return full


@pytest.mark.parametrize("kind", SAMPLERS)
def test_device_loader_follows_the_sampler_and_resumes(kind):
    images, t = digits_like()

    def make_loader():
        s = make(kind, t, seed=3, rank=1, world_size=2)
        return DeviceLoader(images, t, 4, "cpu", (0.5,) * 3, (0.25,) * 3, pad=1, flip=True,
                            seed=3, rank=1, world_size=2, sampler=s)
    full = assert_resumes(make_loader, 4)
    s = make(kind, t, seed=3, rank=1, world_size=2)
    s.set_epoch(3)
    assert torch.cat([y for _, y in full]).tolist() == t[s.indices()].tolist()


@pytest.mark.parametrize("kind", SAMPLERS)
def test_per_sample_loader_follows_the_sampler_and_resumes(kind):
    import torchvision.transforms as T
    images, t = digits_like()
    ds = ArrayImageDataset(images, t, T.Compose([T.RandomCrop(6, padding=1), T.ToTensor()]))

    def make_loader():
        return build_loader(ds, 4, train=True, seed=0, rank=0, world_size=1, workers=0,
                            pin_memory=False, sampler=make(kind, t, seed=5))
    full = assert_resumes(make_loader, 4)
    if kind != "instance":
        # a repeated image gets two different augmentations (seeds by position)
        s = make(kind, t, seed=5)
        items = epoch_items(s, 3)
        x = torch.cat([x for x, _ in full])
        first = {}
        differ = 0
        for pos, (i, _) in enumerate(items):
            if i in first:
                differ += not torch.equal(x[first[i]], x[pos])
            first.setdefault(i, pos)
        assert differ > 0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(str(tmp_path_factory.mktemp("lists")), "imagenet",
                            train_counts={0: 6, 1: 3, 2: 2, 3: 1})


@pytest.mark.parametrize("kind", SAMPLERS)
def test_imagelist_loader_follows_the_sampler_and_resumes(tree, kind):
    data = build_data(make_cfg("imagenet", tree, num_classes=4))
    t = data.train.targets

    def make_loader():
        return ImageListLoader(data.train, 3, "cpu", True, image_size=32, resize_size=36,
                               seed=1, sampler=make(kind, t, seed=1))
    full = assert_resumes(make_loader, 3)
    s = make(kind, t, seed=1)
    s.set_epoch(3)
    assert torch.cat([y for _, y in full]).tolist() == t[s.indices()].tolist()


def test_train_loader_uses_the_configured_sampler_on_every_path(tree):
    images, t = digits_like()
    ds = ArrayImageDataset(images, t)
    extra = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "augment": {"pad": 1, "flip": True}}
    arrays = DataBundle(ds, ds, np.bincount(t).tolist(), "x", extra=extra)
    for device_pipeline, kind in ((True, DeviceLoader), (False, DataLoader)):
        cfg = get_cfg_defaults()
        cfg.sampler, cfg.device_pipeline, cfg.workers = "class_aware", device_pipeline, 0
        ld = train_loader(cfg, arrays, CPU, 1, 2)
        assert isinstance(ld, kind) and isinstance(ld.sampler, ClassAwareSampler)
        assert (ld.sampler.rank, ld.sampler.world_size) == (1, 2)
        ev = eval_loader(cfg, arrays, "test", CPU, 0, 1)
        assert isinstance(ev.sampler, EpochSampler) and ev.sampler.indices() == list(range(20))
    cfg = make_cfg("imagenet", tree, num_classes=4, sampler="sqrt", workers=0)
    data = build_data(cfg)
    ld = train_loader(cfg, data, CPU, 0, 1)
    assert isinstance(ld, ImageListLoader) and isinstance(ld.sampler, PowerSampler)
    # an explicit kind or sampler replaces the config's (what a stage-2 script passes)
    assert isinstance(train_loader(cfg, data, CPU, 0, 1, sampler="class_aware").sampler,
                      ClassAwareSampler)
    mine = train_sampler(cfg, data.train, 0, 1, "progressive")
    assert train_loader(cfg, data, CPU, 0, 1, sampler=mine).sampler is mine
