"""Stage-1 training of a long-tailed classifier with ARB-Loss (or cross-entropy), MiSLAS style.

    python train_stage1.py --cfg config/cifar100/cifar100_imb001_stage1_mixup.yaml [KEY VALUE ...]
    python train_stage1.py --cfg CFG --dry-run            # check the config, create nothing
    python train_stage1.py --cfg CFG num_epochs 10 --dry-run   # flags may come anywhere
    torchrun --nproc_per_node 4 train_stage1.py --cfg config/imagenet/...yaml
    python -m torch.distributed.launch --nproc_per_node 4 train_stage1.py --cfg ...

Exit status: 0 done, 2 user error (one line on stderr), 3 non-finite loss, 128 + N stopped
by signal N after saving a resumable checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from config import load_config
from datasets import build_data
from engine import HookBase, Trainer, distributed_session
from engine.cli import ScriptParser
from utils import comm
from utils.errors import exit_on_user_error

PROG = "train_stage1.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``--cfg``, ``--dry-run``, ``--local_rank`` anywhere; ``opts``: the KEY VALUE overrides."""
    p = ScriptParser(PROG, "Stage-1 long-tailed training (ARB-Loss / cross-entropy).")
    p.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, print a summary and exit; creates and "
                        "downloads nothing")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """Entry point; returns the exit status. ``hooks`` run after the default ones."""
    with exit_on_user_error(PROG):
        args = parse_args(argv)
        cfg = load_config(args.cfg, args.opts)
        with distributed_session(cfg, args.local_rank) as dist:
            # A dry run creates nothing: no download, no unpacked archive, no run folder.
            data = build_data(cfg, dry_run=True) if args.dry_run else None
            trainer = Trainer(cfg, dist, hooks, data=data)
            if args.dry_run:
                comm.on_main(print, trainer.summary())
                return 0
            return trainer.train()


if __name__ == "__main__":
    sys.exit(main())
