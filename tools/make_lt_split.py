"""Freeze a long-tailed split of a class-per-folder image tree as list files, for a paper.

    python tools/make_lt_split.py ROOT --imb-factor 0.01 --out splits/mine_if100
    python tools/make_lt_split.py ROOT --imb-factor 0.1 --out DIR --profile step --seed 1

ROOT holds ``<class>/<image>`` (ImageFolder's layout and extensions; class id = index of the
folder name in sorted order). ``--test-per-class`` images of every class (a seeded choice)
form the balanced test list; the rest is subsampled to the long tail (datasets/folder.py:
n_i = int(n_max * imb^(i / (C - 1))) for ``exp``, n_max the smallest class's remaining size;
which class gets which count and which images are kept are fixed by ``--seed``). Written to
``--out``: ``train.txt`` and ``test.txt`` (``relative/path label`` lines, paths relative to
ROOT: the format of ImageNet-LT's lists), ``counts.csv`` (class id, folder, train, test) and
``class_sizes.png`` (training images per class, largest first, log scale). Train on it with

    dataset imagelist  data_path ROOT  train_list DIR/train.txt  test_list DIR/test.txt

A bad tree or option is one line on stderr and exit status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import List, Optional

import numpy as np

from datasets.folder import check_readable, class_folders, long_tailed_subset, scan_split, subset
from datasets.imagelist import ImageList
from utils.errors import UserError, exit_on_user_error


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Long-tailed train and balanced test lists from a "
                                            "class-per-folder tree.")
    p.add_argument("root", metavar="ROOT", help="folder of <class>/<image> files")
    p.add_argument("--imb-factor", type=float, required=True,
                   help="smallest / largest training class, in (0, 1]")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the lists and plot")
    p.add_argument("--profile", choices=("exp", "step"), default="exp",
                   help="long-tail profile (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every choice (default 0)")
    p.add_argument("--test-per-class", type=int, default=10, metavar="N",
                   help="held-out test images per class (default %(default)s)")
    return p.parse_args(argv)


def hold_out(lst: ImageList, num_classes: int, per_class: int, seed: int):
    """``(test indices, the rest)``: ``per_class`` images of each class (seeded choice)."""
    rng = np.random.RandomState(seed)
    test = [np.sort(rng.choice(np.flatnonzero(lst.labels == c), per_class, replace=False))
            for c in range(num_classes)]
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return test_idx, np.setdiff1d(np.arange(len(lst.labels)), test_idx)


def write_list(path: str, lst: ImageList) -> None:
    with open(path, "w") as f:
        f.writelines(f"{lst.images[i]} {int(lst.labels[i])}\n" for i in range(len(lst.labels)))


def plot_sizes(path: str, counts: np.ndarray, title: str) -> None:
    """Training images per class, largest first, on a log axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(np.arange(counts.size), np.sort(counts)[::-1], width=1.0, color="#4c72b0")
    ax.set_yscale("log")
    ax.set_xlabel("class (sorted by training images)")
    ax.set_ylabel("training images")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_split(args: argparse.Namespace) -> str:
    """Write the split of ``args`` (see the module docstring); returns a one-line summary."""
    if not 0 < args.imb_factor <= 1:
        raise UserError(f"--imb-factor {args.imb_factor:g}: accepted: a number in (0, 1]")
    if args.test_per_class < 0:
        raise UserError(f"--test-per-class {args.test_per_class}: accepted: an integer >= 0")
    root = args.root
    if not os.path.isdir(root):
        raise UserError(f"{root}: no such folder (expected <class>/<image> files)")
    classes = class_folders(root)
    if len(classes) < 2:
        raise UserError(f"{root}: {len(classes)} class folders; a split needs at least 2")
    pool = scan_split(root, ".", classes)
    c = len(classes)
    sizes = np.bincount(pool.labels, minlength=c)
    if sizes.min() <= args.test_per_class:
        small = classes[int(sizes.argmin())]
        raise UserError(f"{os.path.join(root, small)}: {sizes.min()} images, not more than "
                        f"--test-per-class {args.test_per_class} (training needs some)")
    check_readable(root, [pool])
    test_idx, rest = hold_out(pool, c, args.test_per_class, args.seed)
    train_pool = subset(pool, rest)
    keep, target = long_tailed_subset(train_pool.labels, c, args.imb_factor, args.profile,
                                      args.seed)
    train, test = subset(train_pool, keep), subset(pool, test_idx)
    os.makedirs(args.out, exist_ok=True)
    write_list(os.path.join(args.out, "train.txt"), train)
    write_list(os.path.join(args.out, "test.txt"), test)
    test_counts = np.bincount(test.labels, minlength=c)
    with open(os.path.join(args.out, "counts.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_id", "folder", "train", "test"])
        w.writerows([k, classes[k], int(target[k]), int(test_counts[k])] for k in range(c))
    summary = (f"{c} classes, {len(train.labels)} training images (largest class "
               f"{target.max()}, smallest {target.min()}, ratio {target.max() / target.min():.1f}"
               f"), {len(test.labels)} test images")
    plot_sizes(os.path.join(args.out, "class_sizes.png"), target,
               f"{os.path.basename(os.path.abspath(root))}: imb_factor {args.imb_factor:g} "
               f"({args.profile}, seed {args.seed})")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; exit status 0, or 2 with one line on stderr."""
    with exit_on_user_error("make_lt_split.py"):
        args = parse_args(argv)
        summary = make_split(args)
        print(f"{summary}; written to {args.out}: train.txt test.txt counts.csv "
              "class_sizes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
