"""Running a network over a data set and turning its logits into the reported metrics."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from analysis.metrics import ClassRanges, classification_report
from datasets.common import EpochSampler
from utils import comm
from utils.errors import ConfigError
from utils.logger import format_seconds

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(net: nn.Module, loader: DataLoader, device: torch.device,
            autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
            with_features: bool = False, progress_every: int = 0, desc: str = "eval"
            ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Logits, targets and (``with_features``) the classifier's ``fc`` inputs of every sample
    of ``loader``'s data set, on the CPU, in the data set's order.

    Under DDP each rank runs its share (an evaluation loader: every ``world_size``-th sample,
    no padding) and the results are gathered, so every sample counts exactly once; all ranks
    return the full tensors, put back in the data set's order (so that anything indexing
    them, the tau sweep's split of the test set for one, sees the same rows at any world size).
    """
    was_training = net.training
    net.eval()
    fc = net.classifier.fc
    logits = [torch.zeros(0, fc.out_features, device=device)]
    feats = [torch.zeros(0, fc.in_features, device=device)]
    targets = [torch.zeros(0, dtype=torch.long, device=device)]
    n = len(loader)
    t0 = time.time()
    ctx = autocast or contextlib.nullcontext
    for i, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True)
        with ctx():
            out, h = net(x, return_features=True)
        logits.append(out.float())
        if with_features:
            feats.append(h.float())
        targets.append(y.to(device, non_blocking=True))
        if progress_every and (i + 1) % progress_every == 0:
            eta = (time.time() - t0) / (i + 1) * (n - i - 1)
            log.info("%s [%d/%d] eta %s", desc, i + 1, n, format_seconds(eta))
    net.train(was_training)
    parts = (logits, targets, feats) if with_features else (logits, targets)
    gathered = [comm.all_gather_cat(torch.cat(t)).cpu() for t in parts]
    world = comm.get_world_size()
    if world > 1:
        where = EpochSampler.gathered_order(gathered[0].shape[0], world)
        for i, t in enumerate(gathered):
            gathered[i] = torch.empty_like(t).index_copy_(0, where, t)
    return gathered[0], gathered[1], gathered[2] if with_features else None


def check_tau_norm(net: nn.Module) -> None:
    """Tau-normalisation is defined for a linear head only: a cosine or ETF head's class vectors
    all have norm 1 already (ConfigError line otherwise)."""
    kind = getattr(net.classifier, "kind", "linear")
    if kind != "linear":
        raise ConfigError(f"tau-normalisation (eval_tau_norm, --tau-sweep tau_norm) needs a "
                          f"linear classifier; this network's is {kind!r}, whose class vectors "
                          "all have norm 1, so it would change nothing (eval_logit_adjust and "
                          "--tau-sweep logit_adjust work with every classifier)")


class TauNormalised(nn.Module):
    """``net`` with its classifier tau-normalised (Kang et al., "Decoupling Representation and
    Classifier for Long-Tailed Recognition", ICLR 2020): logits from the rows w_j /
    ||w_j||^tau, without the bias (their tau-normalised classifier is a dot product); LWS,
    when the network has one, still scales the logits."""

    def __init__(self, net: nn.Module, tau: float):
        super().__init__()
        check_tau_norm(net)
        self.net = net
        self.classifier = net.classifier
        w = net.classifier.fc.weight.detach()
        self.register_buffer("weight", w / w.norm(dim=1, keepdim=True).pow(tau))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = self.net.classifier.embed(self.net.features(x))
        logits = F.linear(h, self.weight.to(h.dtype))
        if self.net.lws is not None:
            logits = self.net.lws(logits)
        return (logits, h) if return_features else logits


@dataclass
class PostHoc:
    """Evaluation-time corrections of a trained network (no training), from the config:

    * ``tau_norm`` > 0 (key ``eval_tau_norm``): the tau-normalised classifier
      (:class:`TauNormalised`, Kang et al. 2020);
    * ``logit_adjust`` > 0 (key ``eval_logit_adjust``): post-hoc logit adjustment, the argmax
      of z_j - tau * log pi_j with pi the training class prior (Menon et al., "Long-Tail
      Learning via Logit Adjustment", ICLR 2021).
    """

    tau_norm: float = 0.0
    logit_adjust: float = 0.0
    counts: Optional[Sequence[int]] = None

    @classmethod
    def from_config(cls, cfg, cls_num_list: Sequence[int]) -> "PostHoc":
        return cls(float(cfg.eval_tau_norm), float(cfg.eval_logit_adjust), list(cls_num_list))

    def __bool__(self) -> bool:
        return bool(self.tau_norm or self.logit_adjust)

    def network(self, net: nn.Module) -> nn.Module:
        return TauNormalised(net, self.tau_norm) if self.tau_norm else net

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.logit_adjust:
            return logits
        prior = torch.as_tensor(self.counts, dtype=torch.float64)
        prior = prior / prior.sum()
        return (logits.double() - self.logit_adjust * prior.log()).to(logits.dtype)

    def describe(self) -> str:
        parts = ([f"tau-normalised classifier (tau {self.tau_norm:g})"] if self.tau_norm
                 else []) + ([f"post-hoc logit adjustment (tau {self.logit_adjust:g})"]
                             if self.logit_adjust else [])
        return " + ".join(parts) or "none"


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, ranges: ClassRanges,
             autocast=None, progress_every: int = 0, posthoc: Optional[PostHoc] = None
             ) -> dict:
    """Top-1/5, per-class, many / medium / few accuracy, ECE and MCE (all in percent), of the
    network with the ``posthoc`` corrections when given."""
    posthoc = posthoc or PostHoc()
    logits, target, _ = predict(posthoc.network(net), loader, device, autocast,
                                progress_every=progress_every)
    return classification_report(posthoc.logits(logits), target, ranges)


def training_features(cfg, net: nn.Module, data, device: torch.device, rank: int,
                      world_size: int, autocast=None
                      ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) of the training set seen with test transforms
    (``data.train_eval``), gathered over ranks, for the neural-collapse metrics; None (and a
    warning) when the data set has no such view. Every rank must call it."""
    from datasets.loader import eval_loader
    if data.train_eval is None:
        log.warning("the data set offers no training view with test transforms; "
                    "neural-collapse metrics skipped")
        return None
    loader = eval_loader(cfg, data, "train_eval", device, rank, world_size)
    _, labels, feats = predict(net, loader, device, autocast, with_features=True,
                               progress_every=cfg.print_freq, desc="training features")
    return feats, labels
