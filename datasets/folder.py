"""A class-per-folder image tree (torchvision ``ImageFolder`` layout) as a long-tailed data set.

    data_path/train/<class>/<image>      the training split (required)
    data_path/test/<class>/<image>       the test split (``val/`` when there is no ``test/``)
    data_path/val/<class>/<image>        with ``test/`` beside it: the validation split (tau sweep)

As ImageFolder: a class is a sub-folder of ``train/``, its original id the index of its name in
sorted order, its images the files below it (any depth) with an extension ImageFolder accepts
(:data:`IMG_EXTENSIONS`, case-insensitive). The ids are then remapped by training frequency as
for every image-list data set (class 0 the most frequent; ``class_order``), and
``extra['class_names']`` names each remapped class.

``imb_factor`` null keeps the training tree as it is; a number subsamples it to a CIFAR-LT
profile (``imb_type`` exp: n_i = int(n_max * imb^(i / (C - 1))); step: n_max for the first
half of the classes, int(n_max * imb) for the rest), where n_max is the smallest class's size
so that every class can give its share. Which class gets which rank, and which images it keeps,
are fixed by ``seed``. The tree is scanned once, with one header read per image so that an
unreadable file ends the run before anything is created.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from datasets.common import DataBundle, lt_counts
from datasets.imagelist import ImageList, PathTable, lists_bundle
from utils.errors import DataError, first_line

log = logging.getLogger(__name__)

# torchvision.datasets.folder.IMG_EXTENSIONS (matched case-insensitively, as ImageFolder does)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

TEST_SPLITS = ("test", "val")  # the first that exists is the test split


class FolderTree(NamedTuple):
    """The scanned tree: class names (sorted) and one :class:`ImageList` per split found."""

    classes: List[str]
    train: ImageList
    test: ImageList
    val: Optional[ImageList]


def _images_below(folder: str) -> List[str]:
    # ImageFolder's order (torchvision make_dataset): folders sorted by path, files by name
    found = []
    for dirpath, _, filenames in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def class_folders(split_dir: str) -> List[str]:
    """The sub-folder names of ``split_dir``, sorted (ImageFolder's classes)."""
    try:
        return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    except OSError as e:
        raise DataError(f"cannot read folder {split_dir}: {e.strerror or e}") from None


def scan_split(root: str, split: str, classes: Sequence[str]) -> ImageList:
    """Images of ``root/split/<class>/`` for each class (labels = index in ``classes``), paths
    relative to ``root``. A DataError names an empty class folder or a class folder of this
    split that the training split does not have."""
    split_dir = os.path.join(root, split)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in class_folders(split_dir) if c not in index]
    if unknown:
        raise DataError(f"{os.path.join(split_dir, unknown[0])}: class folder {unknown[0]!r} is "
                        f"not in {os.path.join(root, 'train')} (every class needs training "
                        "images)")
    paths, labels = [], []
    for c in classes:
        folder = os.path.join(split_dir, c)
        if not os.path.isdir(folder):
            continue  # a class without test images: allowed (its accuracy is not reported)
        found = _images_below(folder)
        if not found:
            raise DataError(f"{folder}: empty class folder (no file with an image extension: "
                            f"{' '.join(IMG_EXTENSIONS)})")
        paths += [os.path.relpath(p, root) for p in found]
        labels += [index[c]] * len(found)
    if not paths:
        raise DataError(f"{split_dir}: no images (expected {split}/<class>/<image> files with "
                        f"an extension of {' '.join(IMG_EXTENSIONS)})")
    return ImageList(path=split_dir, images=PathTable.from_strings(paths),
                     labels=np.asarray(labels, dtype=np.int64),
                     lines=np.arange(1, len(paths) + 1, dtype=np.int64))


def scan_tree(root: str) -> FolderTree:
    """Scan ``root``'s train / test / val folders (see the module docstring)."""
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"{train_dir}: no such folder; dataset 'folder' expects data_path to "
                        "hold train/<class>/<image> and test/<class>/<image> (or val/)")
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: no class folders (expected train/<class>/<image>)")
    splits = [s for s in TEST_SPLITS if os.path.isdir(os.path.join(root, s))]
    if not splits:
        raise DataError(f"{root}: no test/ or val/ folder beside train/ (the test split, "
                        "<split>/<class>/<image>)")
    train = scan_split(root, "train", classes)
    test = scan_split(root, splits[0], classes)
    val = scan_split(root, "val", classes) if splits == list(TEST_SPLITS) else None
    return FolderTree(classes, train, test, val)


def _header_error(path: str) -> Optional[str]:
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - the header is read by open; size proves it parsed
        return None
    except Exception as e:  # noqa: BLE001 - any reason the file cannot be read is reported
        return f"{path}: not a readable image ({first_line(e)[:160]})"


def check_readable(root: str, lists: Sequence[ImageList], threads: int = 8) -> None:
    """Read every image's header (threads: the work is file I/O); the first file that cannot
    be opened as an image is one DataError line."""
    paths = [os.path.join(root, lst.images[i]) for lst in lists for i in range(len(lst.images))]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for err in pool.map(_header_error, paths, chunksize=64):
            if err:
                raise DataError(err)


def long_tailed_subset(labels: np.ndarray, num_classes: int, imb_factor: float,
                       imb_type: str, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(kept indices, target count of each class)``: a seeded permutation gives each class
    its rank i in the profile (:func:`datasets.common.lt_counts` with n_max = the smallest
    class's size), then a seeded choice keeps that many of its images (original order kept)."""
    rng = np.random.RandomState(seed)
    sizes = np.bincount(labels, minlength=num_classes)
    profile = lt_counts(int(sizes.min()), num_classes, imb_factor, imb_type)
    rank = rng.permutation(num_classes)  # rank[class] = its position in the profile
    target = np.maximum(np.asarray(profile, dtype=np.int64)[rank], 1)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    keep = [np.sort(rng.choice(order[s:s + n], size=t, replace=False))
            for s, n, t in zip(starts, sizes, target)]
    return np.sort(np.concatenate(keep)), target


def subset(lst: ImageList, idx: np.ndarray) -> ImageList:
    """The entries ``idx`` of ``lst``."""
    paths = PathTable(lst.images.buf, lst.images.starts[idx], lst.images.ends[idx])
    return ImageList(lst.path, paths, lst.labels[idx], lst.lines[idx])


def folder_lists(cfg) -> Tuple[List[str], ImageList, ImageList, Optional[ImageList]]:
    """Class names and the training (long-tailed when ``imb_factor`` is set), test and
    validation lists of the tree at ``cfg.data_path``; a bad tree is one DataError line."""
    tree = scan_tree(cfg.data_path)
    c = len(tree.classes)
    given = cfg.num_classes
    if given is not None and given != c:
        raise DataError(f"{os.path.join(cfg.data_path, 'train')}: {c} class folders but "
                        f"num_classes is {given} (leave num_classes out to take the tree's)")
    train = tree.train
    if cfg.imb_factor is not None:
        keep, target = long_tailed_subset(train.labels, c, cfg.imb_factor, cfg.imb_type,
                                          cfg.seed)
        log.info("folder tree: training split subsampled to imb_factor %g (%s profile, seed "
                 "%d): %d of %d images; largest class %d, smallest %d, ratio %.1f",
                 cfg.imb_factor, cfg.imb_type, cfg.seed, keep.size, len(train.labels),
                 target.max(), target.min(), target.max() / target.min())
        train = subset(train, keep)
    else:
        sizes = np.bincount(train.labels, minlength=c)
        log.info("folder tree as it is: %d training images; largest class %d, smallest %d, "
                 "ratio %.1f", len(train.labels), sizes.max(), sizes.min(),
                 sizes.max() / sizes.min())
    check_readable(cfg.data_path, [train, tree.test] + ([tree.val] if tree.val else []))
    return tree.classes, train, tree.test, tree.val


def build_folder(cfg) -> DataBundle:
    """The bundle of the tree at ``cfg.data_path`` (both image-list input paths serve it);
    ``extra['class_names'][k]`` is the folder of remapped class k."""
    classes, train, test, val = folder_lists(cfg)
    bundle = lists_bundle(cfg, f"folder tree {cfg.data_path}", train, test, val, len(classes))
    bundle.extra["class_names"] = [classes[i] for i in bundle.extra["class_ids"]]
    return bundle
