"""Indexing time of an iNaturalist-2018-sized image list: ours vs a per-class scan.

    python bench/bench_imagelist_index.py [--lines 437513] [--classes 8142]

Writes a long-tailed list of ``--lines`` ``<relative path> <label>`` lines over ``--classes``
classes (shuffled, labels not in frequency order) into a temporary folder, then times

* ours: ``datasets.imagelist.build_imagelist`` on it -- parsing, validation, per-class counts,
  the frequency-ordered class map and the remapped targets (no image is opened);
* per-class scans of the labels, the O(N x C) style of the reference code: counting only,
  parsing not included. A scan that would take too long is timed on a subset of the classes
  and extrapolated linearly (every class costs one full pass over the labels); the table
  says which rows were extrapolated.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def long_tail_counts(n: int, c: int, n_max: int = 1000, n_min: int = 2) -> np.ndarray:
    """``c`` exponentially decaying class sizes from ``n_max`` to ``n_min``, summing to ``n``."""
    base = n_max * (n_min / n_max) ** (np.arange(c) / (c - 1))
    counts = np.maximum(np.floor(base * n / base.sum()).astype(np.int64), n_min)
    counts[0] += n - counts.sum()  # make the total exact
    return counts


def write_list(path: str, counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Write a list with ``counts[k]`` images of the k-th class; returns its labels."""
    rng = np.random.RandomState(seed)
    c = len(counts)
    n = int(counts.sum())
    perm = rng.permutation(c)  # original ids are not in frequency order
    labels = np.repeat(perm, counts)
    rng.shuffle(labels)
    names = rng.randint(0, 2 ** 62, size=n, dtype=np.int64)
    with open(path, "w") as f:
        f.write("".join(f"train_val2018/Plantae/{y}/{h:016x}.jpg {y}\n"
                        for y, h in zip(labels.tolist(), names.tolist())))
    return labels


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def scan_time(fn_for_class, c: int, budget_s: float):
    """Seconds for all ``c`` classes; classes are timed until ``budget_s`` is spent, then the
    rest is extrapolated. Returns (seconds, classes actually timed)."""
    t0 = time.perf_counter()
    done = 0
    while done < c:
        fn_for_class(done)
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    spent = time.perf_counter() - t0
    return spent * c / done, done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=437_513)
    p.add_argument("--classes", type=int, default=8_142)
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds each per-class scan may run before extrapolating")
    args = p.parse_args(argv)

    from config import get_cfg_defaults
    from datasets.imagelist import build_imagelist

    n, c = args.lines, args.classes
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        labels = write_list(os.path.join(root, "iNaturalist18_train.txt"),
                            long_tail_counts(n, c))
        # the iNaturalist 2018 validation set is balanced: 3 images a class
        write_list(os.path.join(root, "iNaturalist18_val.txt"), np.full(c, 3), seed=1)
        gen_s = time.perf_counter() - t0
        # build_imagelist checks that the first listed image exists (a stat, never opened)
        with open(os.path.join(root, "iNaturalist18_train.txt")) as f:
            first = f.readline().rsplit(None, 1)[0]
        os.makedirs(os.path.dirname(os.path.join(root, first)), exist_ok=True)
        open(os.path.join(root, first), "wb").close()

        cfg = get_cfg_defaults()
        cfg.dataset, cfg.data_path, cfg.num_classes = "ina2018", root, c
        bundle = None

        def ours():
            nonlocal bundle
            bundle = build_imagelist(cfg, "ina2018")

        ours_s = timed(ours, repeat=3)
        assert len(bundle.train) == n and sum(bundle.cls_num_list) == n

        as_list = labels.tolist()
        # reference style: np.sum(np.array(targets) == i) for each class, targets a list
        ref_s, ref_done = scan_time(lambda k: np.sum(np.array(as_list) == k), c, args.budget)
        where_s, where_done = scan_time(lambda k: np.where(labels == k)[0].size, c,
                                        args.budget)
        py_s, py_done = scan_time(lambda k: sum(1 for v in as_list if v == k), c, args.budget)

    rows = [("ours: build_imagelist (parse + validate + count + map, train+test lists)",
             ours_s, "measured, best of 3")]
    for label, secs, done in (
            ("per-class np.sum(np.array(list) == c)  (reference style)", ref_s, ref_done),
            ("per-class np.where(labels == c)", where_s, where_done),
            ("per-class sum(1 for l in labels if l == c)", py_s, py_done)):
        how = ("measured, all classes" if done == c else
            f"extrapolated from {done} of {c} classes")
        rows.append((label, secs, how))

    print(f"image list: {n:,} lines, {c:,} classes (generated in {gen_s:.1f} s)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print("per-class scans count labels only (parsing excluded); ours includes parsing")
    width = max(len(r[0]) for r in rows)
    print(f"{'method':<{width}}  {'seconds':>10}  {'x ours':>8}  how")
    for label, secs, how in rows:
        print(f"{label:<{width}}  {secs:>10.3f}  {secs / ours_s:>8.1f}  {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
