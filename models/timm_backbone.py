"""Backbones from timm (``backbone timm:<name>``), the library long-tailed work takes them from
(e.g. ``timm:resnext50_32x4d``, the ImageNet-LT backbone of Kang et al. and BALMS).

The timm model is built without its head (``num_classes=0``: globally pooled features of
``num_features`` dimensions) and our classifier goes on top. No weights are downloaded:
``pretrained_path`` names a local timm checkpoint (its head's keys are dropped). timm is an
optional dependency: without it, one line says ``pip install timm``.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from config import TIMM_PREFIX
from utils.errors import ConfigError, first_line

log = logging.getLogger(__name__)



def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("backbone timm:<name> needs timm: pip install timm") from None
    return timm


class TimmBackbone(nn.Module):
    """A timm model without its classifier; ``forward`` gives B x ``out_dim`` pooled features."""

    def __init__(self, name: str, in_channels: int = 3):
        super().__init__()
        timm = _timm()
        if not timm.is_model(name):
            close = timm.list_models(f"*{name[:6]}*")[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"key 'backbone' is 'timm:{name}': timm {timm.__version__} has no "
                              f"model {name!r}{hint}; see timm.list_models()")
        self.net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
        self.out_dim = int(self.net.num_features)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def load_local_weights(self, path: str) -> None:
        """The weights of a local timm checkpoint (a state dict, or one under 'state_dict' /
        'model'); keys the headless model lacks (the classifier's) are dropped, every other
        key must match."""
        try:
            if path.endswith(".safetensors"):  # what timm's hub releases ship
                from safetensors.torch import load_file
                raw = load_file(path)
            else:  # tensors and plain types only: nothing in the file is run
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - missing, truncated, pickled objects, ...
            raise ConfigError(f"key 'pretrained_path' {path}: cannot read timm weights "
                              f"({first_line(e)[:160]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"key 'pretrained_path' {path}: not a state dict")
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
        own = self.net.state_dict()
        state = {k.removeprefix("module."): v for k, v in raw.items()}
        dropped = sorted(k for k in state if k not in own)
        try:
            self.net.load_state_dict({k: v for k, v in state.items() if k in own})
        except RuntimeError as e:
            raise ConfigError(f"key 'pretrained_path' {path}: not weights of timm model "
                              f"{self.name} ({first_line(e)[:200]})") from None
        log.info("timm %s: weights from %s (%d head keys dropped: %s)", self.name, path,
                 len(dropped), ", ".join(dropped[:4]))


def build_timm_backbone(backbone: str, in_channels: int, pretrained_path: str = "",
                        load_weights: bool = True) -> TimmBackbone:
    """``timm:<name>`` without its head; ``pretrained_path`` loaded when ``load_weights``."""
    net = TimmBackbone(backbone[len(TIMM_PREFIX):], in_channels)
    if pretrained_path and load_weights:
        net.load_local_weights(pretrained_path)
    return net
