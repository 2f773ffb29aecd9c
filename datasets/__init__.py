"""Data sets by name: ``build_data(cfg)`` returns a :class:`DataBundle`."""
from __future__ import annotations

from typing import Callable, Dict

from datasets.common import ArrayImageDataset, DataBundle, EpochSampler, lt_counts
from utils.errors import ConfigError

__all__ = ["DATASETS", "build_data", "DataBundle", "EpochSampler", "ArrayImageDataset",
           "lt_counts"]


def _cifar(name: str) -> Callable:
    def build(cfg) -> DataBundle:
        from datasets.cifar import build_cifar
        return build_cifar(cfg, name)
    return build


def _digits(cfg) -> DataBundle:
    from datasets.digits import build_digits
    return build_digits(cfg)


def _image_list(name: str) -> Callable:
    def build(cfg) -> DataBundle:
        from datasets.imagelist import build_imagelist
        return build_imagelist(cfg, name)
    return build


# name -> builder(cfg) -> DataBundle
DATASETS: Dict[str, Callable[..., DataBundle]] = {
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "digits": _digits,
    # '<relative image path> <label>' list files under data_path (datasets/imagelist.py)
    "imagenet": _image_list("imagenet"),
    "ina2018": _image_list("ina2018"),
    "places": _image_list("places"),
}


def build_data(cfg) -> DataBundle:
    """The data set named by ``cfg.dataset``."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"key 'dataset' is {cfg.dataset!r}; accepted: "
                          f"{', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.dataset](cfg)
