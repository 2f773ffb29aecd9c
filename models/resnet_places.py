"""The Places-LT recipe of MiSLAS: a frozen ImageNet-pretrained ResNet whose last bottleneck is
replaced by a trainable one, then a pooling classifier.

    frozen backbone: the ResNet without its last layer4 block, no pooling, eval mode
                     -> B x 2048 x 7 x 7 for 224 x 224 inputs
    block: Bottleneck 2048 -> 512 -> 2048, stride 1, identity residual (trainable)
    classifier: adaptive average pooling + fc (trainable, nn.Linear's initialisation)

Source: MiSLAS models/resnet_places.py (identical in the ARB-Loss fork): ``resnet152_fe`` is
``ResNet_FE(Bottleneck, [3, 8, 36, 2])``, whose forward stops after layer4 (no pooling); its
pretrained ImageNet weights lose ``fc.*`` and ``layer4.2.*`` before a strict
``load_state_dict``. train_stage1.py builds the block as ``Bottleneck(2048, 512, groups=1,
base_width=64)`` (no downsample) and the classifier as ``resnet_places.Classifier`` (average
pooling + fc), and calls ``classifier(block(model(images)))`` with the backbone under
``torch.no_grad()`` in eval mode.

Parameter counts (frozen backbone / block): resnet152_fe [3, 8, 36, 2] 53,681,216 /
4,462,592; resnet101_fe [3, 4, 23, 2] 38,037,568 / 4,462,592; resnet50_fe [3, 4, 6, 2]
19,045,440 / 4,462,592.

``resnet50_fe`` is [3, 4, 6, 2] here, built like ``resnet152_fe``. The published
models/resnet_places.py (MiSLAS and the ARB-Loss fork) declares it [3, 4, 6, 3] yet deletes
``layer4.2.*`` from the pretrained weights, so its strict load fails with missing
``layer4.2.*`` keys: the ARB-Loss Places-LT config (places_resnet50_arbloss_ugcc_mixup.yaml)
cannot start from pretrained weights as published.

``resnet10_fe`` (a test-only backbone: one block per stage, no torchvision weights) keeps its
only layer4 block; its block is 512 -> 128 -> 512, so quick tests run the same recipe.

Checkpoints hold ``state_dict_model`` (the frozen backbone), ``state_dict_block`` and
``state_dict_classifier``, as MiSLAS saves them.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from models.heads import PooledClassifier
from models.ltnet import LTNet
from models.resnet import RESNET_SPECS, ResNetFE, torchvision_weights
from utils.checkpoint import _mismatch, strip_module_prefix
from utils.errors import CheckpointError, ConfigError, first_line

log = logging.getLogger(__name__)


def frozen_layers(name: str) -> List[int]:
    """Blocks per stage of the frozen Places backbone ``name``: the ImageNet ResNet's, less the
    last layer4 block, which the trainable block replaces (resnet152_fe: [3, 8, 36, 2])."""
    layers = list(RESNET_SPECS[name][1])
    if layers[3] > 1:  # resnet10_fe has a single (downsampling) layer4 block: kept
        layers[3] -= 1
    return layers


def replaced_prefixes(name: str) -> Tuple[str, ...]:
    """Key prefixes of the full ImageNet network's weights that the Places backbone has no
    place for: ``fc.`` and the replaced last layer4 block (``layer4.2.`` for ResNet-152)."""
    full, cut = RESNET_SPECS[name][1][3], frozen_layers(name)[3]
    return ("fc.",) + tuple(f"layer4.{i}." for i in range(cut, full))


def build_frozen_backbone(name: str, in_channels: int = 3) -> ResNetFE:
    """The Places backbone ``name`` (random weights): no pooling, last layer4 block removed."""
    return ResNetFE(RESNET_SPECS[name][0], frozen_layers(name), in_channels, pool=False)


def extra_block(channels: int) -> nn.Module:
    """The trainable block: torchvision's Bottleneck ``channels -> channels / 4 -> channels``
    (MiSLAS: ``Bottleneck(2048, 512, groups=1, base_width=64)``, the same module and key
    names). Equal input and output width and stride 1 need no downsample, so the residual is
    the identity; it keeps PyTorch's default initialisation, as in MiSLAS."""
    return tv_resnet.Bottleneck(channels, channels // 4)


def _backbone_state(raw, source: str, name: str) -> Dict[str, torch.Tensor]:
    """The frozen backbone's tensors from a torchvision-style state dict of ResNet ``name``
    (or a dict wrapping one): ``module.`` prefixes stripped, ``fc.*`` and the replaced last
    layer4 block deleted, as MiSLAS does before its strict load."""
    if isinstance(raw, dict):
        for key in ("state_dict_model", "state_dict", "model"):
            if key in raw and isinstance(raw[key], dict):
                raw = raw[key]
                break
    if not (isinstance(raw, dict) and raw
            and all(isinstance(v, torch.Tensor) for v in raw.values())):
        raise CheckpointError(f"{source}: expected a state dict of tensors (torchvision "
                              "ResNet weights), found something else")
    state = strip_module_prefix(raw)
    drop = replaced_prefixes(name)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


def load_pretrained_file(path: str, name: str) -> Dict[str, torch.Tensor]:
    """Frozen-backbone tensors of a local torchvision-style ResNet state dict (the full
    ImageNet network, ``module.`` prefixes allowed; see :func:`_backbone_state`); one clear
    :class:`CheckpointError` if it cannot be read."""
    if not os.path.isfile(path):
        raise CheckpointError(f"key 'pretrained_path': file not found: {path} (expected a "
                              f"torchvision {name[:-3]} state dict saved with torch.save)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable weights file (key 'pretrained_path'): "
                              f"{first_line(e)[:200]}") from None
    return _backbone_state(raw, path, name)


def load_torchvision_weights(name: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """Frozen-backbone tensors of torchvision's ImageNet weights for ``name`` (downloaded
    once into the torch hub cache; see :func:`_backbone_state`) and their URL; offline, one
    clear :class:`ConfigError`."""
    weights = torchvision_weights(name)
    if weights is None:
        raise ConfigError(f"key 'backbone' {name}: torchvision has no ImageNet weights for it; "
                          "set pretrained_path to a local weights file or not_pretrained True")
    try:
        raw = weights.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 - offline, DNS, proxy, HTTP error, corrupt cache
        raise ConfigError(f"cannot get ImageNet weights for {name} from torchvision "
                          f"({weights.url}: {first_line(e)[:160]}); when offline set "
                          "pretrained_path to a local weights file or not_pretrained True"
                          ) from None
    return _backbone_state(raw, weights.url, name), weights.url


def weights_wanted(cfg, pretrained: Optional[bool]) -> bool:
    """Whether to load pretrained backbone weights: ``pretrained``, or when None, unless
    ``cfg.resume`` names a checkpoint (its ``state_dict_model`` replaces them anyway, so
    evaluation and resuming work offline)."""
    return not (cfg.resume and cfg.resume != "auto") if pretrained is None else pretrained


def build_places_network(cfg, num_classes: int, in_channels: int = 3,
                         pretrained: Optional[bool] = None):
    """The Places-LT network as a :class:`models.LTNet` with a frozen backbone.

    Backbone weights: ``not_pretrained`` -> random (warning); else ``pretrained_path`` (local
    file); else torchvision's weights API; both lose ``fc.*`` and the replaced last layer4
    block before a strict load. ``pretrained=None`` loads them unless ``cfg.resume`` names a
    checkpoint, whose ``state_dict_model`` replaces them anyway (evaluation and resuming then
    work offline).
    """

    name = cfg.backbone  # one of RESNET_SPECS (config.PLACES_BACKBONES, checked at load)
    pretrained = weights_wanted(cfg, pretrained)
    # Weights are fetched before the (large) backbone is built, so a failure comes at once.
    state, source = None, ""
    if cfg.not_pretrained:
        log.warning("not_pretrained True: the frozen %s keeps its random initialisation "
                    "(only meaningful for tests)", name)
    elif not pretrained:
        log.info("ImageNet weights of %s not loaded (a checkpoint provides the backbone, or "
                 "this is a dry run)", name)
    elif cfg.pretrained_path:
        state, source = load_pretrained_file(cfg.pretrained_path, name), cfg.pretrained_path
    else:
        state, source = load_torchvision_weights(name)
    backbone = build_frozen_backbone(name, in_channels)
    if state is not None:
        problem = _mismatch(backbone, state)
        if problem:
            raise CheckpointError(f"{source}: weights do not fit backbone {name} (key "
                                  f"'backbone' or 'pretrained_path'?): {problem}")
        backbone.load_state_dict(state)
        log.info("loaded ImageNet weights for the frozen %s from %s", name, source)
    return LTNet(model=backbone, classifier=PooledClassifier(backbone.out_dim, num_classes),
                 block=extra_block(backbone.out_dim), frozen_backbone=True)
