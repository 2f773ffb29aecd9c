"""Cost of the training recipe around the network: full step vs bare step.

    python bench/bench_train_step.py [--repeats N]

Full step (as engine.Trainer.train_one_epoch does it): mixup of the batch, ARB batch counts,
forward, mixup_criterion with ARB-Loss, zero_grad, backward, SGD step. Bare step: forward,
F.cross_entropy, zero_grad, backward, SGD step of the same model on the same batch. ResNet-32
(models.build_network with the default config: resnet32_fe + Classifier), 100 classes, batch
128, 3 x 32 x 32 inputs. Target: bare / full >= 0.9.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from _common import header, ms, pick_device, table, timeit

from config import get_cfg_defaults
from methods import ARBLoss, batch_class_counts, mixup_criterion, mixup_data
from models import build_network


def make_steps(device: torch.device, batch: int = 128, classes: int = 100):
    """(full step, bare step) closures over one model, optimiser and batch."""
    cfg = get_cfg_defaults()
    torch.manual_seed(0)
    net = build_network(cfg, classes).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    crit = ARBLoss().to(device)
    rng = np.random.default_rng(0)
    perm_gen = torch.Generator().manual_seed(2)

    def full():
        xm, y_a, y_b, lam = mixup_data(x, y, 1.0, rng, perm_gen)
        cnt = batch_class_counts(y_a, classes)
        out = net(xm)
        loss = mixup_criterion(crit, out.float(), y_a, y_b, lam, cnt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def bare():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return full, bare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=0, help="timed repeats (0: 30 on CUDA, "
                   "3 on the CPU)")
    args = p.parse_args()
    device = pick_device()
    header("training step: mixup + ARB-Loss + SGD vs bare CE step (ResNet-32, batch 128)",
           device)
    full, bare = make_steps(device)
    repeats = args.repeats or (30 if device.type == "cuda" else 3)
    t, med = timeit({"full": full, "bare": bare}, device, repeats=repeats,
                    warmup=5 if device.type == "cuda" else 1, with_median=True)
    table(["step", "ms", "images/s"],
          [["full (mixup + ARB batch counts + SGD)", ms(t["full"]), f"{128 / t['full']:.0f}"],
           ["bare (CE, no mixup, + SGD)", ms(t["bare"]), f"{128 / t['bare']:.0f}"]])
    print(f"bare / full = {t['bare'] / t['full']:.3f} (target >= 0.9), best of {repeats} "
          f"interleaved repeats (medians: {med['bare'] / med['full']:.3f})")


if __name__ == "__main__":
    main()
