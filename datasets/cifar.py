"""Long-tailed CIFAR-10 / CIFAR-100 from torchvision's python-version archives."""
from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torchvision.transforms as T

from datasets.common import (
    ArrayImageDataset,
    DataBundle,
    check_num_classes,
    lt_counts,
    lt_indices,
    policy_augmentation,
)
from utils.errors import DataError

log = logging.getLogger(__name__)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# folder, archive, md5 of the archive, url, training files, test files, label key
_SPECS = {
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a",
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label_key="labels", classes=10),
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85",
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     train=["train"], test=["test"], label_key="fine_labels", classes=100),
}

# Only what a CIFAR batch file needs: numpy arrays inside plain dicts / lists.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Refuses any global beyond numpy array reconstruction: a batch file cannot run code."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name}")


def _parse_batch(f, where: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N x 32 x 32 x 3 uint8) and labels of one batch file read from ``f``."""
    try:
        d = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, OSError, zlib.error) as e:
        raise DataError(f"{where}: not a readable CIFAR python batch file "
                        f"(truncated or corrupt: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a pickled dict with 'data' and '{label_key}'")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise DataError(f"{where}: missing key 'data' or '{label_key}' "
                        f"(found: {', '.join(map(str, d))})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
            or len(labels) != len(data)):
        raise DataError(f"{where}: 'data' must be uint8 N x 3072 with N labels; got "
                        f"{data.dtype} {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_batch(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        return _parse_batch(io.BufferedReader(f), path, label_key)


def _read_archive(archive: str, spec: Dict) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The batch files read straight from the ``.tar.gz`` (one pass, nothing written)."""
    wanted = {f"{spec['folder']}/{f}": f for f in spec["train"] + spec["test"]}
    got = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(os.path.normpath(member.name))
                if name is not None and member.isfile():
                    got[name] = _parse_batch(tar.extractfile(member),
                                             f"{archive}: {member.name}", spec["label_key"])
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: cannot read the archive, truncated or corrupt ({e}); "
                        "delete it and download it again") from None
    missing = [f for f in wanted.values() if f not in got]
    if missing:
        raise DataError(f"{archive}: no {spec['folder']}/{{{','.join(missing)}}} in the "
                        "archive (not the python version of the data set?)")
    return got


def _safe_extract(archive: str, dest: str) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive}: cannot unpack the archive, truncated or corrupt ({e}); "
                        "delete it and download it again") from None


def _try_download(spec: Dict, root: str) -> bool:
    try:
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(spec["url"], root, filename=spec["archive"],
                                     md5=spec["md5"])
        return True
    except Exception as e:  # offline, DNS failure, checksum mismatch
        log.warning("download of %s failed: %s", spec["url"], e)
        return False


def locate(name: str, data_path: str, download: bool = True, unpack: bool = True) -> str:
    """The folder holding the batch files: ``data_path/<folder>`` (unpacked from the
    ``.tar.gz`` there if needed, downloaded if allowed) or ``data_path`` itself. With
    ``unpack`` False (a dry run) nothing is written: an archive found is returned as is."""
    spec = _SPECS[name]
    needed = spec["train"] + spec["test"]
    for cand in (os.path.join(data_path, spec["folder"]), data_path):
        if all(os.path.isfile(os.path.join(cand, f)) for f in needed):
            return cand
    archive = os.path.join(data_path, spec["archive"])
    if os.path.isfile(archive):
        if not unpack:
            return archive
        log.info("unpacking %s", archive)
        _safe_extract(archive, data_path)
    elif download and unpack:
        created = []  # the folders made for the download, deepest first
        d = os.path.abspath(data_path)
        while not os.path.exists(d):
            created.append(d)
            d = os.path.dirname(d)
        os.makedirs(data_path, exist_ok=True)
        if not _try_download(spec, data_path):
            for d in created:  # leave no empty folder behind a failed download
                if os.listdir(d):
                    break
                os.rmdir(d)
    folder = os.path.join(data_path, spec["folder"])
    if all(os.path.isfile(os.path.join(folder, f)) for f in needed):
        return folder
    why = "; a dry run downloads nothing" if download and not unpack else ""
    raise DataError(f"{name} not found under data_path '{data_path}': expected "
                    f"{spec['folder']}/{{{','.join(needed)}}} or {spec['archive']} "
                    f"(the python version from {spec['url']}); set data_path to its folder"
                    f"{why}")


def transforms(train: bool, policy: Optional[Callable] = None):
    """Reference transforms (RandomCrop(32, padding=4) + flip for training); ``policy``
    (AutoAugment / RandAugment, :func:`datasets.common.policy_augmentation`) goes after the
    flip, before ToTensor, as in the AutoAugment paper's CIFAR recipe."""
    norm = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    if train:
        extra = [policy] if policy is not None else []
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *extra] + norm)
    return T.Compose(norm)


def load_cifar_arrays(name: str, data_path: str, download: bool = True,
                      dry_run: bool = False):
    """(train images, train labels, test images, test labels), images uint8 N x 32 x 32 x 3.

    ``dry_run``: nothing is downloaded or unpacked (an archive is read in memory).
    """
    spec = _SPECS[name]
    source = locate(name, data_path, download, unpack=not dry_run)
    if os.path.isdir(source):
        batches = {f: _load_batch(os.path.join(source, f), spec["label_key"])
                   for f in spec["train"] + spec["test"]}
    else:
        batches = _read_archive(source, spec)
    out: List[np.ndarray] = []
    for part in ("train", "test"):
        out += [np.concatenate([batches[f][0] for f in spec[part]]),
                np.concatenate([batches[f][1] for f in spec[part]])]
    for labels, f in ((out[1], spec["train"][0]), (out[3], spec["test"][0])):
        if labels.size and (labels.min() < 0 or labels.max() >= spec["classes"]):
            raise DataError(f"{os.path.join(source, f)}: labels must lie in "
                            f"[0, {spec['classes']}), found {labels.min()}..{labels.max()}")
    return tuple(out)


def build_cifar(cfg, name: str, dry_run: bool = False) -> DataBundle:
    """CIFAR-10-LT / CIFAR-100-LT: long-tailed training split, balanced test set
    (``dry_run``: create and download nothing)."""
    spec = _SPECS[name]
    check_num_classes(cfg.num_classes, spec["classes"], name)
    x_tr, y_tr, x_te, y_te = load_cifar_arrays(name, cfg.data_path, cfg.download,
                                               dry_run)
    n_max = int(np.bincount(y_tr, minlength=spec["classes"]).max())
    counts = lt_counts(n_max, spec["classes"], cfg.imb_factor, cfg.imb_type)
    keep = lt_indices(y_tr, counts, seed=0)
    x_tr, y_tr = x_tr[keep], y_tr[keep]
    cls_num_list = np.bincount(y_tr, minlength=spec["classes"]).tolist()
    return DataBundle(
        train=ArrayImageDataset(x_tr, y_tr, transforms(
            True, policy_augmentation(cfg, T.AutoAugmentPolicy.CIFAR10))),
        test=ArrayImageDataset(x_te, y_te, transforms(False)),
        cls_num_list=cls_num_list, name=name, in_channels=3,
        train_eval=ArrayImageDataset(x_tr, y_tr, transforms(False)),
        extra={"mean": CIFAR_MEAN, "std": CIFAR_STD, "augment": {"pad": 4, "flip": True}})
