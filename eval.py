"""Evaluate a checkpoint (ours or a MiSLAS / ARB-Loss one) on the config's test set.

    python eval.py --cfg config/cifar10/cifar10_imb001_stage1_mixup.yaml resume saved/.../ckps/model_best.pth.tar
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from config import load_config
from datasets import build_data
from datasets.loader import build_loader, per_rank_workers
from models import build_network
from train_stage1 import autocast_factory
from utils import comm
from utils.checkpoint import load_checkpoint, load_network_state
from utils.errors import ConfigError, exit_on_user_error
from utils.evaluation import evaluate
from utils.logger import setup_logging
from utils.metrics import class_ranges

log = logging.getLogger("eval")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a stage-1 checkpoint.")
    p.add_argument("--cfg", required=True, help="yaml config file of the run")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, dest="local_rank")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE overrides; 'resume CKPT' names the checkpoint")
    return p.parse_args(argv)


def run_eval(cfg, local_rank: Optional[int] = None) -> dict:
    """Metrics of the checkpoint ``cfg.resume`` on the test set (all ranks return them)."""
    if not cfg.resume:
        raise ConfigError("no checkpoint given: add 'resume PATH' after the config")
    info = comm.init_distributed(cfg, local_rank)
    setup_logging(info.rank)
    try:
        data = build_data(cfg)
        ranges = class_ranges(cfg, data.cls_num_list)
        net = build_network(cfg, cfg.num_classes, data.in_channels)
        ckpt = load_checkpoint(cfg.resume, legacy=cfg.legacy_checkpoint)
        load_network_state(net, ckpt, cfg.resume)
        net.to(info.device)
        loader = build_loader(data.test, max((cfg.test_batch_size or cfg.batch_size)
                                             // info.world_size, 1),
                              train=False, seed=cfg.seed, rank=info.rank,
                              world_size=info.world_size,
                              workers=per_rank_workers(cfg.workers, info.world_size),
                              pin_memory=info.device.type == "cuda")
        metrics = evaluate(net, loader, info.device, ranges, autocast_factory(cfg, info.device),
                           progress_every=cfg.print_freq)
        metrics["checkpoint"] = os.path.abspath(cfg.resume)
        metrics["checkpoint_epoch"] = int(ckpt.get("epoch", 0))
        return metrics
    finally:
        comm.cleanup_distributed()


def format_metrics(m: dict) -> str:
    return (f"Acc@1 {m['acc1']:.3f} Acc@5 {m['acc5']:.3f} many {m['many']:.3f} "
            f"medium {m['medium']:.3f} few {m['few']:.3f} ECE {m['ece']:.3f} MCE {m['mce']:.3f} "
            f"({m['num_samples']} test images)")


def main(argv: Optional[List[str]] = None) -> int:
    with exit_on_user_error("eval.py"):
        args = parse_args(argv)
        cfg = load_config(args.cfg, args.opts)
        m = run_eval(cfg, args.local_rank)
        if comm.get_rank() == 0:
            if args.json:
                print(json.dumps({k: v for k, v in m.items() if k != "calibration"}))
            else:
                print(f"{os.path.basename(cfg.resume)} (epoch {m['checkpoint_epoch']}): "
                      + format_metrics(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
