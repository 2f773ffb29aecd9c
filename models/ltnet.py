"""The network of every recipe: backbone -> optional block -> classifier -> optional LWS."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn


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
