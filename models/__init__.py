"""Backbones (name -> builder) and the network that joins backbone, optional block, classifier
and optional learnable weight scaling."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from models import resnet, resnet_cifar
from models.heads import Classifier
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


class LTNet(nn.Module):
    """backbone (``model``) -> optional ``block`` -> ``classifier`` -> optional ``lws``.

    The parts are saved as ``state_dict_model``, ``state_dict_block``,
    ``state_dict_classifier`` and ``state_dict_lws_model`` (the MiSLAS key names; ``lws`` is
    MiSLAS's stage-2 learnable weight scaling, :class:`models.heads.LearnableWeightScaling`,
    which multiplies the logits).

    Frozen parts (:meth:`freeze`) receive no gradient; the backbone and the block run under
    ``torch.no_grad`` when frozen, and a frozen part stays in eval mode in ``train()`` unless it
    is listed in ``shift_bn``: then its BatchNorm running statistics keep moving with the
    training batches (MiSLAS stage 2's ``shift_bn``). ``frozen_backbone=True`` is the Places-LT
    recipe's frozen backbone (``freeze(['model'])``).
    """

    def __init__(self, model: nn.Module, classifier: nn.Module,
                 block: Optional[nn.Module] = None, frozen_backbone: bool = False,
                 lws: Optional[nn.Module] = None):
        super().__init__()
        self.model = model
        self.block = block
        self.classifier = classifier
        self.lws = lws
        self.frozen: Tuple[str, ...] = ()
        self.shift_bn: Tuple[str, ...] = ()
        if frozen_backbone:
            self.freeze(["model"])

    @property
    def frozen_backbone(self) -> bool:
        return "model" in self.frozen

    def freeze(self, parts: Sequence[str], shift_bn: Sequence[str] = ()) -> None:
        """Stop training ``parts`` (names of :meth:`parts`); those in ``shift_bn`` stay in
        train mode (BatchNorm statistics update) although their weights are fixed."""
        own = self.parts()
        for name in parts:
            own[name].requires_grad_(False)
        self.frozen = tuple(dict.fromkeys(self.frozen + tuple(parts)))
        self.shift_bn = tuple(shift_bn)

    def parts(self) -> Dict[str, nn.Module]:
        """Checkpoint name (``state_dict_<name>``) -> module for every part that exists."""
        out = {"model": self.model, "classifier": self.classifier}
        if self.block is not None:
            out["block"] = self.block
        if self.lws is not None:
            out["lws_model"] = self.lws
        return out

    def train(self, mode: bool = True) -> "LTNet":
        super().train(mode)
        if mode:
            own = self.parts()
            for name in self.frozen:
                if name not in self.shift_bn:
                    own[name].eval()
        return self

    def _run(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if name in self.frozen:
            with torch.no_grad():
                return module(x)
        return module(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone (and block) output: the classifier's input."""
        feat = self._run("model", self.model, x)
        return feat if self.block is None else self._run("block", self.block, feat)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits (scaled by ``lws`` when there is one); with ``return_features`` also the
        classifier's ``fc`` input (B x d), which the gradient monitor and neural-collapse
        metrics use."""
        h = self.classifier.embed(self.features(x))
        logits = self.classifier.fc(h)
        if self.lws is not None:
            logits = self.lws(logits)
        return (logits, h) if return_features else logits


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
        from models.resnet_places import build_places_network
        return build_places_network(cfg, num_classes, in_channels, pretrained)
    backbone = BACKBONES[cfg.backbone](in_channels)
    init = "kaiming" if cfg.backbone in CIFAR_BACKBONES else "linear"
    return LTNet(backbone, Classifier(backbone.out_dim, num_classes, init))


def count_parameters(module: Optional[nn.Module]) -> int:
    """Number of parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())
