"""What changes during training and must survive a resume, and the signals that stop it.

Every object here has ``state_dict()`` / ``load_state_dict()`` so that
:class:`engine.checkpointer.Checkpointer` can save and restore it.
"""
from __future__ import annotations

import random
import signal
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

import numpy as np
import torch

from utils import comm
from utils.slurm import PREEMPT_SIGNALS


@dataclass
class TrainState:
    """Progress shared by every rank. The field names are checkpoint keys; ``epoch``,
    ``best_acc1`` and ``its_ece`` are also the MiSLAS / ARB-Loss checkpoint keys."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # steps completed inside ``epoch`` (non-zero only after an interrupt)
    best_acc1: float = 0.0
    its_ece: float = 0.0  # ECE of the best model
    best_epoch: int = 0

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, ckpt: Dict[str, Any]) -> None:
        """Read the fields from a checkpoint dict (missing ones keep their defaults, so a
        MiSLAS checkpoint with only ``epoch`` / ``best_acc1`` / ``its_ece`` loads)."""
        for f in fields(self):
            if f.name in ckpt:
                cast = float if f.type == "float" else int  # a MiSLAS best_acc1 is a tensor
                setattr(self, f.name, cast(ckpt[f.name]))


class CutEpoch:
    """This rank's per-step losses, batch sizes and correct count of an epoch cut by an
    interrupt, so that the resumed epoch's statistics are the same floating-point sums as an
    uninterrupted one (checkpoint key ``partial``, one entry per rank)."""

    def __init__(self) -> None:
        self.losses: list = []
        self.counts: list = []
        self.correct = 0.0

    def state_dict(self) -> Dict[str, Any]:
        if not self.losses:
            return {}
        return {"losses": list(self.losses), "counts": list(self.counts),
                "correct": float(self.correct)}

    def load_state_dict(self, st: Optional[Dict[str, Any]]) -> None:
        st = st or {}
        self.losses = list(st.get("losses", []))
        self.counts = list(st.get("counts", []))
        self.correct = float(st.get("correct", 0.0))

    def clear(self) -> None:
        self.load_state_dict({})


class RandomStreams:
    """The random streams used in the main process during training (mixup's lam and
    permutation), seeded per rank; their state goes into checkpoints for exact resume."""

    def __init__(self, seed: int, rank: int):
        self.numpy = np.random.default_rng(seed + 7919 * rank)
        self.torch = torch.Generator().manual_seed(seed + 7919 * rank)

    def state_dict(self) -> Dict[str, Any]:
        v, s, g = random.getstate()
        return {"numpy": self.numpy.bit_generator.state, "torch": self.torch.get_state(),
                "torch_global": torch.get_rng_state(), "python": [v, list(s), g]}

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        self.numpy.bit_generator.state = st["numpy"]
        self.torch.set_state(st["torch"])
        torch.set_rng_state(st["torch_global"])
        v, s, g = st["python"]
        random.setstate((v, tuple(s), g))


class StopFlag:
    """Set by SIGTERM / SIGINT, and by SLURM's pre-emption signals SIGUSR1 / SIGUSR2
    (:data:`utils.slurm.PREEMPT_SIGNALS`); the training loop stops after the current step.

    ``group``: the process group the ranks agree through (``comm.host_group()``)."""

    def __init__(self, group=None) -> None:
        self.signum = 0
        self.group = group
        self._old: Dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, *PREEMPT_SIGNALS):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def preempted(self) -> bool:
        """Whether the signal was a pre-emption notice (save, requeue, exit)."""
        return self.signum in PREEMPT_SIGNALS

    def any_rank(self) -> bool:
        """True on every rank if any rank was signalled, so all ranks stop at the same step;
        every rank then reports the (highest) signal number received."""
        if comm.get_world_size() > 1:
            t = torch.tensor([self.signum], dtype=torch.int64)  # host tensor: no device sync
            self.signum = int(comm.all_reduce_max(t, self.group).item())
        return bool(self.signum)
