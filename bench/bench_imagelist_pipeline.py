"""Image-list input path per CPU core: the reference transform vs the fast path.

    python bench/bench_imagelist_pipeline.py [--images 48] [--repeats 5] [--batch 64]
                                             [--workers N]

Data: generated photo-like JPEGs (quality 90, multi-scale colour noise, about 4 bits per
pixel), ImageNet-like (500 x 375) and iNaturalist-like (800 x 600), in a temporary folder.
One process, one torch thread (a DataLoader worker runs one), no workers, so every rate is
per core. Candidates run interleaved (see bench/_common.py) on the same files, the same
(seed, epoch) samples, and the best repeat counts. Per set:

* reference: ``ImageListDataset`` with ``datasets.imagelist.transforms(True)`` (PIL decode,
  RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4, 0), ToTensor, Normalize), seeded per
  sample as the training loader does, batches collated;
* fast path (workers): what an ``ImageListLoader`` worker does -- read, draw, DCT-scaled decode,
  crop-resize to uint8 -- and its collate; also without DCT scaling, to show its share;
* PIL decode only (``Image.open(f).convert('RGB')``), for scale;
* the fast path's device half (flip + ColorJitter + normalise) run on the CPU, one thread,
  reported separately (on a GPU it is a few batched kernels);
* with CUDA: the ``decode='cuda'`` path -- worker part (read + header + draws) per core and
  the GPU's decode + crop + augment rate;
* with ``--workers N``: whole loaders (N worker processes, batches normalised on the device).

Cores per GPU = 3,000 images/s (one H100 training a ResNet-50 with AMP) / images/s per core.
The last line reads ``fast path: N.NNx the reference per core`` (ImageNet-like set).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from _common import header, sync, table, timeit
from PIL import Image
from torch.utils.data import default_collate

from datasets.common import EpochSampler
from datasets.imagelist import ImageListDataset, transforms
from datasets.imagelist_pipeline import ImageListLoader, _collate
from datasets.loader import build_loader

GPU_RATE = 3000  # images/s: one H100, ResNet-50, AMP
SETS = (("ImageNet-like", 500, 375), ("iNaturalist-like", 800, 600))


def photo(rng: np.random.RandomState, w: int, h: int) -> np.ndarray:
    """Colour noise at 96, 24, 6 and 2 pixel scales: compresses like a detailed photo."""
    acc = np.zeros((h, w, 3))
    for cell, amp in zip((96, 24, 6, 2), (60, 45, 40, 30)):
        small = (rng.randn(h // cell + 2, w // cell + 2, 3) * 40 + 128).clip(0, 255)
        up = Image.fromarray(small.astype(np.uint8)).resize((w + 2 * cell, h + 2 * cell),
                                                            Image.BICUBIC)
        acc += (np.asarray(up, dtype=np.float64)[:h, :w] - 128) * amp / 40
    return np.clip(acc + 128, 0, 255).astype(np.uint8)


def write_set(root: str, n: int, w: int, h: int, seed: int) -> ImageListDataset:
    rng = np.random.RandomState(seed)
    names = []
    for k in range(n):
        name = f"{w}x{h}_{k}.jpg"
        Image.fromarray(photo(rng, w, h)).save(os.path.join(root, name), quality=90)
        names.append(name)
    return ImageListDataset(root, names, np.zeros(n, np.int64), transforms(True))


def rate(seconds: float, n: int) -> str:
    return f"{n / seconds:,.0f}"


def bench_set(title: str, ds: ImageListDataset, args, device_rows: list) -> float:
    """Table rows of one image set; returns fast / reference per core."""
    n = len(ds)
    sampler = EpochSampler(n, seed=0)
    keys = list(sampler)
    fast = ImageListLoader(ds, args.batch, "cpu", True, seed=0)
    no_draft = ImageListLoader(ds, args.batch, "cpu", True, seed=0)
    no_draft.items.draft = False

    def reference():
        return default_collate([ds[k] for k in keys])

    def worker(loader):
        return lambda: _collate([loader.items[k] for k in keys])

    def decode_only():
        for i in range(n):
            with open(ds.path(i), "rb") as f:
                Image.open(f).convert("RGB")

    cpu = torch.device("cpu")
    fns = {"reference transform (PIL, per sample)": reference,
           "fast path, worker half": worker(fast),
           "fast path, worker half, no DCT scaling": worker(no_draft),
           "PIL decode only (open + convert RGB)": decode_only}
    best = timeit(fns, cpu, args.repeats)
    per_core = {k: n / v for k, v in best.items()}
    ref = per_core["reference transform (PIL, per sample)"]

    # the device half on the CPU, one thread: flip + ColorJitter + normalise of one batch
    batch = _collate([fast.items[k] for k in keys[:args.batch]])
    dev = timeit({"device": lambda: fast.finish(batch)}, cpu, args.repeats)["device"]
    dev_rate = args.batch / dev
    device_rows.append([title, f"{dev * 1e3 / args.batch:.3g}", f"{dev_rate:,.0f}"])

    sizes = [os.path.getsize(ds.path(i)) for i in range(n)]
    print(f"## {title}: {n} JPEGs {Image.open(ds.path(0)).size[0]}x"
          f"{Image.open(ds.path(0)).size[1]}, quality 90, mean {np.mean(sizes) / 1024:.0f} KB")
    rows = []
    for name, r in per_core.items():
        cores = "" if name.startswith("PIL decode") else f"{GPU_RATE / r:.1f}"
        rows.append([name, f"{1e3 / r:.2f}", f"{r:,.0f}", f"{r / ref:.2f}x", cores])
    both = 1 / (1 / per_core["fast path, worker half"] + 1 / dev_rate)
    rows.append(["fast path, worker + device half both on this CPU", f"{1e3 / both:.2f}",
                 f"{both:,.0f}", f"{both / ref:.2f}x", ""])
    table(["path", "ms / image", "images/s per core", "vs reference",
           f"cores for {GPU_RATE:,} images/s"], rows)
    if torch.cuda.is_available():
        bench_gpu_decode(ds, keys, args, ref, torch.device("cuda"))
    if args.workers:
        bench_loaders(ds, args, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return per_core["fast path, worker half"] / ref


def bench_gpu_decode(ds: ImageListDataset, keys, args, ref: float,
                     device: torch.device) -> None:
    """decode='cuda': worker half per core, and the GPU half's rate."""
    gpu = ImageListLoader(ds, args.batch, device, True, seed=0, decode="cuda")
    cpu_dec = ImageListLoader(ds, args.batch, device, True, seed=0)
    if gpu.decode != "cuda":
        print("decode='cuda' unavailable here (see the log line); GPU decode not timed\n")
        return
    n = len(keys)
    best = timeit({"gpu worker": lambda: _collate([gpu.items[k] for k in keys])},
                  torch.device("cpu"), args.repeats)
    worker_rate = n / best["gpu worker"]
    pin = (lambda t: t.pin_memory()) if device.type == "cuda" else (lambda t: t)
    batch = _collate([gpu.items[k] for k in keys[:args.batch]])
    batch = batch._replace(**{f: pin(getattr(batch, f)) for f in ("pixels", "params", "target")})
    cpu_batch = _collate([cpu_dec.items[k] for k in keys[:args.batch]])
    cpu_batch = cpu_batch._replace(pixels=pin(cpu_batch.pixels))
    dev = timeit({"gpu decode": lambda: gpu.finish(batch),
                  "device half": lambda: cpu_dec.finish(cpu_batch)}, device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    rows = [["decode='cuda', worker half (read + header + draws), per core",
             f"{worker_rate:,.0f}", f"{worker_rate / ref:.2f}x", f"{GPU_RATE / worker_rate:.2f}"],
            [f"decode='cuda', GPU half (nvjpeg + crop-resize + augment) on {name}",
             f"{args.batch / dev['gpu decode']:,.0f}", "", ""],
            [f"decode='cpu', GPU half (augment only) on {name}",
             f"{args.batch / dev['device half']:,.0f}", "", ""]]
    table(["path", "images/s", "vs reference per core", f"cores for {GPU_RATE:,} images/s"],
          rows)


def loader_rate(loader, device: torch.device, to_device: bool) -> float:
    """Images per second of one epoch through a loader, after its first batch."""
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it)
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for x, _ in it:
        if to_device:
            x = x.to(device, non_blocking=True)
        n += x.shape[0]
    sync(device)
    return n / (time.perf_counter() - t0)


def bench_loaders(ds: ImageListDataset, args, device: torch.device) -> None:
    """End to end with ``--workers`` loader processes: the files listed ``--loader-repeat``
    times (warm page cache), batches delivered normalised on ``device``."""
    names = list(ds.images) * args.loader_repeat
    many = ImageListDataset(ds.root, names, np.zeros(len(names), np.int64), transforms(True))
    rows = []
    ref = build_loader(many, args.batch, train=True, seed=0, rank=0, world_size=1,
                       workers=args.workers, pin_memory=device.type == "cuda")
    rows.append(["reference transform (build_loader)", loader_rate(ref, device, True)])
    del ref
    decodes = ["cpu", "cuda"] if device.type == "cuda" else ["cpu"]
    for decode in decodes:
        fast = ImageListLoader(many, args.batch, device, True, seed=0, workers=args.workers,
                               decode=decode)
        rows.append([f"fast path, decode='{fast.decode}'", loader_rate(fast, device, False)])
        del fast
    print(f"## end to end: {len(names)} samples, {args.workers} workers, batch {args.batch}, "
          f"on {device}")
    table(["path", "images/s"], [[name, f"{r:,.0f}"] for name, r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48, help="images per set")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (best counts)")
    p.add_argument("--batch", type=int, default=64, help="batch of the device-half timing")
    p.add_argument("--workers", type=int, default=0,
                   help="also time whole loaders with this many worker processes (0: no)")
    p.add_argument("--loader-repeat", type=int, default=40,
                   help="times the files are listed for the whole-loader timing")
    args = p.parse_args()
    torch.set_num_threads(1)  # per core, as a loader worker
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    header("image-list input path per CPU core: reference transform vs fast path", device)
    device_rows: list = []
    ratios = {}
    with tempfile.TemporaryDirectory() as root:
        for k, (title, w, h) in enumerate(SETS):
            t0 = time.perf_counter()
            ds = write_set(root, args.images, w, h, seed=k)
            print(f"(wrote {args.images} files in {time.perf_counter() - t0:.1f} s)")
            ratios[title] = bench_set(title, ds, args, device_rows)
    print("## fast path, device half (flip + ColorJitter + normalise) on the CPU, one thread")
    table(["set", "ms / image", "images/s"], device_rows)
    print(f"iNaturalist-like: fast path {ratios['iNaturalist-like']:.2f}x the reference "
          "per core")
    print(f"fast path: {ratios['ImageNet-like']:.2f}x the reference per core")


if __name__ == "__main__":
    main()
