"""Input pipeline throughput for CIFAR-LT: per-sample PIL path vs batched DeviceLoader, and
the rate at which a ResNet-32 training step consumes images.

    python bench/bench_pipeline.py [--batches N]

Data: random uint8 32 x 32 x 3 images, as many as CIFAR-100-LT IF 100 (10,847); no real data
needed (decoding cost does not depend on the pixel values). Per-sample path: the training
transform of datasets.cifar (RandomCrop(32, 4) + flip + ToTensor + Normalize) through
datasets.loader.build_loader with 0 and 2 workers, batches moved to the device. Device path:
datasets.device_pipeline.DeviceLoader with the same augmentation on the device.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from _common import header, pick_device, sync, table
from bench_train_step import make_steps

from datasets.cifar import CIFAR_MEAN, CIFAR_STD, transforms
from datasets.common import ArrayImageDataset
from datasets.device_pipeline import DeviceLoader
from datasets.loader import build_loader

N_IMAGES = 10847  # CIFAR-100-LT, imbalance factor 100
BATCH = 128


def rate(loader, device: torch.device, batches: int) -> float:
    """Images per second over ``batches`` batches of one epoch (after the first batch, which
    pays for worker start-up and is timed separately by the caller's warm-up)."""
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it)  # warm-up: worker start, first fetch
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for x, y in itertools.islice(it, batches):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        n += x.shape[0]
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=0,
                   help="batches timed per path (0: a whole epoch on CUDA, 30 on the CPU)")
    args = p.parse_args()
    device = pick_device()
    header(f"CIFAR-LT input pipeline, {N_IMAGES} random 32x32 images, batch {BATCH}", device)
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(N_IMAGES, 32, 32, 3), dtype=np.uint8)
    targets = rng.randint(0, 100, size=N_IMAGES)
    per_epoch = -(-N_IMAGES // BATCH)
    batches = min(args.batches or (per_epoch if device.type == "cuda" else 30), per_epoch - 1)
    pin = device.type == "cuda"
    ds = ArrayImageDataset(images, targets, transforms(True))
    results = {}
    for workers in (0, 2):
        loader = build_loader(ds, BATCH, train=True, seed=0, rank=0, world_size=1,
                              workers=workers, pin_memory=pin)
        results[f"per-sample PIL, {workers} workers"] = max(
            rate(loader, device, batches) for _ in range(2))
        del loader  # stops persistent workers before the next measurement
    dev_loader = DeviceLoader(images, targets, BATCH, device, CIFAR_MEAN, CIFAR_STD, pad=4,
                              flip=True, seed=0)
    results["DeviceLoader (batched, on device)"] = max(
        rate(dev_loader, device, batches) for _ in range(3))  # best of 3: it is short
    full, _ = make_steps(device)
    full()
    sync(device)
    steps = 20 if device.type == "cuda" else 2
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        full()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    model_rate = BATCH / best
    rows = [[name, f"{r:,.0f}", f"{r / model_rate:.2f}"] for name, r in results.items()]
    rows.append(["ResNet-32 training step (mixup + ARB + SGD)", f"{model_rate:,.0f}", "1.00"])
    table(["path", "images/s", "x model consumption"], rows)
    print(f"pipelines: best of 2 passes (DeviceLoader: 3) over {batches} batches "
          f"({batches * BATCH} images) after one warm-up batch each; model: best of {steps} "
          "steps after one warm-up step. A ratio below 1 means the input path would starve "
          "the model.")


if __name__ == "__main__":
    main()
