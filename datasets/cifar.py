"""Long-tailed CIFAR-10 / CIFAR-100 from torchvision's python-version archives."""
from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torchvision.transforms as T

from datasets.common import (
    ArrayImageDataset,
    DataBundle,
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


def _load_batch(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError) as e:
        raise DataError(f"{path}: not a readable CIFAR python batch file "
                        f"(truncated or corrupt: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict with 'data' and '{label_key}'")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: missing key 'data' or '{label_key}' "
                        f"(found: {', '.join(map(str, d))})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
            or len(labels) != len(data)):
        raise DataError(f"{path}: 'data' must be uint8 N x 3072 with N labels; got "
                        f"{data.dtype} {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


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


def locate(name: str, data_path: str, download: bool = True) -> str:
    """The folder holding the batch files: ``data_path/<folder>`` (unpacked from the
    ``.tar.gz`` there if needed, downloaded if allowed) or ``data_path`` itself."""
    spec = _SPECS[name]
    needed = spec["train"] + spec["test"]
    for cand in (os.path.join(data_path, spec["folder"]), data_path):
        if all(os.path.isfile(os.path.join(cand, f)) for f in needed):
            return cand
    archive = os.path.join(data_path, spec["archive"])
    if os.path.isfile(archive):
        log.info("unpacking %s", archive)
        _safe_extract(archive, data_path)
    elif download:
        os.makedirs(data_path, exist_ok=True)
        _try_download(spec, data_path)
    folder = os.path.join(data_path, spec["folder"])
    if all(os.path.isfile(os.path.join(folder, f)) for f in needed):
        return folder
    raise DataError(f"{name} not found under data_path '{data_path}': expected "
                    f"{spec['folder']}/{{{','.join(needed)}}} or {spec['archive']} "
                    f"(the python version from {spec['url']}); set data_path to its folder")


def transforms(train: bool, policy: Optional[Callable] = None):
    """Reference transforms (RandomCrop(32, padding=4) + flip for training); ``policy``
    (AutoAugment / RandAugment, :func:`datasets.common.policy_augmentation`) goes after the
    flip, before ToTensor, as in the AutoAugment paper's CIFAR recipe."""
    norm = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    if train:
        extra = [policy] if policy is not None else []
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *extra] + norm)
    return T.Compose(norm)


def load_cifar_arrays(name: str, data_path: str, download: bool = True):
    """(train images, train labels, test images, test labels), images uint8 N x 32 x 32 x 3."""
    spec = _SPECS[name]
    folder = locate(name, data_path, download)
    parts = [[_load_batch(os.path.join(folder, f), spec["label_key"]) for f in spec[k]]
             for k in ("train", "test")]
    out: List[np.ndarray] = []
    for batches in parts:
        out += [np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])]
    for labels, f in ((out[1], spec["train"][0]), (out[3], spec["test"][0])):
        if labels.size and (labels.min() < 0 or labels.max() >= spec["classes"]):
            raise DataError(f"{os.path.join(folder, f)}: labels must lie in "
                            f"[0, {spec['classes']}), found {labels.min()}..{labels.max()}")
    return tuple(out)


def build_cifar(cfg, name: str) -> DataBundle:
    """CIFAR-10-LT / CIFAR-100-LT: long-tailed training split, balanced test set."""
    spec = _SPECS[name]
    if cfg.num_classes != spec["classes"]:
        raise DataError(f"key 'num_classes' is {cfg.num_classes} but {name} has "
                        f"{spec['classes']} classes")
    x_tr, y_tr, x_te, y_te = load_cifar_arrays(name, cfg.data_path, cfg.download)
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
