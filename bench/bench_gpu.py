"""GPU throughput of the training recipes: the numbers bench/gpu_check.sh reports.

    python bench/bench_gpu.py [--epochs 2] [--workers 8] [--r50-steps 20]
    python bench/bench_gpu.py --rehearsal      # the same code paths, tiny, on any device

1. ResNet-50 (ImageNet-LT shape: 1,000 classes, 224 x 224 inputs already on the device),
   batch 256, one training step (mixup + ARB-Loss with training-set counts + SGD) in fp32 and
   bf16 autocast, with and without channels_last (on CUDA also bf16 + channels_last + the step
   compiled with CUDA graphs): images/s over ``--r50-steps`` steps after 5
   warm-up steps.
2. ResNet-32 on CIFAR-100-LT (imbalance factor 100: 10,847 training images, 10,000 test
   images; random pixels of that shape, generated in memory), the shipped recipe
   config/cifar100/cifar100_imb001_stage1_mixup.yaml (ARB-Loss batch counts + mixup, batch
   128): whole training epochs through engine.Trainer.train_one_epoch with the per-sample
   loader (PIL transforms in ``--workers`` worker processes) and with the on-device pipeline,
   each in fp32 and bf16 autocast; the best of ``--epochs`` timed epochs after one warm-up
   epoch, the test-set evaluation timed once, and the projected wall time of the recipe's
   200 epochs (training + evaluation every epoch).

3. The same ResNet-32 recipe with the training step compiled (``compile_mode``: forward, loss
   with its batch counts, backward as one graph; ``reduce-overhead`` replays it as CUDA
   graphs), eager and compiled side by side on whatever device this runs on, the CPU included
   (device pipeline, fp32): the first epoch (compilation included), the best timed epoch and
   the projected 200 epochs.

``--rehearsal`` runs every path with tiny sizes (for checking the script on a CPU);
``--compile-only`` runs part 3 alone.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _common import ROOT, header, pick_device, sync, table

from config import get_cfg_defaults, load_config
from datasets.cifar import CIFAR_MEAN, CIFAR_STD, transforms
from datasets.common import ArrayImageDataset, DataBundle, lt_counts
from engine import Trainer, autocast_factory
from methods import ARBLoss, mixup_criterion, mixup_data
from models import build_network
from utils.comm import DistInfo

CIFAR_CFG = os.path.join(ROOT, "config", "cifar100", "cifar100_imb001_stage1_mixup.yaml")


def cifar100_lt(n_test: int, scale: float = 1.0) -> DataBundle:
    """Random images with CIFAR-100-LT's (IF 100) class counts (``scale`` shrinks them)."""
    counts = [max(1, int(c * scale)) for c in lt_counts(500, 100, 0.01)]
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(100), counts)
    x = rng.randint(0, 256, size=(len(y), 32, 32, 3), dtype=np.uint8)
    xt = rng.randint(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    yt = rng.randint(0, 100, size=n_test)
    return DataBundle(ArrayImageDataset(x, y, transforms(True)),
                      ArrayImageDataset(xt, yt, transforms(False)), counts, "cifar100-random",
                      extra={"mean": CIFAR_MEAN, "std": CIFAR_STD,
                             "augment": {"pad": 4, "flip": True}})


def timed_epochs(cfg, device, data: DataBundle, epochs: int):
    """Seconds of ``epochs + 1`` training epochs of ``cfg`` (the first warms up: cudnn
    autotuning, loader workers, compilation) and of one test-set evaluation."""
    trainer = Trainer(cfg, DistInfo(False, 0, 1, 0, device), data=data)
    trainer.prepare()
    times = []
    for epoch in range(epochs + 1):
        sync(device)
        t0 = time.perf_counter()
        trainer.train_one_epoch(epoch)
        sync(device)
        times.append(time.perf_counter() - t0)
    sync(device)
    t0 = time.perf_counter()
    trainer.evaluate()
    sync(device)
    eval_s = time.perf_counter() - t0
    trainer.close()
    return times, eval_s


def resnet32_rows(device, data: DataBundle, epochs: int, workers: int) -> list:
    rows = []
    n_train = len(data.train)
    for pipeline in ("per-sample", "device"):
        for amp in ("none", "bf16"):
            cfg = load_config(CIFAR_CFG, ["device", device.type, "amp", amp, "workers",
                                          str(workers), "device_pipeline",
                                          str(pipeline == "device"), "deterministic", "False",
                                          "print_freq", "1000000"])
            t_start = time.perf_counter()
            times, eval_s = timed_epochs(cfg, device, data, epochs)
            warm, times = times[0], times[1:]
            best = min(times)
            label = ("per-sample loader, %d workers" % workers if pipeline == "per-sample"
                     else "device pipeline")
            rows.append([label, amp, f"{n_train / best:,.0f}", f"{best:.2f}", f"{eval_s:.2f}",
                         f"{200 * (best + eval_s) / 60:.1f} min"])
            print(f"  {label}, amp {amp}: warm-up epoch {warm:.2f} s, epochs "
                  f"{', '.join(f'{t:.2f}' for t in times)} s, eval {eval_s:.2f} s, "
                  f"{time.perf_counter() - t_start:.1f} s in all", flush=True)
    return rows


def compile_modes(device) -> list:
    """Eager and the compiled step; CUDA graphs only where there is CUDA."""
    return ["none", "default"] + (["reduce-overhead"] if device.type == "cuda" else [])


def resnet32_compile_rows(device, data: DataBundle, epochs: int) -> list:
    """Eager vs compiled training step, ResNet-32 CIFAR-100-LT recipe, device pipeline, fp32."""
    rows = []
    for mode in compile_modes(device):
        cfg = load_config(CIFAR_CFG, ["device", device.type, "workers", "0", "device_pipeline",
                                      "True", "deterministic", "False", "compile_mode", mode,
                                      "print_freq", "1000000"])
        times, eval_s = timed_epochs(cfg, device, data, epochs)
        best = min(times[1:])
        rows.append([mode, f"{times[0]:.2f}", f"{len(data.train) / best:,.0f}", f"{best:.2f}",
                     f"{eval_s:.2f}", f"{(200 * (best + eval_s) + times[0] - best) / 60:.1f} min"])
        print(f"  compile_mode {mode}: epochs {', '.join(f'{t:.2f}' for t in times)} s, eval "
              f"{eval_s:.2f} s", flush=True)
    return rows


def resnet50_step_seconds(device, amp: str, channels_last: bool, batch: int, size: int,
                          steps: int, compile_mode: str = "none") -> float:
    """Mean seconds of one ResNet-50 training step (after 5 warm-up steps; with
    ``compile_mode`` forward + loss + backward compiled as in engine.trainer)."""
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.backbone, cfg.amp = "imagenet", "resnet50_fe", amp
    counts = lt_counts(1280, 1000, 0.004)
    torch.manual_seed(0)
    net = build_network(cfg, 1000).to(device).train()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    crit = ARBLoss(cls_num_list=counts).to(device)
    autocast = autocast_factory(cfg, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    rng, perm = np.random.default_rng(0), torch.Generator().manual_seed(2)

    def forward_loss(xm, y_a, y_b, lam):
        with autocast():
            out = net(xm)
        return mixup_criterion(crit, out.float(), y_a, y_b, lam)

    if compile_mode != "none":
        forward_loss = torch.compile(forward_loss, mode=compile_mode, dynamic=False)

    def step():
        xm, y_a, y_b, lam = mixup_data(x, y, 0.2, rng, perm)
        lam = torch.full((), lam, device=device) if compile_mode != "none" else lam
        loss = forward_loss(xm, y_a, y_b, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def resnet50_rows(device, batch: int, size: int, steps: int) -> list:
    rows = []
    variants = [(amp, cl, "none") for amp in ("none", "bf16") for cl in (False, True)]
    if device.type == "cuda":  # the 5,000 images/s goal: bf16 + channels_last + captured step
        variants.append(("bf16", True, "reduce-overhead"))
    for amp, channels_last, mode in variants:
        secs = resnet50_step_seconds(device, amp, channels_last, batch, size, steps, mode)
        rows.append([amp, "yes" if channels_last else "no", mode, f"{secs * 1e3:.1f}",
                     f"{batch / secs:,.0f}"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="timed ResNet-32 epochs per variant")
    p.add_argument("--workers", type=int, default=8, help="per-sample loader workers")
    p.add_argument("--r50-steps", type=int, default=20, help="timed ResNet-50 steps")
    p.add_argument("--rehearsal", action="store_true",
                   help="tiny sizes: check every path quickly on any device")
    p.add_argument("--compile-only", action="store_true",
                   help="only the eager vs compiled ResNet-32 table")
    args = p.parse_args()
    device = pick_device()
    header("GPU throughput: ResNet-32 CIFAR-100-LT epochs, ResNet-50 steps", device)
    if args.rehearsal:
        data, epochs, workers = cifar100_lt(256, scale=0.05), 1, min(args.workers, 2)
        r50 = dict(batch=4, size=64, steps=2)
    else:
        data, epochs, workers = cifar100_lt(10_000), args.epochs, args.workers
        r50 = dict(batch=256, size=224, steps=args.r50_steps)
    shape = (f"CIFAR-100-LT shape ({len(data.train):,} training / {len(data.test):,} test "
             f"images), ARB-Loss + mixup, batch 128; best of {epochs} epochs")
    if not args.compile_only:
        print(f"ResNet-50, batch {r50['batch']}, {r50['size']} x {r50['size']}, 1,000 classes, "
              f"mixup + ARB-Loss + SGD; mean of {r50['steps']} steps:", flush=True)
        table(["amp", "channels_last", "compile_mode", "ms / step", "images/s"],
              resnet50_rows(device, **r50))
        print(f"ResNet-32, {shape}:", flush=True)
        table(["input path", "amp", "train images/s", "epoch s", "eval s", "200 epochs"],
              resnet32_rows(device, data, epochs, workers))
    print(f"ResNet-32, {shape}, device pipeline, fp32, eager vs compiled step:", flush=True)
    table(["compile_mode", "first epoch s", "train images/s", "epoch s", "eval s",
           "200 epochs"], resnet32_compile_rows(device, data, epochs))


if __name__ == "__main__":
    main()
