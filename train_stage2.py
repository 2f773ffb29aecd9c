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

from config import load_config
from datasets import build_data
from engine import HookBase, distributed_session
from engine.cli import ScriptParser
from engine.stage2 import Stage2Trainer
from utils import comm
from utils.errors import exit_on_user_error

PROG = "train_stage2.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``--cfg``, ``--dry-run``, ``--local_rank`` anywhere; ``opts``: the KEY VALUE overrides."""
    p = ScriptParser(PROG, "Stage-2 classifier re-training (MiSLAS, cRT, LWS).")
    p.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, print a summary and exit; creates and "
                        "downloads nothing, reads no checkpoint")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None, hooks: Sequence[HookBase] = ()) -> int:
    """Entry point; returns the exit status. ``hooks`` run after the default ones."""
    with exit_on_user_error(PROG):
        args = parse_args(argv)
        cfg = load_config(args.cfg, args.opts, stage=2)
        with distributed_session(cfg, args.local_rank) as dist:
            data = build_data(cfg, dry_run=True) if args.dry_run else None
            trainer = Stage2Trainer(cfg, dist, hooks, data=data)
            if args.dry_run:
                comm.on_main(print, trainer.summary())
                return 0
            return trainer.train()


if __name__ == "__main__":
    sys.exit(main())
