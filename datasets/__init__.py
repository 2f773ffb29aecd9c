"""Data sets by name: ``build_data(cfg)`` returns a :class:`DataBundle`; ``build_data(cfg,
dry_run=True)`` the same while creating and downloading nothing."""
from __future__ import annotations

from typing import Callable, Dict

from datasets.common import ArrayImageDataset, DataBundle, EpochSampler, lt_counts

__all__ = ["DATASETS", "build_data", "DataBundle", "EpochSampler", "ArrayImageDataset",
           "lt_counts"]


def _cifar(name: str) -> Callable:
    def build(cfg, dry_run: bool = False) -> DataBundle:
        from datasets.cifar import build_cifar
        return build_cifar(cfg, name, dry_run=dry_run)
    return build


def _digits(cfg, dry_run: bool = False) -> DataBundle:
    from datasets.digits import build_digits
    return build_digits(cfg)  # bundled with scikit-learn: nothing on disk is created


def _image_list(name: str) -> Callable:
    def build(cfg, dry_run: bool = False) -> DataBundle:
        from datasets.imagelist import build_imagelist
        return build_imagelist(cfg, name)  # reads list files only
    return build


def _folder(cfg, dry_run: bool = False) -> DataBundle:
    from datasets.folder import build_folder
    return build_folder(cfg)  # scans the tree and reads image headers only


# name -> builder(cfg, dry_run) -> DataBundle
DATASETS: Dict[str, Callable[..., DataBundle]] = {
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "digits": _digits,
    # '<relative image path> <label>' list files under data_path (datasets/imagelist.py)
    "imagenet": _image_list("imagenet"),
    "ina2018": _image_list("ina2018"),
    "places": _image_list("places"),
    # your own data: list files in the same format (train_list / test_list / val_list) ...
    "imagelist": _image_list("imagelist"),
    # ... or a class-per-folder tree (datasets/folder.py)
    "folder": _folder,
}


def build_data(cfg, dry_run: bool = False) -> DataBundle:
    """The data set named by ``cfg.dataset``; with ``dry_run`` nothing is created or
    downloaded (``--dry-run``: a missing data set is an error, an archive is read in place)."""
    bundle = DATASETS[cfg.dataset](cfg, dry_run)  # a name outside DATASETS fails load_config
    if cfg.num_classes is None:  # folder / imagelist without the key: the data's, from now on
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.num_classes = len(bundle.cls_num_list)
        if frozen:
            cfg.freeze()
    return bundle
