"""Backbones (name -> builder), the network that joins backbone, optional block, classifier and
optional learnable weight scaling (:class:`models.ltnet.LTNet`), and its builder."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch.nn as nn

from config import TIMM_PREFIX, classifier_kind
from models import resnet, resnet_cifar
from models.heads import CLASSIFIERS, Classifier, build_classifier
from models.ltnet import LTNet
from models.resnet_places import build_places_network, weights_wanted
from models.timm_backbone import build_timm_backbone
from utils.errors import CheckpointError, ConfigError

CIFAR_BACKBONES = ("resnet8_fe", "resnet20_fe", "resnet32_fe", "resnet44_fe", "resnet56_fe",
                   "resnet110_fe", "resnet32_fe_c100")
# name -> builder(in_channels) returning a feature extractor with an ``out_dim`` attribute
BACKBONES: Dict[str, Callable[[int], nn.Module]] = {
    name: getattr(resnet_cifar, name) for name in CIFAR_BACKBONES
}
# ImageNet ResNets (torchvision architecture and key names) for ImageNet-LT / iNat / Places-LT
BACKBONES.update({name: getattr(resnet, name)
                  for name in ("resnet10_fe", "resnet50_fe", "resnet101_fe", "resnet152_fe")})


def classifier_init(backbone: str) -> str:
    """How a linear head starts for this backbone's family (:data:`models.heads.CLASSIFIER_INITS`):
    kaiming-normal for the CIFAR ResNets, nn.Linear's own for the ImageNet ResNets."""
    return "kaiming" if backbone in CIFAR_BACKBONES else "linear"


def build_network(cfg, num_classes: int, in_channels: int = 3,
                  pretrained: Optional[bool] = None, classifier: Optional[str] = None) -> LTNet:
    """The network named by ``cfg.backbone`` with a ``num_classes``-way classifier of kind
    ``classifier`` (a key of :data:`models.heads.CLASSIFIERS`; None: the config's,
    :func:`config.classifier_kind`).

    A linear classifier starts as in the published code of the backbone's family
    (:func:`classifier_init`, see :mod:`models.heads`). For ``dataset: places`` this is the
    Places-LT recipe (frozen ImageNet-pretrained backbone without its last bottleneck +
    trainable block + pooling classifier, see :mod:`models.resnet_places`); ``pretrained`` only
    matters there (None: load weights unless ``cfg.resume`` names a checkpoint).
    """
    kind = classifier or classifier_kind(cfg)
    if cfg.dataset == "places":
        net = build_places_network(cfg, num_classes, in_channels, pretrained)
        if kind != "linear":
            feat_in = net.classifier.fc.in_features
            net.classifier = _head(kind, feat_in, num_classes, "linear", True, cfg)
        return net
    if cfg.backbone.startswith(TIMM_PREFIX):
        backbone = build_timm_backbone(cfg.backbone, in_channels, cfg.pretrained_path,
                                       load_weights=weights_wanted(cfg, pretrained))
    else:
        backbone = BACKBONES[cfg.backbone](in_channels)
    return LTNet(backbone, _head(kind, backbone.out_dim, num_classes,
                                 classifier_init(cfg.backbone), False, cfg))


def _head(kind: str, feat_in: int, num_classes: int, init: str, pool: bool, cfg) -> Classifier:
    if kind == "etf" and feat_in < num_classes:
        raise ConfigError(f"key 'classifier' is 'etf' but backbone {cfg.backbone} gives "
                          f"{feat_in}-d features, fewer than the {num_classes} classes; a "
                          "simplex ETF needs d >= num_classes (for CIFAR-100 use backbone "
                          "resnet32_fe_c100, 128-d, as Yang et al. do)")
    return build_classifier(kind, feat_in, num_classes, init, pool, seed=cfg.seed)


def checkpoint_classifier(ckpt: dict) -> Optional[str]:
    """The classifier kind of a checkpoint: the one it records (ours, key ``classifier``), else
    read from its classifier's keys (``BN_H.*``: etf; ``fc.bias``: linear, as in every MiSLAS /
    ARB-Loss checkpoint; ``fc.weight`` alone: cosine); None when it has no classifier."""
    kind = ckpt.get("classifier")
    if isinstance(kind, str) and kind in CLASSIFIERS:
        return kind
    state = ckpt.get("state_dict_classifier")
    if not isinstance(state, dict):
        return None
    keys = {k[len("module."):] if k.startswith("module.") else k for k in state}
    if any(k.startswith("BN_H.") for k in keys):
        return "etf"
    if "fc.bias" in keys:
        return "linear"
    return "cosine" if "fc.weight" in keys else None


def classifier_for_checkpoint(cfg, ckpt: dict, path: str) -> str:
    """The classifier kind to build for loading ``ckpt``: the checkpoint's when the config says
    ``auto``; a config naming another kind than the checkpoint holds is a one-line
    :class:`CheckpointError`."""
    held = checkpoint_classifier(ckpt)
    if cfg.classifier == "auto":
        return held or classifier_kind(cfg)
    if held is not None and held != cfg.classifier:
        raise CheckpointError(f"{path} holds a {held} classifier but key 'classifier' is "
                              f"{cfg.classifier!r}; set classifier {held} (or auto)")
    return cfg.classifier


def count_parameters(module: Optional[nn.Module]) -> int:
    """Number of parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())
