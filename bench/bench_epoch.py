"""Epoch time with the per-sample input path vs the batched DeviceLoader.

    python bench/bench_epoch.py [--cifar-steps N]

1. Digits demo (config/digits/digits_imb005_arbloss.yaml): one training epoch through
   engine.Trainer.train_one_epoch plus the test-set evaluation, measured whole (best of 3
   interleaved epochs per path, after one warm-up epoch).
2. CIFAR-shaped epoch: 12,406 random 32 x 32 images (CIFAR-10-LT IF 100), ResNet-32, ARB-Loss
   + mixup, batch 128 (97 steps). On the CPU a whole epoch takes too long, so a fixed number
   of steps is timed after one warm-up step and scaled to the epoch, and the evaluation of
   10,000 test images is estimated from a few eval batches; the table says so.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import time

import numpy as np
from _common import ROOT, header, pick_device, sync, table

from config import load_config
from datasets import build_data
from datasets.cifar import CIFAR_MEAN, CIFAR_STD, transforms
from datasets.common import ArrayImageDataset, DataBundle
from datasets.device_pipeline import device_loader_for
from datasets.loader import build_loader
from engine import Trainer
from engine.evaluation import evaluate, predict
from utils.comm import DistInfo


class FirstBatches:
    """The first ``k`` batches of a loader, with the ``len`` train_one_epoch expects."""

    def __init__(self, loader, k: int):
        self.loader, self.k = loader, k
        self.sampler = loader.sampler
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return min(self.k, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.k)


def setup(cfg, data, device) -> Trainer:
    """A trainer ready for ``train_one_epoch`` (no run folder, no hooks)."""
    trainer = Trainer(cfg, DistInfo(False, 0, 1, 0, device), data=data)
    trainer.prepare()
    return trainer


def run_epoch(trainer: Trainer, loader, epoch: int) -> None:
    trainer.train_loader = loader
    trainer.train_one_epoch(epoch)


def loaders(cfg, data, device, batch: int):
    pin = device.type == "cuda"
    per_sample = build_loader(data.train, batch, train=True, seed=cfg.seed, rank=0,
                              world_size=1, workers=cfg.workers, pin_memory=pin)
    return {"per-sample (PIL, %d workers)" % cfg.workers: per_sample,
            "DeviceLoader": device_loader_for(data, batch, device, cfg.seed)}


def digits(device) -> list:
    cfg = load_config(os.path.join(ROOT, "config", "digits", "digits_imb005_arbloss.yaml"))
    data = build_data(cfg)
    test = build_loader(data.test, cfg.batch_size, train=False, seed=0, rank=0, world_size=1,
                        workers=0, pin_memory=False)
    paths = loaders(cfg, data, device, cfg.batch_size)
    models = {name: setup(cfg, data, device) for name in paths}
    times = {name: [] for name in paths}
    for epoch in range(4):  # epoch 0 is the warm-up
        for name, loader in paths.items():
            trainer = models[name]
            sync(device)
            t0 = time.perf_counter()
            run_epoch(trainer, loader, epoch)
            evaluate(trainer.net, test, device, trainer.ranges)
            sync(device)
            if epoch:
                times[name].append(time.perf_counter() - t0)
    n = sum(data.cls_num_list)
    return [["digits demo (resnet8, %d train / %d test images, batch %d)"
             % (n, len(data.test), cfg.batch_size), name, f"{min(t):.3g}",
             "measured (best of 3)"] for name, t in times.items()]


def cifar(device, steps: int, workers: int) -> list:
    cfg = load_config(os.path.join(ROOT, "config", "cifar10",
                                   "cifar10_imb001_arbloss_mixup.yaml"),
                      ["workers", str(workers)])
    rng = np.random.RandomState(0)
    n_train, n_test = 12406, 10000
    images = rng.randint(0, 256, size=(n_train, 32, 32, 3), dtype=np.uint8)
    targets = rng.randint(0, 10, size=n_train)
    test_images = rng.randint(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_ds = ArrayImageDataset(test_images, rng.randint(0, 10, size=n_test), transforms(False))
    data = DataBundle(ArrayImageDataset(images, targets, transforms(True)), test_ds,
                      np.bincount(targets, minlength=10).tolist(), "cifar10-random",
                      extra={"mean": CIFAR_MEAN, "std": CIFAR_STD,
                             "augment": {"pad": 4, "flip": True}})
    paths = loaders(cfg, data, device, 128)
    per_epoch = len(paths["DeviceLoader"])
    whole = steps >= per_epoch
    rows = []
    for name, loader in paths.items():
        trainer = setup(cfg, data, device)
        run_epoch(trainer, FirstBatches(loader, 1), 0)  # warm-up step
        sync(device)
        t0 = time.perf_counter()
        run_epoch(trainer, FirstBatches(loader, steps), 1)
        sync(device)
        train_t = (time.perf_counter() - t0) * per_epoch / min(steps, per_epoch)
        rows.append((name, trainer.net, train_t))
    # evaluation is the same for both paths (test images go through the per-sample path)
    eval_batches = per_epoch if whole else 2
    test = build_loader(test_ds, 128, train=False, seed=0, rank=0, world_size=1,
                        workers=cfg.workers,
                        pin_memory=device.type == "cuda")
    net = rows[0][1]
    predict(net, FirstBatches(test, 1), device)
    sync(device)
    t0 = time.perf_counter()
    predict(net, FirstBatches(test, eval_batches), device)
    sync(device)
    eval_t = (time.perf_counter() - t0) * len(test) / min(eval_batches, len(test))
    how = ("measured" if whole else
           f"extrapolated: {steps} of {per_epoch} steps, {eval_batches} of {len(test)} eval "
           "batches")
    return [[f"CIFAR-10-LT shape (resnet32, {n_train} train / {n_test} test, batch 128)",
             name, f"{t + eval_t:.3g} (train {t:.3g} + eval {eval_t:.3g})", how]
            for name, _, t in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar-steps", type=int, default=0,
                   help="CIFAR training steps timed (0: the whole epoch on CUDA, 2 on the CPU)")
    p.add_argument("--workers", type=int, default=-1,
                   help="workers of the per-sample CIFAR path (-1: 8 on CUDA, 0 on the CPU)")
    args = p.parse_args()
    logging.disable(logging.INFO)  # the trainer's progress lines
    device = pick_device()
    header("epoch time: per-sample input path vs DeviceLoader", device)
    rows = digits(device)
    on_gpu = device.type == "cuda"
    workers = args.workers if args.workers >= 0 else (min(8, os.cpu_count() or 1) if on_gpu
                                                      else 0)
    rows += cifar(device, args.cifar_steps or (1000 if on_gpu else 2), workers)
    table(["workload", "input path", "epoch s (train + eval)", "how"], rows)


if __name__ == "__main__":
    main()
