"""Image-list data sets: ImageNet-LT, iNaturalist 2018 and Places-LT with one class.

Each split is a text file with one ``<relative image path> <label>`` per line (the path may
contain spaces: the label is the last field); image paths are relative to ``data_path``. The
list files are looked for in ``data_path`` first, then where the published code reads them
(see :data:`LIST_SPECS`). Class ids are remapped so that 0 is the most frequent training class
(descending count; ties as the published code broke them, or by original id with
``class_order: stable``, see datasets/class_order.py) and the test list uses the same map.
Parsing, counting and remapping are vectorised with numpy (no Python object per line, no
per-class scan; see bench/bench_imagelist_index.py for the 437,513-line iNaturalist size).
Building a bundle reads only the list files; images are opened in ``__getitem__``.
"""
from __future__ import annotations

import codecs
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, NoReturn, Optional, Sequence, Tuple

import numpy as np
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError

from datasets.class_order import class_order
from datasets.common import DataBundle, SeededImageDataset, policy_augmentation
from utils.errors import DataError, first_line

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MiSLAS and ARB-Loss datasets/ina2018.py normalise iNaturalist 2018 with its own statistics
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)


class ListSpec(NamedTuple):
    """One image-list data set: name, default list files, normalisation, and the folders
    (relative to the working directory) where the published code reads the lists."""

    title: str
    train_list: str
    test_list: str
    val_list: str  # '' where the published data set has no validation list apart from test
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    published_dirs: Tuple[str, ...]


# Published list locations: MiSLAS reads every list from ./datasets/data_txt/; the ARB-Loss
# fork reads ImageNet-LT's from data_path, iNaturalist's from ./data/iNaturelist2018/ (sic)
# and Places-LT's from ./data/Places/Places-LT/ (datasets/{imagenet,ina2018,places}.py).
LIST_SPECS: Dict[str, ListSpec] = {
    "imagenet": ListSpec("ImageNet-LT", "ImageNet_LT_train.txt", "ImageNet_LT_test.txt",
                         "ImageNet_LT_val.txt", IMAGENET_MEAN, IMAGENET_STD,
                         ("datasets/data_txt",)),
    # iNaturalist 2018's "val" list is its test set: there is no separate validation list
    "ina2018": ListSpec("iNaturalist 2018", "iNaturalist18_train.txt", "iNaturalist18_val.txt",
                        "", INAT_MEAN, INAT_STD, ("datasets/data_txt", "data/iNaturelist2018")),
    "places": ListSpec("Places-LT", "Places_LT_train.txt", "Places_LT_test.txt",
                       "Places_LT_val.txt", IMAGENET_MEAN, IMAGENET_STD,
                       ("datasets/data_txt", "data/Places/Places-LT")),
    # any data set in this format: train_list / test_list (required) and val_list name the files
    "imagelist": ListSpec("image list", "", "", "", IMAGENET_MEAN, IMAGENET_STD, ()),
}


class PathTable:
    """Relative image paths stored as slices of one byte buffer.

    No Python object per path: building it for 437k lines costs a few numpy passes, and
    forked DataLoader workers share the buffer copy-on-write instead of touching (and so
    copying) the pages of a list of strings.
    """

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
        self.buf, self.starts, self.ends = buf, starts, ends

    @classmethod
    def from_strings(cls, paths: Sequence[str]) -> "PathTable":
        """A table of the given paths (small lists, tests)."""
        encoded = [os.fsencode(p) for p in paths]
        ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        starts = ends - np.array([len(b) for b in encoded], dtype=np.int64)
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), starts, ends)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> str:
        return os.fsdecode(self.buf[self.starts[i]:self.ends[i]].tobytes())


@dataclass
class ImageList:
    """One parsed list file: relative image paths and labels (ids as written in the file),
    with the 1-based line number of each entry for error messages."""

    path: str
    images: PathTable
    labels: np.ndarray  # int64
    lines: np.ndarray  # int64


def _show(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")[:120]


_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True  # the bytes bytes.split() treats as whitespace
_LABEL = re.compile(rb"[-+]?[0-9]+")


def _parse_vectorised(buf: np.ndarray):
    """Split every line of ``buf`` (ending with a newline) into path and label with numpy.

    Works on the positions of whitespace bytes only (about three per line): a line's label is
    the token before its trailing whitespace run, its path runs from the first non-blank byte
    to the whitespace before the label (so a path may contain spaces). Returns
    ``(path_start, path_end, labels, line_numbers)`` of the non-blank lines, or None when some
    non-blank line is not ``<path> <integer>`` -- the per-line parser then names it.
    """
    ws = np.flatnonzero(_WS[buf])
    is_nl = buf[ws] == 10
    n = ws.size
    idx = np.arange(n)
    # runs of adjacent whitespace bytes, cut after each newline so no run spans two lines
    first = np.ones(n, dtype=bool)
    first[1:] = (ws[1:] != ws[:-1] + 1) | is_nl[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    run_first = np.maximum.accumulate(np.where(first, idx, 0))
    run_last = np.minimum.accumulate(np.where(last, idx, n)[::-1])[::-1]

    nl = np.flatnonzero(is_nl)  # whitespace index of each line's newline
    line_start = np.zeros(nl.size, dtype=np.int64)
    line_start[1:] = ws[nl[:-1]] + 1
    first_ws = np.zeros(nl.size, dtype=np.int64)  # the line's first whitespace byte
    first_ws[1:] = nl[:-1] + 1
    trail = run_first[nl]
    label_end = ws[trail]
    content = label_end > line_start  # not a blank line
    sep = np.maximum(trail - 1, 0)  # last whitespace before the trailing run
    has_sep = (trail > 0) & (ws[sep] >= line_start)
    label_start = ws[sep] + 1
    path_end = ws[run_first[sep]]
    path_start = np.where(ws[first_ws] == line_start, ws[run_last[first_ws]] + 1, line_start)
    if not np.all(has_sep[content] & (path_end > path_start)[content]):
        return None
    keep = np.flatnonzero(content)
    ps, pe, ls, le = path_start[keep], path_end[keep], label_start[keep], label_end[keep]

    # integer labels, one numpy pass per digit position
    head = buf[ls]
    neg = head == ord("-")
    digits_from = ls + (neg | (head == ord("+")))
    n_digits = le - digits_from
    if keep.size == 0 or n_digits.min() < 1 or n_digits.max() > 18:  # 18 digits fit int64
        return None
    labels = np.zeros(keep.size, dtype=np.int64)
    for d in range(int(n_digits.max())):
        on = d < n_digits
        digit = buf[np.where(on, digits_from + d, digits_from)].astype(np.int64) - ord("0")
        if np.any(((digit < 0) | (digit > 9)) & on):
            return None
        labels = np.where(on, labels * 10 + digit, labels)
    return ps, pe, np.where(neg, -labels, labels), keep.astype(np.int64) + 1


def _raise_first_bad_line(raw: bytes, path: str) -> NoReturn:
    """Per-line check, run only after the vectorised parser refused the file."""
    for i, line in enumerate(raw.split(b"\n")):
        parts = line.rsplit(None, 1)
        where = f"{path}, line {i + 1}"
        if len(parts) == 1:
            raise DataError(f"{where}: malformed line {_show(parts[0])!r}; expected "
                            "'<relative image path> <label>'")
        if len(parts) == 2 and not _LABEL.fullmatch(parts[1]):
            raise DataError(f"{where}: label {_show(parts[1])!r} is not an integer; expected "
                            "'<relative image path> <label>'")
        if len(parts) == 2 and len(parts[1].lstrip(b"+-")) > 18:
            raise DataError(f"{where}: label {_show(parts[1])} is far outside the class range")
    raise DataError(f"{path}: no '<relative image path> <label>' lines found")


def read_image_list(path: str, what: str = "list file") -> ImageList:
    """Parse the ``<relative path> <label>`` lines of ``path``; blank lines are skipped.

    Vectorised (see :func:`_parse_vectorised`); a DataError names the file and the first
    malformed line. A UTF-8 byte-order mark at the start is dropped (editors on Windows write
    one; it would otherwise become part of the first image path).
    """
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path}; expected a text file of "
                        "'<relative image path> <label>' lines (set data_path to the data set "
                        "folder, or train_list / test_list)")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    buf = np.frombuffer(raw if raw.endswith(b"\n") else raw + b"\n", dtype=np.uint8)
    parsed = _parse_vectorised(buf)
    if parsed is None:
        _raise_first_bad_line(raw, path)
    ps, pe, labels, lines = parsed
    return ImageList(path=path, images=PathTable(buf, ps, pe), labels=labels, lines=lines)


def check_labels(lst: ImageList, num_classes: int) -> None:
    """Every label lies in [0, num_classes); else a DataError naming the first bad line."""
    bad = np.flatnonzero((lst.labels < 0) | (lst.labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{lst.path}, line {int(lst.lines[i])}: label {int(lst.labels[i])} "
                        f"outside [0, {num_classes}) (num_classes is {num_classes})")


def frequency_class_map(labels: np.ndarray, num_classes: int, mode: str = "reference"
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """``(new_id_of_old, counts_in_new_order)``: new id 0 is the most frequent class; ties as
    :func:`datasets.class_order.class_order` breaks them in ``mode`` ('reference': as the
    published code, 'stable': by original id)."""
    counts = np.bincount(labels, minlength=num_classes)
    order = class_order(counts, mode)  # order[new] = old
    new_id_of_old = np.empty(num_classes, dtype=np.int64)
    new_id_of_old[order] = np.arange(num_classes)
    return new_id_of_old, counts[order]


def locate_list(name: str, data_path: str, spec: ListSpec, what: str) -> str:
    """The first existing file among ``data_path/name`` and ``name`` in each of the
    published folders of ``spec`` (relative to the working directory, as the published code
    reads them); an absolute ``name`` is taken as it is. A DataError lists every place tried.
    """
    if os.path.isabs(name):
        tried = [name]
    else:
        tried = [os.path.join(data_path, name)]
        for folder in spec.published_dirs:
            path = os.path.abspath(os.path.join(folder, name))
            if path not in map(os.path.abspath, tried):  # data_path may be that folder
                tried.append(path)
    for path in tried:
        if os.path.isfile(path):
            return path
    raise DataError(f"{what} {name!r} not found; looked in: {', '.join(tried)}; expected a "
                    "text file of '<relative image path> <label>' lines (put it in data_path, "
                    "or set train_list / test_list)")


class ImageListDataset(SeededImageDataset):
    """Images named by relative paths under ``root``, with integer targets (items as in
    :class:`datasets.common.SeededImageDataset`)."""

    def __init__(self, root: str, images: Sequence[str], targets: np.ndarray,
                 transform: Optional[Callable] = None, list_file: str = ""):
        self.root = root
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.list_file = list_file

    def path(self, index: int) -> str:
        """Full path of image ``index``."""
        return os.path.join(self.root, self.images[index])

    def load(self, index: int) -> Image.Image:
        """Image ``index`` as RGB; a missing or unreadable file is a DataError naming it."""
        path = self.path(index)
        try:
            with open(path, "rb") as f:
                img = Image.open(f)
                return img.convert("RGB")
        except OSError as e:  # PIL's UnidentifiedImageError, truncated files, permissions
            raise self.image_error(path, e) from None

    def image_error(self, path: str, e: Exception) -> DataError:
        """The one-line DataError for image ``path`` that could not be read because of ``e``
        (also raised by the fast path's decoders)."""
        src = f" (listed in {self.list_file})" if self.list_file else ""
        if isinstance(e, FileNotFoundError):
            return DataError(f"image file not found: {path}{src}")
        if isinstance(e, UnidentifiedImageError):  # its text quotes a Python object's repr
            why = "not an image file (PIL cannot identify its format)"
        else:
            why = first_line(e)
        return DataError(f"cannot read image {path}{src}: {why}")


# The training augmentation of the reference recipe (MiSLAS datasets/imagenet.py and its
# siblings): RandomResizedCrop with torchvision's default scale and ratio, a horizontal flip,
# ColorJitter(0.4, 0.4, 0.4, 0). The fast image-list path (datasets/imagelist_pipeline.py,
# TrainRecipe.reference) draws from these same constants.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_P = 0.5
JITTER = 0.4  # brightness, contrast and saturation; no hue


def transforms(train: bool, image_size: int = 224, resize_size: int = 256,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
               policy: Optional[Callable] = None):
    """Reference transforms: train RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0);
    test Resize + CenterCrop; then normalisation by the data set's mean / std. ``policy``
    (AutoAugment / RandAugment, :func:`datasets.common.policy_augmentation`) goes after the
    ColorJitter, before ToTensor, where PaCo (Cui et al., ICCV 2021) puts RandAugment in its
    ImageNet-LT recipe of the same crop / flip / jitter."""
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if train:
        extra = [policy] if policy is not None else []
        return T.Compose([T.RandomResizedCrop(image_size, scale=CROP_SCALE, ratio=CROP_RATIO),
                          T.RandomHorizontalFlip(FLIP_P),
                          T.ColorJitter(JITTER, JITTER, JITTER, 0), *extra] + norm)
    return T.Compose([T.Resize(resize_size), T.CenterCrop(image_size)] + norm)


def _val_list(name: str, root: str, spec: ListSpec) -> Optional[str]:
    """The validation list (only eval.py's tau sweep reads it): a ``val_list`` that is given
    must exist; the data set's default is used when it is found, else there is none."""
    if name:
        return locate_list(name, root, spec, f"{spec.title} validation list (key 'val_list')")
    if not spec.val_list:
        return None
    try:
        return locate_list(spec.val_list, root, spec, f"{spec.title} validation list")
    except DataError:
        return None


def build_imagelist(cfg, dataset: str) -> DataBundle:
    """ImageNet-LT / iNaturalist 2018 / Places-LT / any ``imagelist``: the list files from
    ``cfg.data_path`` or the published folders (:func:`locate_list`), images under
    ``cfg.data_path``."""
    spec = LIST_SPECS[dataset]
    root = cfg.data_path
    train_file = locate_list(cfg.train_list or spec.train_list, root, spec,
                             f"{spec.title} training list")
    test_file = locate_list(cfg.test_list or spec.test_list, root, spec,
                            f"{spec.title} test list")
    val_file = _val_list(cfg.val_list, root, spec)
    train = read_image_list(train_file, f"{spec.title} training list")
    test = read_image_list(test_file, f"{spec.title} test list")
    val = read_image_list(val_file, f"{spec.title} validation list") if val_file else None
    # num_classes None (dataset imagelist without the key): the training list's largest id + 1
    num_classes = cfg.num_classes or int(train.labels.max(initial=-1)) + 1
    # One stat (no image is opened) catches a data_path that holds the lists but not the images.
    first = os.path.join(root, train.images[0]) if len(train.images) else ""
    if first and not os.path.isfile(first):
        raise DataError(f"{train_file}, line {int(train.lines[0])}: image file not found: "
                        f"{first} (image paths in the lists are relative to data_path)")
    return lists_bundle(cfg, spec.title, train, test, val, num_classes, spec.mean, spec.std)


def lists_bundle(cfg, title: str, train: ImageList, test: ImageList, val: Optional[ImageList],
                 num_classes: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, extra: Optional[dict] = None
                 ) -> DataBundle:
    """The bundle of parsed lists (image paths relative to ``cfg.data_path``): labels checked
    against ``num_classes``, classes remapped by training frequency (``cfg.class_order``), the
    reference transforms of ``cfg.image_size`` / ``cfg.resize_size``; ``extra`` joins the
    bundle's ``extra`` (mean, std, ``class_ids``)."""
    root, mode = cfg.data_path, cfg.class_order  # one of MODES: config.validate
    for lst in (train, test):
        if not len(lst.labels):
            raise DataError(f"{lst.path}: no images listed")
    image_size, resize_size = int(cfg.image_size), int(cfg.resize_size)  # >= 1: validated
    check_labels(train, num_classes)
    new_id_of_old, counts = frequency_class_map(train.labels, num_classes, mode)
    if counts[-1] == 0:
        # Labels are in range, so fewer distinct classes than num_classes is the only case.
        missing = np.flatnonzero(np.bincount(train.labels, minlength=num_classes) == 0)
        shown = ", ".join(map(str, missing[:10].tolist())) + (" ..." if missing.size > 10 else "")
        raise DataError(f"{train.path}: {num_classes - missing.size} distinct classes but "
                        f"num_classes is {num_classes} (class ids without training images: "
                        f"{shown})")
    check_labels(test, num_classes)
    if val is not None:
        check_labels(val, num_classes)
    y_train = new_id_of_old[train.labels]
    y_test = new_id_of_old[test.labels]
    log.info("%s: %d training images, %d test images, %d classes (%d..%d per class, class "
             "order %s); %s, %s", title, len(y_train), len(y_test), num_classes,
             counts[0], counts[-1], mode, train.path, test.path)
    if val is not None:
        log.info("%s: %d validation images (%s)", title, len(val.labels), val.path)

    policy = policy_augmentation(cfg, T.AutoAugmentPolicy.IMAGENET)

    def make(lst: ImageList, y: np.ndarray, train_tf: bool) -> ImageListDataset:
        tf = transforms(train_tf, image_size, resize_size, mean, std,
                        policy if train_tf else None)
        return ImageListDataset(root, lst.images, y, tf, lst.path)

    return DataBundle(
        train=make(train, y_train, True), test=make(test, y_test, False),
        cls_num_list=counts.tolist(), name=title, in_channels=3,
        train_eval=make(train, y_train, False),
        val=None if val is None else make(val, new_id_of_old[val.labels], False),
        extra={"mean": mean, "std": std,
               # original label of each remapped class: class_ids[new] = id in the list files
               "class_ids": np.argsort(new_id_of_old).tolist(), **(extra or {})})
