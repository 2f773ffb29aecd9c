"""The Places-LT recipe (MiSLAS): a frozen ImageNet-pretrained ResNet, one trainable block, a
pooling classifier.

    frozen backbone (no pooling, eval mode)  ->  B x 2048 x 7 x 7
    block: Bottleneck 2048 -> 512 -> 2048 with identity residual (trainable)
    classifier: adaptive average pooling + fc (trainable, keys fc.weight / fc.bias)

Checkpoints hold ``state_dict_model`` (the frozen backbone), ``state_dict_block`` and
``state_dict_classifier``. The block's width follows the backbone (out_dim -> out_dim / 4 ->
out_dim), so a resnet10_fe backbone (512-d) gives a 512 -> 128 -> 512 block for quick tests.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from models.heads import PooledClassifier
from models.resnet import RESNET_SPECS, build_resnet, torchvision_weights
from utils.checkpoint import _mismatch, strip_module_prefix
from utils.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


def extra_block(channels: int) -> nn.Module:
    """torchvision's Bottleneck ``channels -> channels / 4 -> channels``; with equal input
    and output width and stride 1 it needs no downsample, so the residual is the identity."""
    return tv_resnet.Bottleneck(channels, channels // 4)


def _backbone_state(raw, source: str) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a torchvision-style state dict (or of a dict wrapping one),
    without ``module.`` prefixes and without the ImageNet ``fc.*`` entries."""
    if isinstance(raw, dict):
        for key in ("state_dict_model", "state_dict", "model"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or \
            not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors (torchvision "
                              "ResNet weights), found something else")
    state = strip_module_prefix(raw)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def load_pretrained_file(path: str, name: str) -> Dict[str, torch.Tensor]:
    """Backbone tensors of a local torchvision-style ResNet state dict (``fc.*`` entries and
    ``module.`` prefixes allowed); one clear :class:`CheckpointError` if it cannot be read."""
    if not os.path.isfile(path):
        raise CheckpointError(f"key 'pretrained_path': file not found: {path} (expected a "
                              f"torchvision {name[:-3]} state dict saved with torch.save)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, KeyError, AttributeError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable weights file (key 'pretrained_path'): "
                              f"{msg[:200]}") from None
    return _backbone_state(raw, path)


def load_torchvision_weights(name: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """torchvision's ImageNet weights for ``name`` (downloaded once into the torch hub
    cache) and their URL; offline, one clear :class:`ConfigError`."""
    weights = torchvision_weights(name)
    if weights is None:
        raise ConfigError(f"key 'backbone' {name}: torchvision has no ImageNet weights for it; "
                          "set pretrained_path to a local weights file or not_pretrained True")
    try:
        raw = weights.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 - offline, DNS, proxy, HTTP error, corrupt cache
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot get ImageNet weights for {name} from torchvision "
                          f"({weights.url}: {reason[:160]}); when offline set pretrained_path "
                          "to a local weights file or not_pretrained True") from None
    return _backbone_state(raw, weights.url), weights.url


def build_places_network(cfg, num_classes: int, in_channels: int = 3,
                         pretrained: Optional[bool] = None):
    """The Places-LT network as a :class:`models.LTNet` with a frozen backbone.

    Backbone weights: ``not_pretrained`` -> random (warning); else ``pretrained_path`` (local
    file); else torchvision's weights API. ``pretrained=None`` loads them unless
    ``cfg.resume`` names a checkpoint, whose ``state_dict_model`` replaces them anyway
    (evaluation and resuming then work offline).
    """
    from models import LTNet  # models/__init__ imports this module lazily

    name = cfg.backbone
    if name not in RESNET_SPECS:
        raise ConfigError(f"key 'backbone' is {name!r}; dataset 'places' needs an ImageNet "
                          f"ResNet: {', '.join(RESNET_SPECS)}")
    if pretrained is None:
        pretrained = not (cfg.resume and cfg.resume != "auto")
    # Weights are fetched before the (large) backbone is built, so a failure comes at once.
    state, source = None, ""
    if cfg.not_pretrained:
        log.warning("not_pretrained True: the frozen %s keeps its random initialisation "
                    "(only meaningful for tests)", name)
    elif not pretrained:
        log.info("backbone weights of %s will come from the checkpoint", name)
    elif cfg.pretrained_path:
        state, source = load_pretrained_file(cfg.pretrained_path, name), cfg.pretrained_path
    else:
        state, source = load_torchvision_weights(name)
    backbone = build_resnet(name, in_channels, pool=False)
    if state is not None:
        problem = _mismatch(backbone, state)
        if problem:
            raise CheckpointError(f"{source}: weights do not fit backbone {name} (key "
                                  f"'backbone' or 'pretrained_path'?): {problem}")
        backbone.load_state_dict(state)
        log.info("loaded ImageNet weights for the frozen %s from %s", name, source)
    return LTNet(model=backbone, classifier=PooledClassifier(backbone.out_dim, num_classes),
                 block=extra_block(backbone.out_dim), frozen_backbone=True)
