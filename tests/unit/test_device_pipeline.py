"""Batched on-device augmentation: exactness, distribution, reproducibility and resume."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T

from datasets.common import ArrayImageDataset, DataBundle, EpochSampler
from datasets.device_pipeline import DeviceLoader, device_loader_for

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def random_images(n, h=8, w=8, c=3, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(n, h, w, c), dtype=np.uint8), rng.randint(0, 4, size=n)


def test_unaugmented_equals_totensor_normalize():
    images, targets = random_images(37)
    ds = ArrayImageDataset(images, targets, T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]))
    loader = DeviceLoader(images, targets, 16, "cpu", MEAN, STD, pad=0, flip=False, seed=5)
    loader.sampler.set_epoch(2)
    order = loader.sampler.indices()
    xs, ys = zip(*loader)
    assert [len(y) for y in ys] == [16, 16, 5] and len(loader) == 3
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (37, 3, 8, 8)
    want = torch.stack([ds[i][0] for i in order])
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)
    assert y.tolist() == [int(targets[i]) for i in order]
    # same sample order as the per-sample path's sampler
    ref = EpochSampler(37, seed=5, shuffle=True)
    ref.set_epoch(2)
    assert order == [i for i, _ in ref]


def test_crop_and_flip_match_manual_reference():
    """The one-gather crop equals pad-then-slice-then-flip of each image with the drawn
    offsets (grey image: 1 channel)."""
    images, targets = random_images(9, 6, 7, 1, seed=1)
    loader = DeviceLoader(images, targets, 4, "cpu", (0.5,), (0.25,), pad=2, flip=True,
                          seed=0)
    loader.sampler.set_epoch(1)
    order = loader.sampler.indices()
    for b, (x, _) in enumerate(loader):
        idx = order[4 * b:4 * b + 4]
        top, left, flip = loader.augment_params(1, b, len(idx))
        for k, i in enumerate(idx):
            padded = np.pad(images[i, :, :, 0], 2)
            crop = padded[top[k]:top[k] + 6, left[k]:left[k] + 7]
            if flip[k]:
                crop = crop[:, ::-1]
            want = (torch.from_numpy(crop.copy()).float() / 255 - 0.5) / 0.25
            torch.testing.assert_close(x[k, 0], want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- augmentation distribution
H = W = 8
PAD = 2
DRAWS = 1200


def coded_image():
    """Channel 0 = row + 1, channel 1 = column + 1 (0 only in the zero padding)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = np.arange(1, H + 1)[:, None]
    img[:, :, 1] = np.arange(1, W + 1)[None, :]
    return img


def recover(x):
    """(top, left, flip) of crops x (B x 3 x H x W, values 0..255) of the coded image."""
    rows = x[:, 0].amax(dim=2)  # B x H: image row + 1 seen in each output row (0 = padding)
    cols = x[:, 1].amax(dim=1)  # B x W
    first_row = (rows > 0).float().argmax(1)
    top = rows.gather(1, first_row[:, None])[:, 0] - 1 + PAD - first_row
    a = (cols > 0).float().argmax(1)  # first valid column (valid columns are contiguous)
    flip = cols.gather(1, a[:, None])[:, 0] > cols.gather(1, (a + 1)[:, None])[:, 0]
    src = cols.gather(1, a[:, None])[:, 0] - 1  # source column of output column a
    # unflipped: src = left + a - pad; flipped: src = left + (W - 1 - a) - pad
    left = torch.where(flip, src + PAD - (W - 1 - a), src + PAD - a)
    return top.long(), left.long(), flip


def cell_counts(top, left, flip):
    cells = (top * (2 * PAD + 1) + left) * 2 + flip.long()
    return torch.bincount(cells, minlength=(2 * PAD + 1) ** 2 * 2).double()


def chi2_uniform(counts):
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_same_augmentation_distribution_as_per_sample_path():
    img = coded_image()
    # per-sample path: torchvision RandomCrop(padding) + flip, seeded per sample as in training
    tf = T.Compose([T.RandomCrop(H, padding=PAD), T.RandomHorizontalFlip(), T.PILToTensor()])
    ds = ArrayImageDataset(np.repeat(img[None], DRAWS, 0), np.zeros(DRAWS, np.int64), tf)
    sampler = EpochSampler(DRAWS, seed=11)
    pil = torch.stack([ds[key][0] for key in sampler]).float()
    # device path: mean 0, std 1/255 turns the output back into 0..255 values
    loader = DeviceLoader(np.repeat(img[None], DRAWS, 0), np.zeros(DRAWS), 400, "cpu",
                          (0.0,) * 3, (1 / 255,) * 3, pad=PAD, flip=True, seed=11)
    dev = torch.cat([x for x, _ in loader]).round()
    counts = []
    for x in (pil, dev):
        top, left, flip = recover(x)
        assert int(top.min()) == 0 and int(top.max()) == 2 * PAD
        assert int(left.min()) == 0 and int(left.max()) == 2 * PAD
        counts.append(cell_counts(top, left, flip))
        # uniform over 5 x 5 offsets x 2 flips = 50 cells, 24 expected each; chi-square with
        # 49 degrees of freedom has mean 49, sd 9.9: 100 is beyond the 99.99 % quantile
        # (and the seeds are fixed, so the outcome cannot change from run to run).
        assert chi2_uniform(counts[-1]) < 100.0
        assert abs(float(flip.double().mean()) - 0.5) < 0.06  # 4.2 sd of a fair coin
    # homogeneity of the two paths (2 x 50 table, 49 degrees of freedom)
    total = counts[0] + counts[1]
    exp = total / 2
    stat = float((((counts[0] - exp) ** 2 + (counts[1] - exp) ** 2) / exp.clamp_min(1)).sum())
    assert stat < 100.0


# ---------------------------------------------------------------- reproducibility and resume
def batches(loader, epoch, start=0):
    loader.sampler.set_epoch(epoch)
    loader.sampler.start = start
    return [(x.clone(), y.clone()) for x, y in loader]


def test_reproducible_and_resumable():
    images, targets = random_images(50, seed=2)
    make = lambda: DeviceLoader(images, targets, 8, "cpu", MEAN, STD, pad=2, flip=True,  # noqa
                                seed=3)
    a = batches(make(), 4)
    b = batches(make(), 4)
    assert len(a) == 7
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = batches(make(), 5)
    assert not torch.equal(other[0][0], a[0][0])
    # resuming at batch k reproduces batches k.. of the uninterrupted epoch
    k = 3
    loader = make()
    resumed = batches(loader, 4, start=k * 8)
    assert len(loader) == len(a) - k == len(resumed)
    for (xa, ya), (xr, yr) in zip(a[k:], resumed):
        assert torch.equal(xa, xr) and torch.equal(ya, yr)
    # changing the seed changes the augmentation, not the shape
    c = batches(DeviceLoader(images, targets, 8, "cpu", MEAN, STD, 2, True, seed=4), 4)
    assert c[0][0].shape == a[0][0].shape and not torch.equal(c[0][0], a[0][0])


def test_ranks_share_the_epoch():
    images, targets = random_images(21, seed=4)
    shares = []
    for rank in range(2):
        loader = DeviceLoader(images, targets, 4, "cpu", MEAN, STD, 1, True, seed=0,
                              rank=rank, world_size=2)
        loader.sampler.set_epoch(0)
        shares.append(loader.sampler.indices())
        ys = torch.cat([y for _, y in loader])
        assert len(ys) == 11 and len(loader) == 3  # padded to ceil(21 / 2) each
        assert ys.tolist() == [int(targets[i]) for i in shares[-1]]
    assert set(shares[0]) | set(shares[1]) == set(range(21))


class _Other(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return 0


def test_device_loader_for():
    images, targets = random_images(10)
    ds = ArrayImageDataset(images, targets)
    extra = {"mean": MEAN, "std": STD, "augment": {"pad": 4, "flip": True}}
    loader = device_loader_for(DataBundle(ds, ds, [5, 5], "x", extra=extra), 4, "cpu", 0)
    assert isinstance(loader, DeviceLoader) and loader.pad == 4 and loader.flip
    assert loader.images.shape == (10, 3, 16, 16) and len(loader) == 3
    no_aug = {k: v for k, v in extra.items() if k != "augment"}
    assert (device_loader_for(DataBundle(ds, ds, [5, 5], "x", extra=no_aug), 4, "cpu", 0)
        is None)
    assert (device_loader_for(DataBundle(_Other(), ds, [1], "x", extra=extra), 4, "cpu", 0)
        is None)


def test_rejects_bad_input():
    images, targets = random_images(4)
    with pytest.raises(ValueError):
        DeviceLoader(images.astype(np.float32), targets, 2, "cpu", MEAN, STD, 0, False, 0)
    with pytest.raises(ValueError):
        DeviceLoader(images, targets, 2, "cpu", (0.5,), (0.5,), 0, False, 0)
    with pytest.raises(ValueError):
        DeviceLoader(images, targets[:3], 2, "cpu", MEAN, STD, 0, False, 0)
