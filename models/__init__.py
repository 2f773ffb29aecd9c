"""Backbones (name -> builder), the network that joins backbone, optional block, classifier and
optional learnable weight scaling (:class:`models.ltnet.LTNet`), and its builder."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch.nn as nn

from models import resnet, resnet_cifar
from models.heads import Classifier
from models.ltnet import LTNet
from models.resnet_places import build_places_network
from utils.errors import ConfigError

CIFAR_BACKBONES = ("resnet8_fe", "resnet20_fe", "resnet32_fe", "resnet44_fe", "resnet56_fe",
                   "resnet110_fe")
# name -> builder(in_channels) returning a feature extractor with an ``out_dim`` attribute
BACKBONES: Dict[str, Callable[[int], nn.Module]] = {
    name: getattr(resnet_cifar, name) for name in CIFAR_BACKBONES
}
# ImageNet ResNets (torchvision architecture and key names) for ImageNet-LT / iNat / Places-LT
BACKBONES.update({name: getattr(resnet, name)
                  for name in ("resnet10_fe", "resnet50_fe", "resnet101_fe", "resnet152_fe")})


def build_network(cfg, num_classes: int, in_channels: int = 3,
                  pretrained: Optional[bool] = None) -> LTNet:
    """The network named by ``cfg.backbone`` with a ``num_classes``-way classifier.

    The classifier starts as in the published code of the backbone's family: kaiming-normal
    weights for the CIFAR ResNets, nn.Linear's initialisation for the ImageNet ResNets (see
    :mod:`models.heads`). For ``dataset: places`` this is the Places-LT recipe (frozen
    ImageNet-pretrained backbone without its last bottleneck + trainable block + pooling
    classifier, see :mod:`models.resnet_places`); ``pretrained`` only matters there (None:
    load weights unless ``cfg.resume`` names a checkpoint).
    """
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"key 'backbone' is {cfg.backbone!r}; accepted: "
                          f"{', '.join(sorted(BACKBONES))}")
    if cfg.dataset == "places":
        return build_places_network(cfg, num_classes, in_channels, pretrained)
    backbone = BACKBONES[cfg.backbone](in_channels)
    init = "kaiming" if cfg.backbone in CIFAR_BACKBONES else "linear"
    return LTNet(backbone, Classifier(backbone.out_dim, num_classes, init))


def count_parameters(module: Optional[nn.Module]) -> int:
    """Number of parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())
