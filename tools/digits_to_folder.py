"""Write scikit-learn's bundled handwritten digits as a class-per-folder image tree: real images,
offline, in the layout your own data comes in (README, "Your own data").

    python tools/digits_to_folder.py /tmp/digits_tree            # /tmp/digits_tree/<digit>/<i>.png
    python tools/make_lt_split.py /tmp/digits_tree --imb-factor 0.05 --out /tmp/s
    python tools/digits_to_folder.py /tmp/digits_folder --test-per-class 50   # train/ and test/

Each 8 x 8 image (16 grey levels) is scaled to ``--size`` pixels (nearest neighbour) and saved
as an RGB PNG under ``OUT/<digit>/<index>.png`` (index: its row in ``load_digits``); with
``--test-per-class N``, N images of each digit (numpy seed 0) go to ``OUT/test/<digit>/`` and
the rest to ``OUT/train/<digit>/``: the layout of ``dataset: folder``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np
from PIL import Image

from utils.errors import UserError, exit_on_user_error


def write_tree(out: str, size: int = 32, test_per_class: int = 0) -> int:
    """The digits under ``out/<digit>/`` (or ``out/{train,test}/<digit>/``, see the module
    docstring); returns the number of images written."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    if os.path.exists(out) and os.listdir(out):
        raise UserError(f"{out}: not empty; give a new folder")
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    split = np.full(len(pixels), "train" if test_per_class else "")
    rng = np.random.RandomState(0)
    for c in range(10):
        idx = np.flatnonzero(digits.target == c)
        if test_per_class:
            split[rng.choice(idx, min(test_per_class, idx.size - 1), replace=False)] = "test"
    for i, (img, label) in enumerate(zip(pixels, digits.target)):
        folder = os.path.join(out, split[i], str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.NEAREST).convert("RGB").save(
            os.path.join(folder, f"{i:04d}.png"))
    return len(pixels)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="The bundled digits as a class-per-folder tree.")
    p.add_argument("out", metavar="OUT", help="new folder for <digit>/<index>.png")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--test-per-class", type=int, default=0, metavar="N",
                   help="hold out N images per digit into OUT/test/ (default 0: a flat tree)")
    args = p.parse_args(argv)
    with exit_on_user_error("digits_to_folder.py"):
        n = write_tree(args.out, args.size, args.test_per_class)
        print(f"{n} images written under {args.out}/<digit>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
