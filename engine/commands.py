"""The commands of the top-level scripts, which are shims over them: ``train_stage1.py``,
``train_stage2.py`` and ``eval.py``. Tests and tools call these functions (never a script).

Each takes the command line (``argv``; default ``sys.argv[1:]``) and returns the exit status;
user errors end with one line on stderr and ``SystemExit(2)``.
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from engine.cli import run_training, training_parser
from engine.eval_cli import main as _eval_main
from engine.eval_cli import parse_args as eval_args
from engine.hooks import HookBase
from engine.stage2 import Stage2Trainer
from engine.trainer import Trainer

STAGE1 = ("train_stage1.py", "Stage-1 long-tailed training (ARB-Loss, cross-entropy, baseline "
          "losses).")
STAGE2 = ("train_stage2.py", "Stage-2 classifier re-training (MiSLAS, cRT, LWS).")

__all__ = ["train_stage1", "train_stage2", "evaluate", "stage1_args", "stage2_args",
           "eval_args"]


def stage1_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``--cfg``, ``--dry-run``, ``--local_rank`` anywhere; ``opts``: the KEY VALUE overrides."""
    return training_parser(*STAGE1).parse_args(argv)


def stage2_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """As :func:`stage1_args`, for train_stage2.py."""
    return training_parser(*STAGE2).parse_args(argv)


def train_stage1(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """``train_stage1.py``: stage-1 training; ``hooks`` run after the default ones."""
    return run_training(*STAGE1, 1, Trainer, argv, hooks)


def train_stage2(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """``train_stage2.py``: classifier re-training on a stage-1 checkpoint."""
    return run_training(*STAGE2, 2, Stage2Trainer, argv, hooks)


def evaluate(argv: Optional[List[str]] = None) -> int:
    """``eval.py``: evaluate a checkpoint, or sweep a post-hoc tau."""
    return _eval_main(argv)
