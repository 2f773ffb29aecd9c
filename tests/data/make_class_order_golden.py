"""Make the golden class-order fixtures with numpy 1.24.4. Run by hand, never by the suite.

    python3.11 -m venv /tmp/np124 && /tmp/np124/bin/pip install numpy==1.24.4
    /tmp/np124/bin/python tests/data/make_class_order_golden.py --places-list LIST

LIST is the published Places-LT training list (MiSLAS or ARB-Loss repository,
``datasets/data_txt/Places_LT_train.txt``: 62,500 lines, git blob
1d608b558c25c271da75c06f1e5e3625a4ebcb79). Writes, next to this script:

* ``class_order_golden.npz``: many count vectors (``counts`` concatenated, cut at
  ``offsets``; ``names`` says how each was made) and numpy 1.24's ``np.argsort(-counts)`` of
  each (``orders``, concatenated the same way). Long-tailed vectors with many ties, a few
  distinct values only, all equal, lengths around the insertion-sort cutoff (16 elements), and
  adversarial vectors that drive the introsort past its depth limit into its heap sort, with
  ties in the heap-sorted parts (``deep_*``).
* ``places_lt_class_order.json``: the 365 per-class training counts of the published list and
  numpy 1.24's ``np.argsort(-counts)`` of them, computed the published way.

numpy 1.24 has no SIMD argsort (AVX-512 argsort came with 1.25), so these are the scalar
introsort's results on any CPU. The adversarial inputs are found with McIlroy's "killer
adversary" (Software: Practice and Experience 29(4), 1999) run against the port in
datasets/class_order.py; numpy 1.24 then sorts them for real, so a port bug cannot hide.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_port():
    """datasets/class_order.py by file path (the datasets package needs torch)."""
    spec = importlib.util.spec_from_file_location(
        "class_order_port", os.path.join(ROOT, "datasets", "class_order.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adversarial_counts(port, n: int, heap_levels: int, rng) -> np.ndarray:
    """Counts whose negation the introsort partitions badly, until its depth limit hands
    parts to the heap sort (the shortest such length is 37).

    McIlroy's adversary: every element starts as "gas" (value unknown, larger than every
    fixed value); when two gas elements meet, one is fixed to the next smallest value. So gas
    elements have only ever been found larger than fixed ones, and when the heap sort starts
    any values above the fixed ones are consistent with the partitions so far: with
    ``heap_levels`` k > 0 each gas element gets one of k values at random (k = 1: one block
    of ties), so the heap sort sees many ties; with k = 0 the adversary keeps fixing values
    (almost all distinct).
    """
    state = {"next": 0, "candidate": None}

    class Gas:
        __slots__ = ("value",)

        def __init__(self):
            self.value = None

        def __lt__(self, other):
            if self.value is None and other.value is None:
                fix = self if state["candidate"] is self else other
                fix.value = state["next"]
                state["next"] += 1
            if self.value is None:
                state["candidate"] = self
            elif other.value is None:
                state["candidate"] = other
            if self.value is None:
                return False
            if other.value is None:
                return True
            return self.value < other.value

    heapsort = port._aheapsort
    heap_calls = []

    def start_heap(*args):
        if heap_levels and not heap_calls:
            for g in items:
                if g.value is None:
                    g.value = state["next"] + int(rng.integers(heap_levels))
        heap_calls.append(args[-1])
        heapsort(*args)

    items = [Gas() for _ in range(n)]
    port._aheapsort = start_heap
    try:
        port._aquicksort(items)
    finally:
        port._aheapsort = heapsort
    if not heap_calls:
        raise RuntimeError(f"length {n}: the adversary did not reach the heap sort")
    values = np.array([state["next"] if g.value is None else g.value for g in items])
    return (values.max() - values).astype(np.int64)  # argsort(-counts) sees `values`


def long_tailed(rng, n: int, n_max: int, n_min: int, noise: float) -> np.ndarray:
    """Exponential profile from n_max to n_min over a random id order (as ImageNet-LT,
    iNaturalist and Places-LT), optionally jittered; small counts repeat a lot."""
    profile = n_max * (n_min / n_max) ** (np.arange(n) / max(n - 1, 1))
    profile = profile * np.exp(rng.normal(0, noise, n))
    counts = np.clip(np.floor(profile), n_min, n_max).astype(np.int64)
    return counts[rng.permutation(n)]


def vectors(port):
    rng = np.random.default_rng(20240601)
    out = []
    for n in (2, 3, 10, 15, 16, 17, 18, 19, 20, 24, 31, 32, 33, 34, 47, 64, 65, 100):
        out.append((f"few_values_{n}", rng.integers(0, 3, n)))
        out.append((f"long_tail_{n}", long_tailed(rng, n, 50, 1, 0.3)))
    for n in (17, 100, 1000, 8142):
        out.append((f"all_equal_{n}", np.full(n, 7)))
        out.append((f"two_values_{n}", rng.integers(0, 2, n)))
        out.append((f"ascending_ties_{n}", np.sort(rng.integers(0, n // 8 + 1, n))))
        out.append((f"descending_ties_{n}", np.sort(rng.integers(0, n // 8 + 1, n))[::-1]))
    for n, n_max, n_min in ((365, 4980, 5), (1000, 1280, 5), (8142, 1000, 2),
                            (100, 500, 5), (10, 5000, 50), (200, 100, 1), (2000, 300, 2)):
        for noise in (0.0, 0.2):
            out.append((f"long_tail_{n}_{n_max}_{n_min}_{noise}",
                        long_tailed(rng, n, n_max, n_min, noise)))
    for n in (50, 500, 3000):
        out.append((f"random_{n}", rng.integers(0, 20, n)))
    for n in (37, 40, 100, 365, 1000, 8142):
        out.append((f"deep_ties_{n}", adversarial_counts(port, n, 1, rng)))
        out.append((f"deep_few_{n}", adversarial_counts(port, n, 3, rng)))
    for n in (37, 1000, 8142):
        out.append((f"deep_distinct_{n}", adversarial_counts(port, n, 0, rng)))
    return [(name, np.ascontiguousarray(c, dtype=np.int64)) for name, c in out]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places-list", required=True,
                        help="published datasets/data_txt/Places_LT_train.txt")
    args = parser.parse_args(argv)
    if not np.__version__.startswith("1.24."):
        sys.exit(f"needs numpy 1.24.x (the golden outputs are its argsort); this is "
                 f"{np.__version__}")
    port = load_port()

    names, counts, orders, offsets = [], [], [], [0]
    for name, c in vectors(port):
        order = np.argsort(-c)  # numpy 1.24, default kind: the published call
        if not np.array_equal(order, port.numpy124_argsort(-c)):
            print(f"note: the port disagrees with numpy 1.24 on {name}")
        names.append(name)
        counts.append(c)
        orders.append(order)
        offsets.append(offsets[-1] + len(c))
    np.savez_compressed(os.path.join(HERE, "class_order_golden.npz"),
                        names=np.array(names), offsets=np.array(offsets, dtype=np.int64),
                        counts=np.concatenate(counts).astype(np.int32),
                        orders=np.concatenate(orders).astype(np.int16),
                        numpy_version=np.array(np.__version__))

    with open(args.places_list, "rb") as f:
        raw = f.read()
    # the published parsing: the second field of each line is the label
    targets = [int(line.split()[1]) for line in raw.decode().splitlines()]
    cls_num_list_old = [np.sum(np.array(targets) == i) for i in range(365)]
    order = np.argsort(-np.array(cls_num_list_old))  # the published call
    blob = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
    with open(os.path.join(HERE, "places_lt_class_order.json"), "w") as f:
        json.dump({"source": "MiSLAS / ARB-Loss datasets/data_txt/Places_LT_train.txt",
                   "git_blob": blob, "lines": len(targets), "numpy_version": np.__version__,
                   "counts": [int(c) for c in cls_num_list_old],
                   "numpy_1_24_order": order.tolist()}, f)
        f.write("\n")
    print(f"{len(names)} vectors, {offsets[-1]} values; Places-LT blob {blob}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
