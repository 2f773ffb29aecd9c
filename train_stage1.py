"""Stage-1 training of a long-tailed classifier with ARB-Loss (or cross-entropy and the other
losses of ``loss``), MiSLAS style.

    python train_stage1.py --cfg config/cifar100/cifar100_imb001_stage1_mixup.yaml [KEY VALUE ...]
    python train_stage1.py --cfg CFG --dry-run            # check the config, create nothing
    torchrun --nproc_per_node 4 train_stage1.py --cfg config/imagenet/...yaml
    python -m torch.distributed.launch --nproc_per_node 4 train_stage1.py --cfg ...

The flow: arguments -> config (config/) -> process group and device -> engine.Trainer(cfg)
(data, network, loss; engine/trainer.py) -> train() (epochs, hooks: evaluation, analysis,
metrics, checkpoints). Exit status: 0 done, 2 user error (one line on stderr), 3 non-finite
loss, 128 + N stopped by signal N after saving a resumable checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from engine import HookBase, Trainer
from engine.cli import run_training, training_parser

PROG = "train_stage1.py"
DESCRIPTION = "Stage-1 long-tailed training (ARB-Loss, cross-entropy, baseline losses)."


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``--cfg``, ``--dry-run``, ``--local_rank`` anywhere; ``opts``: the KEY VALUE overrides."""
    return training_parser(PROG, DESCRIPTION).parse_args(argv)


def main(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """Entry point; returns the exit status. ``hooks`` run after the default ones."""
    return run_training(PROG, DESCRIPTION, 1, Trainer, argv, hooks)


if __name__ == "__main__":
    sys.exit(main())
