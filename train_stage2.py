"""Stage 2: re-train the classifier of a stage-1 network, MiSLAS's recipe (label-aware
smoothing, shifted BatchNorm, learnable weight scaling, class-aware sampling) or the decoupled
baselines cRT / LWS (``stage2_method``); see engine/stage2.py.

    python train_stage2.py --cfg config/cifar100/cifar100_imb001_stage2_mislas.yaml resume CKPT
    python train_stage2.py --cfg CFG --dry-run         # check the config, create nothing
    torchrun --nproc_per_node 4 train_stage2.py --cfg config/imagenet/<stage-2 yaml> resume CKPT

``resume`` names the stage-1 checkpoint (ours, or one of MiSLAS / the ARB-Loss code); a stage-2
checkpoint of ours (or ``resume auto``) continues an interrupted stage-2 run exactly. Exit
status as train_stage1.py: 0 done, 2 user error, 3 non-finite loss, 128 + N signal N.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from engine import HookBase
from engine.cli import run_training, training_parser
from engine.stage2 import Stage2Trainer

PROG = "train_stage2.py"
DESCRIPTION = "Stage-2 classifier re-training (MiSLAS, cRT, LWS)."


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``--cfg``, ``--dry-run``, ``--local_rank`` anywhere; ``opts``: the KEY VALUE overrides."""
    return training_parser(PROG, DESCRIPTION).parse_args(argv)


def main(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """Entry point; returns the exit status. ``hooks`` run after the default ones."""
    return run_training(PROG, DESCRIPTION, 2, Stage2Trainer, argv, hooks)


if __name__ == "__main__":
    sys.exit(main())
