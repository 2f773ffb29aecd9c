"""Classifier heads: a linear classifier, its pooling form for Places-LT, and MiSLAS's learnable
weight scaling (LWS) for stage 2.

Every classifier here is ``fc(embed(x))``: ``embed`` turns the backbone (or block) output into
the vector the linear layer sees, so the gradient monitor and the neural-collapse metrics can
read ``fc``'s input and weights. The key names (``fc.weight``, ``fc.bias``, ``learned_norm``)
are those of the MiSLAS / ARB-Loss checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn

# How the fc weights start, per model family of the published code (MiSLAS, identical in the
# ARB-Loss fork):
#   "linear":  nn.Linear's own initialisation -- models/resnet.py and models/resnet_places.py
#              ``Classifier`` (ImageNet-LT, iNaturalist 2018, Places-LT) apply no init of theirs.
#   "kaiming": models/resnet_cifar.py ``Classifier`` runs ``_weights_init``, i.e.
#              ``kaiming_normal_`` on the weight (std sqrt(2 / feat_in), about 2.45x the
#              default's sqrt(1 / (3 feat_in))); the bias keeps nn.Linear's initialisation.
CLASSIFIER_INITS = ("linear", "kaiming")


class Classifier(nn.Module):
    """Linear classifier ``fc`` on the feature vector (CIFAR, ImageNet-LT, iNaturalist).

    ``init`` is ``"linear"`` or ``"kaiming"`` (see :data:`CLASSIFIER_INITS`). The kaiming
    re-draw happens after nn.Linear's own initialisation, as in MiSLAS, so for the same random
    state both heads draw the same bias.
    """

    def __init__(self, feat_in: int, num_classes: int, init: str = "linear"):
        super().__init__()
        if init not in CLASSIFIER_INITS:
            raise ValueError(f"init is {init!r}; accepted: {', '.join(CLASSIFIER_INITS)}")
        self.fc = nn.Linear(feat_in, num_classes)
        if init == "kaiming":
            nn.init.kaiming_normal_(self.fc.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The vector ``fc`` sees: the input itself."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class PooledClassifier(Classifier):
    """``fc`` on the globally average-pooled feature map, B x C x H x W -> B x C (MiSLAS
    models/resnet_places.py ``Classifier``: AdaptiveAvgPool2d(1), flatten, fc; nn.Linear's
    initialisation)."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class LearnableWeightScaling(nn.Module):
    """One learnable scale per class on the logits (MiSLAS methods.py, stage 2):
    ``learned_norm * logits`` with ``learned_norm`` of shape (1, num_classes), initialised to
    ones. Checkpoints hold it as ``state_dict_lws_model``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.learned_norm = nn.Parameter(torch.ones(1, num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.learned_norm * logits
