"""Running a network over a data set and turning its logits into the reported metrics."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from analysis.metrics import ClassRanges, classification_report
from utils import comm
from utils.logger import format_seconds

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(net: nn.Module, loader: DataLoader, device: torch.device,
            autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
            with_features: bool = False, progress_every: int = 0, desc: str = "eval"
            ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Logits, targets and (``with_features``) the classifier's ``fc`` inputs of every sample
    of ``loader``'s data set, on the CPU.

    Under DDP each rank runs its share (no padding) and the results are gathered, so every
    sample counts exactly once; all ranks return the full tensors.
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
    gathered = [comm.all_gather_cat(torch.cat(t)).cpu() for t in (logits, targets)]
    h_all = comm.all_gather_cat(torch.cat(feats)).cpu() if with_features else None
    return gathered[0], gathered[1], h_all


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, ranges: ClassRanges,
             autocast=None, progress_every: int = 0) -> dict:
    """Top-1/5, per-class, many / medium / few accuracy, ECE and MCE (all in percent)."""
    logits, target, _ = predict(net, loader, device, autocast, progress_every=progress_every)
    return classification_report(logits, target, ranges)


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
