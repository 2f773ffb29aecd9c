"""Running a network over a data set and turning its logits into the reported metrics."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from utils import comm
from utils.metrics import ClassRanges, classification_report

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(net: nn.Module, loader: DataLoader, device: torch.device,
            autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
            features: bool = False, progress_every: int = 0,
            desc: str = "eval") -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits (or features) and targets of every sample of ``loader``'s data set.

    Under DDP each rank runs its share (no padding) and the results are gathered, so every
    sample counts exactly once; all ranks return the full tensors.
    """
    was_training = net.training
    net.eval()
    outs, targets = [], []
    n = len(loader)
    t0 = time.time()
    ctx = autocast or contextlib.nullcontext
    for i, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True)
        with ctx():
            out = net.features(x) if features else net(x)
        outs.append(out.float())
        targets.append(y.to(device, non_blocking=True))
        if progress_every and (i + 1) % progress_every == 0:
            eta = (time.time() - t0) / (i + 1) * (n - i - 1)
            log.info("%s [%d/%d] eta %s", desc, i + 1, n, format_seconds(eta))
    net.train(was_training)
    dim = getattr(net.classifier, "fc", None)
    empty_dim = dim.out_features if (dim is not None and not features) else 0
    logits = torch.cat(outs) if outs else torch.zeros(0, empty_dim, device=device)
    target = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=device)
    return comm.all_gather_cat(logits).cpu(), comm.all_gather_cat(target).cpu()


def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, ranges: ClassRanges,
             autocast=None, progress_every: int = 0) -> dict:
    """Top-1/5, per-class, many / medium / few accuracy, ECE and MCE (all in percent)."""
    logits, target = predict(net, loader, device, autocast, progress_every=progress_every)
    return classification_report(logits, target, ranges)


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{sec:02d}"
