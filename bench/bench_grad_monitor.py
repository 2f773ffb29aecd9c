"""Vectorised attraction / repulsion monitor vs the published per-pair Python loop.

    python bench/bench_grad_monitor.py

Per training batch: logits, fc inputs h and ARB-Loss (batch counts). Compared:
* monitor: GradBalanceMonitor.update (coefficients by autograd + attraction / repulsion norms),
* pair table: analysis.grad_monitor.pair_norms, all C x C component norms without a loop,
* loop: for every row i and class j, the norm of sum over class-j samples of G_ni h_n
  (the published code's C x C loop, here with the coefficients given). When C^2 iterations
  take too long, only the first rows are timed and the time is scaled by C / rows
  (every row costs the same: C masked sums); the table says so.
"""
from __future__ import annotations

import time

import torch
from _common import header, ms, pick_device, sync, table, timeit

from analysis.grad_monitor import GradBalanceMonitor, coefficients, pair_norms
from methods import ARBLoss

# (classes, batch, feature dim): CIFAR-10 / CIFAR-100 with ResNet-32, ImageNet-LT with
# ResNet-50 (one GPU's share of the 1024 batch on 4 GPUs)
CASES = [(10, 128, 64), (100, 128, 64), (1000, 256, 2048)]


def loop_monitor(h, G, y, num_classes: int, rows: int):
    """The published double loop over (row i, source class j) for the first ``rows`` rows."""
    attract = torch.zeros(rows, device=h.device)
    repulse = torch.zeros(rows, device=h.device)
    for i in range(rows):
        rep = torch.zeros(h.shape[1], device=h.device)
        for j in range(num_classes):
            mask = y == j
            comp = (G[mask, i][:, None] * h[mask]).sum(0)
            if i == j:
                attract[i] = comp.norm()
            else:
                rep = rep + comp
        repulse[i] = rep.norm()
    return attract, repulse


def main() -> None:
    device = pick_device()
    header("gradient attraction / repulsion monitor", device)
    g = torch.Generator().manual_seed(0)
    rows_out = []
    crit = ARBLoss()
    for c, b, d in CASES:
        counts = torch.tensor([0.01 ** (i / (c - 1)) for i in range(c)])
        y = torch.multinomial(counts, b, replacement=True, generator=g).to(device)
        z = torch.randn(b, c, generator=g).to(device)
        h = torch.relu(torch.randn(b, d, generator=g)).to(device)
        mon = GradBalanceMonitor(c, 1, {"many": (0, c // 3), "medium": (c // 3, 2 * c // 3),
                                        "few": (2 * c // 3, c)})
        t = timeit({"monitor": lambda: mon.update(z, h, crit, y),
                    "pairs": lambda: pair_norms(h, coefficients(z, crit, y), y)},
                   device, repeats=10 if c < 1000 or device.type == "cuda" else 4, warmup=2)
        G = coefficients(z, crit, y)
        # time the loop on a few rows first to decide how many it can afford
        sync(device)
        t0 = time.perf_counter()
        loop_monitor(h, G, y, c, 1)
        sync(device)
        per_row = time.perf_counter() - t0
        rows = max(1, min(c, int(10.0 / max(per_row, 1e-9))))  # about 10 s at most
        sync(device)
        t0 = time.perf_counter()
        loop_monitor(h, G, y, c, rows)
        sync(device)
        loop_t = (time.perf_counter() - t0) * c / rows
        how = "measured" if rows == c else f"extrapolated from {rows} of {c} rows"
        rows_out.append([c, b, d, ms(t["monitor"]), ms(t["pairs"]), f"{loop_t:.3g} s", how,
                         f"{loop_t / t['monitor']:,.0f}x"])
    table(["C", "B", "d", "monitor ms", "pair table ms", "loop", "loop timing",
           "loop / monitor"], rows_out)


if __name__ == "__main__":
    main()
