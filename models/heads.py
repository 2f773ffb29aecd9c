"""Classifier heads: linear (MiSLAS / ARB-Loss), cosine (LDAM-DRW's ``NormedLinear``), the fixed
simplex ETF (Yang et al., NeurIPS 2022), each optionally on a pooled feature map (Places-LT), and
MiSLAS's learnable weight scaling (LWS) for stage 2.

Every classifier here is ``fc(embed(x))``: ``embed`` turns the backbone (or block) output into
the vector ``fc`` sees, so the gradient monitor and the neural-collapse metrics can read ``fc``'s
input; :meth:`Classifier.class_weights` gives the C x d matrix whose rows the logits are the dot
products with (the effective weights, normalised for cosine, the ETF for etf). The key names
(``fc.weight``, ``fc.bias``, ``learned_norm``) are those of the MiSLAS / ARB-Loss checkpoints.
"""
from __future__ import annotations

import math
from typing import Dict, Type

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# How the fc weights start, per model family of the published code (MiSLAS, identical in the
# ARB-Loss fork):
#   "linear":  nn.Linear's own initialisation -- models/resnet.py and models/resnet_places.py
#              ``Classifier`` (ImageNet-LT, iNaturalist 2018, Places-LT) apply no init of theirs.
#   "kaiming": models/resnet_cifar.py ``Classifier`` runs ``_weights_init``, i.e.
#              ``kaiming_normal_`` on the weight (std sqrt(2 / feat_in), about 2.45x the
#              default's sqrt(1 / (3 feat_in))); the bias keeps nn.Linear's initialisation.
CLASSIFIER_INITS = ("linear", "kaiming")


def _pool(x: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C by global average pooling; a B x d vector is kept."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) if x.dim() == 4 else x


class Classifier(nn.Module):
    """Linear classifier ``fc`` on the feature vector (``kind`` 'linear').

    ``init`` is ``"linear"`` or ``"kaiming"`` (see :data:`CLASSIFIER_INITS`). The kaiming
    re-draw happens after nn.Linear's own initialisation, as in MiSLAS, so for the same random
    state both heads draw the same bias. ``pool``: average-pool a feature map first (Places-LT).
    """

    kind = "linear"

    def __init__(self, feat_in: int, num_classes: int, init: str = "linear", pool: bool = False):
        super().__init__()
        if init not in CLASSIFIER_INITS:
            raise ValueError(f"init is {init!r}; accepted: {', '.join(CLASSIFIER_INITS)}")
        self.init, self.pool = init, pool
        self.fc = nn.Linear(feat_in, num_classes)
        if init == "kaiming":
            nn.init.kaiming_normal_(self.fc.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The vector ``fc`` sees: the (pooled) input itself."""
        return _pool(x) if self.pool else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def class_weights(self) -> torch.Tensor:
        """C x d: the logit of class j is the dot product of ``embed(x)`` with row j (plus the
        bias, where there is one)."""
        return self.fc.weight

    def fresh(self) -> "Classifier":
        """A new head of the same kind and shape, initialised as this one was (cRT's start)."""
        return type(self)(self.fc.in_features, self.fc.out_features, self.init, self.pool)


class PooledClassifier(Classifier):
    """``fc`` on the globally average-pooled feature map, B x C x H x W -> B x C (MiSLAS
    models/resnet_places.py ``Classifier``: AdaptiveAvgPool2d(1), flatten, fc; nn.Linear's
    initialisation)."""

    def __init__(self, feat_in: int, num_classes: int, init: str = "linear", pool: bool = True):
        super().__init__(feat_in, num_classes, init, pool=True)


class NormedLinear(nn.Module):
    """Cosine logits without a bias: normalize(h) . normalize(w_j) (LDAM-DRW,
    github.com/kaidic/LDAM-DRW models/resnet_cifar.py ``NormedLinear``).

    Its weight is stored here as C x d (as nn.Linear's; LDAM-DRW keeps the d x C transpose and
    normalises its columns). The initialisation is theirs, drawn in their d x C layout:
    ``uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)``, i.e. every class vector rescaled to norm
    1 (renorm caps each column's norm at 1e-5, which the uniform draw always exceeds).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        w = torch.empty(in_features, out_features).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
        self.weight = nn.Parameter(w.t().contiguous())

    def normalized_weight(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` is already normalised by :meth:`CosineClassifier.embed`."""
        return F.linear(h, self.normalized_weight().to(h.dtype))


class CosineClassifier(Classifier):
    """Cosine classifier (``kind`` 'cosine'): ``embed`` L2-normalises the feature, ``fc`` is
    :class:`NormedLinear`; logits lie in [-1, 1], so the loss scales them (LDAM's s = 30).
    LDAM-DRW's ``cifar_train.py`` uses it exactly for LDAM: ``use_norm = True if
    args.loss_type == 'LDAM'``."""

    kind = "cosine"

    def __init__(self, feat_in: int, num_classes: int, init: str = "linear", pool: bool = False):
        nn.Module.__init__(self)
        self.init, self.pool = init, pool  # init: NormedLinear has its own
        self.fc = NormedLinear(feat_in, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().embed(x), dim=1)

    def class_weights(self) -> torch.Tensor:
        return self.fc.normalized_weight()


def simplex_etf(feat_in: int, num_classes: int, seed: int) -> torch.Tensor:
    """The d x K simplex ETF M = sqrt(K / (K - 1)) P (I - 11^T / K) of Yang et al.
    (github.com/NeuralCollapseApplications/ImbalancedLearning, models/resnet_cifar.py
    ``ETF_Classifier``): P (d x K, orthonormal columns) from the QR decomposition of a d x K
    matrix of uniform [0, 1) numbers -- theirs come from numpy's global stream (seeded with 0
    when ``deterministic``), here from ``np.random.RandomState(seed)``. Needs d >= K. Float32;
    M^T M = K / (K - 1) I - 1 / (K - 1) 11^T (unit columns, pairwise cosine -1 / (K - 1))."""
    if feat_in < num_classes:
        raise ValueError(f"a simplex ETF of {num_classes} classes needs features of at least "
                         f"{num_classes} dimensions, got {feat_in}")
    a = np.random.RandomState(seed).random_sample((feat_in, num_classes))
    p, _ = np.linalg.qr(a)
    k = num_classes
    m = math.sqrt(k / (k - 1)) * p @ (np.eye(k) - np.ones((k, k)) / k)
    return torch.from_numpy(m).float()


class FixedETF(nn.Module):
    """The fixed ETF as a bias-free linear layer: logits = h M. ``weight`` (K x d = M^T) is a
    buffer: saved in checkpoints, never trained."""

    def __init__(self, in_features: int, out_features: int, seed: int = 0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", simplex_etf(in_features, out_features, seed).t()
                             .contiguous())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.to(h.dtype))


class ETFClassifier(Classifier):
    """The fixed simplex-ETF classifier (``kind`` 'etf') of Yang et al., "Inducing Neural
    Collapse in Imbalanced Learning: Do We Really Need a Learnable Classifier at the End of Deep
    Neural Network?", NeurIPS 2022: ``embed`` is their ``ETF_Classifier.forward`` --
    BatchNorm1d (``BN_H``, trained, their ``fix_bn: False``) then x / max(||x||, 1e-8) -- and
    ``fc`` the fixed ETF (:class:`FixedETF`). The training loss of their recipe is the dot
    regression (``loss dr``, :class:`methods.losses.DotRegressionLoss`)."""

    kind = "etf"

    def __init__(self, feat_in: int, num_classes: int, init: str = "linear", pool: bool = False,
                 seed: int = 0):
        nn.Module.__init__(self)
        self.init, self.pool, self.seed = init, pool, seed
        self.BN_H = nn.BatchNorm1d(feat_in)  # their key name, so their state dicts match
        self.fc = FixedETF(feat_in, num_classes, seed)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.BN_H(super().embed(x))
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def fresh(self) -> "ETFClassifier":
        """A new BatchNorm and the same ETF (cRT re-initialises what is trained)."""
        head = ETFClassifier(self.fc.in_features, self.fc.out_features, self.init, self.pool,
                             self.seed)
        head.fc.weight.copy_(self.fc.weight)
        return head


# classifier kind (key 'classifier') -> class
CLASSIFIERS: Dict[str, Type[Classifier]] = {
    "linear": Classifier,
    "cosine": CosineClassifier,
    "etf": ETFClassifier,
}


def build_classifier(kind: str, feat_in: int, num_classes: int, init: str = "linear",
                     pool: bool = False, seed: int = 0) -> Classifier:
    """The classifier of ``kind`` (a key of :data:`CLASSIFIERS`); ``seed`` draws the ETF."""
    if kind == "etf":
        return ETFClassifier(feat_in, num_classes, init, pool, seed)
    return CLASSIFIERS[kind](feat_in, num_classes, init, pool)


class LearnableWeightScaling(nn.Module):
    """One learnable scale per class on the logits (MiSLAS methods.py, stage 2):
    ``learned_norm * logits`` with ``learned_norm`` of shape (1, num_classes), initialised to
    ones. Checkpoints hold it as ``state_dict_lws_model``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.learned_norm = nn.Parameter(torch.ones(1, num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.learned_norm * logits
