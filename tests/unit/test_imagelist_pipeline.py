"""Fast image-list path: same random draws and distributions as the reference transform,
exact evaluation pixels, reproducibility, resume, DDP shares, errors (generated JPEGs)."""
import io
import itertools
import math
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from datasets.common import DataBundle, EpochSampler, sample_seed
from datasets.imagelist import IMAGENET_MEAN, IMAGENET_STD, ImageListDataset, transforms
from datasets.imagelist_pipeline import (
    ImageListLoader,
    TrainRecipe,
    color_jitter,
    crop_to_uint8,
    dct_reduction,
    draw_train_params,
    imagelist_loader_for,
)
from utils.errors import DataError

S, RESIZE = 32, 36
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
RECIPE = TrainRecipe.reference(S)


def textured(rng, w, h):
    """A smooth random colour field with some noise (compresses like a photo)."""
    small = rng.randint(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).astype(int)
    return np.clip(img + rng.randint(-12, 13, size=img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """22 JPEGs (quality 90) of random sizes, one grey JPEG, two PNGs; smaller than 2 S on
    the short side, so no DCT scaling applies and crops can be compared with the reference."""
    root = str(tmp_path_factory.mktemp("photos"))
    rng = np.random.RandomState(0)
    names = []
    for k in range(25):
        w, h = int(rng.randint(40, 120)), int(rng.randint(40, 63))
        img = Image.fromarray(textured(rng, w, h))
        if k == 7:
            img = img.convert("L")
        name = f"{k}.png" if k in (3, 11) else f"{k}.jpg"
        img.save(os.path.join(root, name), quality=90)
        names.append(name)
    return root, names


def dataset(tree, train=True, names=None):
    root, all_names = tree
    names = all_names if names is None else names
    return ImageListDataset(root, names, np.arange(len(names)) % 4,
                            transforms(train, S, RESIZE), list_file="list.txt")


def loader(ds, train=True, batch=8, seed=1, **kw):
    return ImageListLoader(ds, batch, "cpu", train, image_size=S, resize_size=RESIZE,
                           seed=seed, **kw)


def epoch(ld, e, start=0):
    ld.sampler.set_epoch(e)
    ld.sampler.start = start
    return [(x.clone(), y.clone()) for x, y in ld]


# ---------------------------------------------------------------- same draws as the reference
def test_worker_draws_are_the_reference_transforms_draws(tree, monkeypatch):
    """For every (sample, seed) the worker uses the crop box, flip, jitter factors and jitter
    order that the seeded reference transform uses (recorded by spying on torchvision)."""
    seen = []
    for name in ("resized_crop", "hflip", "adjust_brightness", "adjust_contrast",
                 "adjust_saturation"):
        real = getattr(TF, name)

        def spy(img, *args, _name=name, _real=real, **kw):
            arg = args[:4] if _name == "resized_crop" else (args[0] if args else None)
            seen.append((_name, arg))
            return _real(img, *args, **kw)
        monkeypatch.setattr(TF, name, spy)
    ds = dataset(tree)
    ld = loader(ds)
    orders = set()
    for e in range(3):
        ld.sampler.set_epoch(e)
        for key in ld.sampler:
            seen.clear()
            ds[key]  # the reference transform, seeded by the sample seed
            item = ld.items[key]
            p = item.params.tolist()
            assert seen[0] == ("resized_crop", tuple(item.box[:4]))
            assert [n for n, _ in seen].count("hflip") == p[0]
            ops = ["adjust_brightness", "adjust_contrast", "adjust_saturation"]
            jitter = [(n, a) for n, a in seen if n.startswith("adjust")]
            # float32 draws carried exactly
            assert jitter == [(ops[int(k)], p[1 + int(k)]) for k in p[4:]]
            orders.add(tuple(p[4:]))
    assert len(orders) > 3  # the test saw several orders


def test_crops_match_the_reference_without_dct_scaling(tree):
    """Small images (no DCT scaling): the worker's crop is the reference RandomResizedCrop +
    flip. JPEGs (RGB and grey) crop then resize as the reference does (torch's filter is
    PIL's to +-1); PNGs take PIL's one-call box resize, which reads the pixels around the box
    instead of clamping at it, so only the inside of the crop is compared there."""
    ds = dataset(tree)
    geo = ImageListDataset(ds.root, ds.images, ds.targets,
                           T.Compose([T.RandomResizedCrop(S), T.RandomHorizontalFlip(),
                                      T.PILToTensor()]))
    ld = loader(ds)
    for e in range(2):
        ld.sampler.set_epoch(e)
        for key in ld.sampler:
            item = ld.items[key]
            assert item.pixels.dtype == torch.uint8 and item.pixels.shape == (3, S, S)
            assert dct_reduction(item.box[2], item.box[3], S) == 1
            got = item.pixels.flip(-1) if item.params[0] else item.pixels
            diff = (got.int() - geo[key][0].int()).abs()
            if ds.images[key[0]].endswith(".jpg"):
                assert int(diff.max()) <= 1, ds.images[key[0]]
            else:
                assert float(diff[:, 3:-3, 3:-3].float().mean()) < 0.3, ds.images[key[0]]


def test_dct_reduction_rule():
    assert dct_reduction(63, 500, 32) == 1
    assert dct_reduction(64, 64, 32) == 2
    assert dct_reduction(200, 130, 32) == 4
    assert dct_reduction(256, 300, 32) == 8
    assert dct_reduction(1000, 1000, 32) == 8  # libjpeg scales by at most 1/8
    assert dct_reduction(447, 600, 224) == 1 and dct_reduction(448, 600, 224) == 2


# ---------------------------------------------------------------- crop geometry with DCT scaling
W, H = 400, 300  # with S = 32 crops decode at 1/2, 1/4 and 1/8 of the full size
N_GEO = 600


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A JPEG whose red channel encodes x and green channel y (255 (coordinate + 0.5) / size),
    listed N_GEO times (each entry gets its own per-sample seed)."""
    root = str(tmp_path_factory.mktemp("coded"))
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = np.round(255 * (np.arange(W) + 0.5) / W)[None, :]
    img[:, :, 1] = np.round(255 * (np.arange(H) + 0.5) / H)[:, None]
    img[:, :, 2] = 128
    Image.fromarray(img).save(os.path.join(root, "coded.jpg"), quality=90)
    return ImageListDataset(root, ["coded.jpg"] * N_GEO, np.zeros(N_GEO, np.int64),
                            transforms(True, S, RESIZE))


def recover_box(pixels):
    """(top, left, height, width) of an unflipped crop of the coded image, from straight
    lines fitted to the central half of its red columns and green rows."""
    c = np.arange(S // 4, 3 * S // 4)
    out = []
    for channel, size, axis in ((1, H, 1), (0, W, 0)):  # rows: green; columns: red
        profile = pixels[channel].double().mean(dim=axis).numpy()[c]
        slope, at0 = np.polyfit(c, profile, 1)
        extent = slope * size * S / 255  # crop height / width in image pixels
        start = at0 * size / 255 - 0.5 * extent / S
        out += [start, extent]
    return out


def ks_two_sample(a, b):
    """Kolmogorov-Smirnov statistic of two samples."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def test_crop_geometry_with_dct_scaling_matches_the_drawn_boxes_and_get_params(coded):
    ld = loader(coded)
    ld.sampler.set_epoch(0)
    reductions, scale, log_ratio = [], [], []
    for key in ld.sampler:
        item = ld.items[key]
        i, j, h, w = item.box[:4]
        reductions.append(dct_reduction(h, w, S))
        ri, rh, rj, rw = recover_box(item.pixels)
        # the box maps through the scaled decode onto the drawn box (seen: errors under
        # 1 pixel and 1.5 %; one pixel of the 1/8 decode is 8 image pixels)
        for got, want, extent in ((ri, i, h), (rj, j, w), (rh, h, h), (rw, w, w)):
            assert abs(got - want) < 1.5 + 0.02 * extent, (item.box, (ri, rh, rj, rw))
        scale.append(rh * rw / (H * W))
        log_ratio.append(math.log(rw / rh))
    assert set(reductions) == {2, 4, 8}  # (1: test_crops_match_the_reference_...)
    # independent draws of torchvision's RandomResizedCrop.get_params on the same size
    torch.manual_seed(12345)
    ref = [T.RandomResizedCrop.get_params(torch.empty(0, H, W), [0.08, 1.0], [3 / 4, 4 / 3])
           for _ in range(N_GEO)]
    ref_scale = [h * w / (H * W) for _, _, h, w in ref]
    ref_log_ratio = [math.log(w / h) for _, _, h, w in ref]
    # two-sample KS, n = m = 600: the 0.1 % critical value is 1.95 sqrt(2 / 600) = 0.113
    assert ks_two_sample(np.array(scale), np.array(ref_scale)) < 0.113
    assert ks_two_sample(np.array(log_ratio), np.array(ref_log_ratio)) < 0.113
    assert min(scale) < 0.12 and max(scale) > 0.9


# ---------------------------------------------------------------- parameter distributions
N_PARAMS = 3000


@pytest.fixture(scope="module")
def params():
    """Parameters of N_PARAMS samples of a 500 x 375 image, seeded as in training."""
    return torch.stack([draw_train_params(RECIPE, 500, 375, sample_seed(7, 0, i))[1]
                        for i in range(N_PARAMS)])


def test_flip_rate(params):
    flip = params[:, 0]
    assert set(flip.tolist()) == {0.0, 1.0}
    # binomial(3000, 0.5): sd 0.0091; 0.04 is 4.4 sd
    assert abs(float(flip.mean()) - 0.5) < 0.04


def test_jitter_factors_uniform_in_0_6_to_1_4(params):
    n = params.shape[0]
    for k in (1, 2, 3):
        f = np.sort(params[:, k].numpy().astype(np.float64))
        assert 0.6 <= f[0] < 0.61 and 1.39 < f[-1] <= 1.4
        # one-sample KS against uniform(0.6, 1.4); 0.1 % critical value 1.95 / sqrt(n)
        cdf = (f - 0.6) / 0.8
        d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
        assert d < 1.95 / math.sqrt(n)
    # the three factors are independent draws
    assert abs(np.corrcoef(params[:, 1:4].numpy().T)[np.triu_indices(3, 1)]).max() < 0.08


def test_six_jitter_orders_uniform(params):
    orders = [tuple(int(v) for v in row) for row in params[:, 4:7]]
    perms = list(itertools.permutations(range(3)))
    assert set(orders) == set(perms)
    counts = np.array([orders.count(p) for p in perms], dtype=float)
    expected = len(orders) / 6
    # chi-square, 5 degrees of freedom: 99.99 % quantile 25.7
    assert float(((counts - expected) ** 2 / expected).sum()) < 25.7


# ---------------------------------------------------------------- device half
def test_device_augment_is_flip_then_torchvision_jitter_then_normalize():
    """Batched flip + ColorJitter + Normalize equals, per sample, torch.flip and
    torchvision's tensor adjust_* in the drawn order, then Normalize -- for all six orders."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (12, 3, 9, 7), dtype=torch.uint8, generator=g)
    params = torch.zeros(12, 7)
    params[:, 0] = torch.arange(12) % 2
    params[:, 1:4] = 0.6 + 0.8 * torch.rand(12, 3, generator=g)
    perms = list(itertools.permutations(range(3)))
    params[:, 4:7] = torch.tensor([perms[k % 6] for k in range(12)], dtype=torch.float32)
    ld = ImageListLoader(ImageListDataset("", [], np.zeros(0)), 4, "cpu", True)
    got = ld.augment(u8, params)
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation]
    for k in range(12):
        x = u8[k].float() / 255
        if params[k, 0]:
            x = x.flip(-1)
        for op in params[k, 4:7].long().tolist():
            x = adjust[op](x, float(params[k, 1 + op]))
        want = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(got[k], want, atol=2e-6, rtol=0)


def test_color_jitter_clamps_after_each_op():
    """Brightness 1.4 then contrast 0.6 on a grey image: the contrast mean is taken of the
    clamped brightened image (torchvision clamps after every op)."""
    x = torch.full((1, 3, 2, 2), 0.9)
    x[0, :, 0, 0] = 0.1
    out = color_jitter(x.clone(), torch.tensor([[1.4, 0.6, 1.0]]), torch.tensor([[0, 1, 2]]))
    bright = torch.tensor([[0.14, 1.0], [1.0, 1.0]])  # 0.9 * 1.4 = 1.26 clamped to 1
    mean = (0.2989 + 0.587 + 0.114) * bright.mean()  # grey of r = g = b = v is 0.9999 v
    want = 0.6 * bright + 0.4 * mean  # saturation 1.0 leaves it unchanged
    for c in range(3):
        torch.testing.assert_close(out[0, c], want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- whole loader
def test_train_batches_shape_dtype_and_closeness_to_the_reference(tree):
    ds = dataset(tree)
    ld = loader(ds)
    assert len(ld) == 4  # 25 images, batch 8
    ld.sampler.set_epoch(0)
    keys = list(ld.sampler)
    batches = list(ld)
    assert [x.shape for x, _ in batches] == [(8, 3, S, S)] * 3 + [(1, 3, S, S)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [int(ds.targets[i]) for i, _ in keys]
    # against the whole reference transform (PIL uint8 ColorJitter): same draws, so only
    # rounding differs (PIL rounds after every op): under 2.5 / 255 per pixel on average
    ref = torch.stack([ds[key][0] for key in keys])
    diff = ((x - ref) * STD * 255).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 2.5, diff
    # sanity of the bound: other samples' reference outputs are far away
    assert float(((x - ref.roll(1, 0)) * STD * 255).abs().mean(dim=(1, 2, 3)).min()) > 10


def test_eval_batches_are_bit_identical_to_the_reference_transform(tree):
    ds = dataset(tree, train=False)
    ld = loader(ds, train=False, batch=10)
    ld.sampler.set_epoch(3)
    assert ld.sampler.indices() == list(range(25))  # in order, as the reference test loader
    x = torch.cat([b[0] for b in ld])
    ref = torch.stack([ds[i][0] for i in range(25)])
    assert x.shape == (25, 3, S, S) and torch.equal(x, ref)


def test_deterministic_and_resumable(tree):
    ds = dataset(tree)
    a = epoch(loader(ds), 4)
    b = epoch(loader(ds), 4)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(epoch(loader(ds), 5)[0][0], a[0][0])
    assert not torch.equal(epoch(loader(ds, seed=2), 4)[0][0], a[0][0])
    k = 2
    ld = loader(ds)
    resumed = epoch(ld, 4, start=k * 8)
    assert len(ld) == len(a) - k == len(resumed)
    for (xa, ya), (xr, yr) in zip(a[k:], resumed):
        assert torch.equal(xa, xr) and torch.equal(ya, yr)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(tree):
    ds = dataset(tree, names=tree[1][:10])
    ld = loader(ds, workers=1)
    assert ld.loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
    for (xa, ya), (xb, yb) in zip(epoch(loader(ds), 1), epoch(ld, 1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_ddp_shares_are_disjoint_and_cover_the_epoch(tree):
    ds = dataset(tree)
    shares, ys = [], []
    for rank in range(2):
        ld = loader(ds, rank=rank, world_size=2)
        ld.sampler.set_epoch(1)
        shares.append(ld.sampler.indices())
        y = torch.cat([y for _, y in epoch(ld, 1)])
        assert len(y) == 13 and len(ld) == 2  # ceil(25 / 2), padded by repetition
        ys.append(y.tolist())
        assert ys[-1] == [int(ds.targets[i]) for i in shares[-1]]
    assert set(shares[0]) | set(shares[1]) == set(range(25))
    assert len(set(shares[0][:12]) & set(shares[1][:12])) == 0
    # the test loader: every sample on exactly one rank, no padding
    test_shares = []
    for rank in range(2):
        ld = loader(dataset(tree, train=False), train=False, rank=rank, world_size=2)
        test_shares.append(ld.sampler.indices())
    assert sorted(test_shares[0] + test_shares[1]) == list(range(25))


@pytest.mark.parametrize("train", [True, False])
def test_corrupt_and_missing_files_name_the_file(tmp_path, train):
    good = Image.fromarray(textured(np.random.RandomState(1), 60, 50))
    good.save(tmp_path / "good.jpg", quality=90)
    raw = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(raw[:len(raw) // 3])  # truncated JPEG
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    names = ["good.jpg", "bad.jpg", "junk.jpg", "gone.jpg"]
    ds = ImageListDataset(str(tmp_path), names, np.zeros(4), transforms(train, S, RESIZE),
                          list_file="train.txt")
    ld = loader(ds, train=train)
    for index in (1, 2, 3):
        with pytest.raises(DataError) as reference:
            ds.load(index)
        with pytest.raises(DataError) as fast:
            ld.items[(index, 5)]
        assert str(fast.value) == str(reference.value)
        assert ds.path(index) in str(fast.value) and "train.txt" in str(fast.value)
        assert "\n" not in str(fast.value)


def test_a_jpeg_torchvision_refuses_is_decoded_by_pil(tree, monkeypatch):
    """torchvision's decoder raises on some damaged files that PIL (the reference) decodes:
    the worker then takes PIL's path, which accepts the file or raises the reference's
    error."""
    import datasets.imagelist_pipeline as pipeline
    ds = dataset(tree)
    ld = loader(ds)
    keys = [(i, sample_seed(1, 0, i)) for i in range(len(ds)) if ds.images[i].endswith(".jpg")]
    pil = []
    for key in keys:
        i, j, h, w = ld.items[key].box[:4]
        with open(ds.path(key[0]), "rb") as f:
            pil.append(pipeline._chw(pipeline.resized_crop(Image.open(f), (i, j, h, w), S)))

    def refuse(data, device="cpu"):
        raise RuntimeError("decode_jpeg: refused")
    monkeypatch.setattr(pipeline, "_DECODE_JPEG", refuse)
    for key, want in zip(keys, pil):
        assert torch.equal(ld.items[key].pixels, want)


# ---------------------------------------------------------------- decoding on the device
def test_device_decode_logic_on_the_cpu(tree):
    """The 'cuda' decode path's host logic, run with torchvision's CPU JPEG decoder: workers
    send JPEG bytes (PNG files decoded by the worker), the loader decodes, crops and resizes
    them; the result is close to the worker-decoded batch (different decoder and resizer)."""
    ds = dataset(tree)
    cpu = loader(ds, batch=25)
    dev = loader(ds, batch=25)
    assert dev.decode == "cpu"  # no CUDA: a 'cuda' request would have fallen back
    dev.items.device_decode = True  # what decode='cuda' sets, with the CPU as the device
    cpu.sampler.set_epoch(0)
    dev.sampler.set_epoch(0)
    batch = next(iter(dev.loader))
    png = [ds.images[int(i)].endswith(".png") for i in batch.index]
    assert batch.on_device.tolist() == [not p for p in png]
    assert batch.pixels.shape == (sum(png), 3, S, S)
    assert int(batch.lengths.sum()) == batch.encoded.numel() > 0
    (xc, yc), = list(cpu)
    xd, yd = dev.finish(batch)
    assert torch.equal(yc, yd)
    diff = ((xc - xd) * STD * 255).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 4.0, diff
    # a file the GPU decoder rejects is decoded by PIL in the main process, exactly as a
    # worker would have decoded it
    first = int(torch.nonzero(batch.on_device)[0])
    real = dev._nvjpeg
    dev._nvjpeg = lambda files: [None] + real(files)[1:]
    xd2, _ = dev.finish(batch)
    assert dev.cpu_fallbacks == 1
    assert torch.equal(xd2[first], xc[first])
    others = torch.arange(25) != first
    assert torch.equal(xd2[others], xd[others])


def test_cuda_request_falls_back_with_one_log_line(tree, caplog):
    """decode='cuda' on a device that is not CUDA (or without nvjpeg): one warning, CPU
    decoding."""
    with caplog.at_level("WARNING", logger="datasets.imagelist_pipeline"):
        ld = loader(dataset(tree), decode="cuda")
    assert ld.decode == "cpu" and not ld.items.device_decode
    lines = [r for r in caplog.records if "decoding on the CPU" in r.getMessage()]
    assert len(lines) == 1
    assert len(epoch(ld, 0)) == 4


@pytest.mark.cuda
def test_gpu_decode_crops_the_reference_box_of_the_nvjpeg_image(tree):
    """decode='cuda': each JPEG is decoded by nvjpeg and its reference crop box (the draws of
    the seeded reference transform) resized there; other files come from the workers. nvjpeg
    itself differs from libjpeg-turbo (IDCT and chroma upsampling): a few levels a pixel."""
    from torchvision.io import ImageReadMode, decode_jpeg
    root, names = tree
    gpu = ImageListLoader(dataset(tree), 25, "cuda", True, image_size=S, resize_size=RESIZE,
                          seed=1, decode="cuda")
    assert gpu.decode == "cuda"
    gpu.sampler.set_epoch(0)
    items = list(gpu.sampler)
    (xg, yg), = epoch(gpu, 0)
    want, params, gaps = [], [], []
    for index, seed in items:
        path = os.path.join(root, names[index])
        with open(path, "rb") as f:
            data = f.read()
        img = Image.open(io.BytesIO(data))
        (i, j, h, w), p = draw_train_params(RECIPE, img.width, img.height, seed)
        params.append(p)
        if img.format != "JPEG":  # decoded by a worker, as on the CPU path
            want.append(crop_to_uint8(data, img, (i, j, h, w), S).cuda())
            continue
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        full = decode_jpeg(raw, mode=ImageReadMode.RGB, device="cuda")
        gaps.append(float((full.cpu().float()
                           - decode_jpeg(raw, mode=ImageReadMode.RGB).float()).abs().mean()))
        crop = torch.nn.functional.interpolate(full[None, :, i:i + h, j:j + w].float(), (S, S),
                                               mode="bilinear", align_corners=False,
                                               antialias=True)
        want.append(crop[0].round().clamp(0, 255).to(torch.uint8))
    ref = gpu.augment(torch.stack(want), torch.stack(params).cuda())
    assert torch.equal(yg.cpu(), torch.tensor([int(dataset(tree).targets[i]) for i, _ in items]))
    torch.testing.assert_close(xg, ref, atol=1e-5, rtol=0)
    assert len(gaps) == 23 and max(gaps) < 12, gaps  # the two decoders, full images
    ev = ImageListLoader(dataset(tree, train=False), 25, "cuda", False, image_size=S,
                         resize_size=RESIZE, decode="cuda")
    assert ev.decode == "cpu"  # evaluation stays exact
    (xe, _), = epoch(ev, 0)
    ref = torch.stack([dataset(tree, train=False)[i][0] for i in range(25)])
    torch.testing.assert_close(xe.cpu(), ref, atol=1e-5, rtol=0)  # CUDA may divide by 1 / x


# ---------------------------------------------------------------- from a DataBundle
def test_imagelist_loader_for(tree):
    train, test = dataset(tree), dataset(tree, train=False)
    data = DataBundle(train, test, [7, 6, 6, 6], "x", train_eval=dataset(tree, train=False),
                      extra={"mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    ld = imagelist_loader_for(data, 8, "cpu", seed=1, image_size=S, resize_size=RESIZE)
    assert isinstance(ld, ImageListLoader) and ld.train and ld.image_size == S
    ref = loader(train)
    for (xa, _), (xb, _) in zip(epoch(ld, 0), epoch(ref, 0)):
        assert torch.equal(xa, xb)
    ev = imagelist_loader_for(data, 8, "cpu", seed=1, split="test", image_size=S,
                              resize_size=RESIZE)
    assert not ev.train and torch.equal(epoch(ev, 0)[0][0],
                                        torch.stack([test[i][0] for i in range(8)]))
    assert imagelist_loader_for(data, 8, "cpu", 1, split="train_eval") is not None
    assert imagelist_loader_for(data, 8, "cpu", 1, policy=True) is None  # per-image path
    from datasets.common import ArrayImageDataset
    arrays = ArrayImageDataset(np.zeros((2, 4, 4, 3), np.uint8), [0, 1])
    assert imagelist_loader_for(DataBundle(arrays, arrays, [1, 1], "y"), 8, "cpu", 1) is None


def test_rejects_bad_arguments(tree):
    with pytest.raises(ValueError):
        loader(dataset(tree), decode="gpu")
    with pytest.raises(ValueError):
        loader(dataset(tree), batch=0)


def test_the_recipe_is_the_reference_transforms():
    """The fast path's recipe and the reference torchvision transform come from the same
    constants: the parameters torchvision stores equal the recipe's."""
    rrc, flip, jitter = transforms(True, S, RESIZE).transforms[:3]
    want = TrainRecipe(size=rrc.size[0], scale=tuple(rrc.scale), ratio=tuple(rrc.ratio),
                       flip_p=flip.p, brightness=tuple(jitter.brightness),
                       contrast=tuple(jitter.contrast), saturation=tuple(jitter.saturation))
    assert TrainRecipe.reference(S) == want and jitter.hue is None


def test_epoch_sampler_is_the_reference_order(tree):
    ld = loader(dataset(tree))
    ld.sampler.set_epoch(3)
    ref = EpochSampler(25, seed=1, shuffle=True)
    ref.set_epoch(3)
    assert list(ld.sampler) == list(ref)


def test_png_bytes_stay_readable():
    """Non-JPEG files keep PIL's decoder (no draft)."""
    buf = io.BytesIO()
    Image.fromarray(textured(np.random.RandomState(2), 200, 150)).save(buf, "PNG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    from datasets.imagelist_pipeline import resized_crop
    out = resized_crop(img, (10, 20, 128, 128), S)
    ref = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize(
        (S, S), Image.BILINEAR, box=(20, 10, 148, 138))
    assert np.array_equal(np.asarray(out), np.asarray(ref))
