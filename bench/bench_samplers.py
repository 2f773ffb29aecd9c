"""Per-epoch cost of the training samplers on the label sets of the long-tailed benchmarks.

    python bench/bench_samplers.py [--repeat 3]

For CIFAR-100-LT (imbalance 100), ImageNet-LT and iNaturalist 2018 sized label sets
(power-law class sizes with the published number of classes and largest class, about the
published total; the exact per-class counts do not matter for the cost), times per sampler
and epoch: drawing the epoch's global order (``global_order``), this rank's index list
(``indices``, what the device / image-list pipelines read; ``instance`` draws its
permutation there), and iterating ``(index, seed)`` items (what a DataLoader reads), on one
rank. The class-aware epoch is max_count * num_classes samples (MiSLAS), far longer than
the others on iNaturalist.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from datasets.samplers import SAMPLERS, build_sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, images, classes, largest class, smallest class)
SETS = [("CIFAR-100-LT (100)", 10847, 100, 500, 5),
        ("ImageNet-LT", 115846, 1000, 1280, 5),
        ("iNaturalist 2018", 437513, 8142, 1000, 2)]


def labels(n: int, c: int, n_max: int, n_min: int) -> np.ndarray:
    """Power-law class sizes max(n_max (k + 1)^-a, n_min), k = 0..c-1, with the exponent a
    chosen (bisection) so that they sum to about n images."""
    def counts(a: float) -> np.ndarray:
        return np.maximum(np.round(n_max * (np.arange(c) + 1.0) ** -a), n_min).astype(np.int64)
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counts(mid).sum() > n else (lo, mid)
    return np.random.default_rng(0).permutation(np.repeat(np.arange(c), counts(hi)))


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"best of {args.repeat}")
    for name, n, c, n_max, n_min in SETS:
        t = labels(n, c, n_max, n_min)
        sizes = np.bincount(t)
        print(f"\n{name}: {t.size:,} images, {c} classes, {sizes.max()}..{sizes.min()} per class")
        print(f"{'sampler':<15} {'epoch':>10} {'order s':>8} {'indices s':>9} {'iterate s':>9}")
        for kind in SAMPLERS:
            s = build_sampler(kind, t, seed=0, num_epochs=10)
            epoch = [0]

            def order():
                epoch[0] += 1  # a new epoch each time: no cached order
                s.set_epoch(epoch[0])
                if hasattr(s, "global_order"):
                    s.global_order()
            t_order = best_of(args.repeat, order)
            t_indices = best_of(args.repeat, s.indices)
            t_iter = best_of(1, lambda: sum(1 for _ in s))
            print(f"{kind:<15} {len(s):>10,} {t_order:>8.3f} {t_indices:>9.3f} {t_iter:>9.2f}")


if __name__ == "__main__":
    main()
