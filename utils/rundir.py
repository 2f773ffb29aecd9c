"""The run folder: ``<output_dir>/<name>_<YYYYmmddHHMM>/{logs/<name>.txt, ckps/*.pth.tar,
metrics.jsonl, TensorBoard events}``. Only rank 0 writes; every rank knows the path."""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
from typing import Any, Dict, Optional

from utils import comm
from utils.errors import ConfigError

log = logging.getLogger(__name__)


def _unique_folder(root: str, name: str) -> str:
    """Create and return a new folder ``root/name_<stamp>`` (``_2``, ``_3``... if taken)."""
    stamp = time.strftime("%Y%m%d%H%M")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        msg = f"key 'output_dir': cannot create {root!r} ({e.strerror or e})"
        raise ConfigError(msg) from None
    base = os.path.join(root, f"{name}_{stamp}")
    for k in range(1, 10000):
        path = base if k == 1 else f"{base}_{k}"
        try:
            os.mkdir(path)  # atomic: two runs never share a folder
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"key 'output_dir': cannot create a run folder in {root!r} "
                              f"({e.strerror or e})") from None
    raise ConfigError(f"key 'output_dir': too many runs named {name} this minute in {root}")


def run_folder_of_checkpoint(path: str, cfg) -> Optional[str]:
    """The run folder a checkpoint of ours lives in (``<run>/<model_dir>/x.pth.tar``), else None."""
    ckpt_dir = os.path.dirname(os.path.abspath(path))
    run = os.path.dirname(ckpt_dir)
    if (os.path.basename(ckpt_dir) == cfg.model_dir and
            os.path.isfile(os.path.join(run, "metrics.jsonl"))):
        return run
    return None


def find_latest_checkpoint(cfg) -> str:
    """Newest ``current.pth.tar`` of runs named ``cfg.name`` under ``output_dir`` ('' if none)."""
    pattern = os.path.join(glob.escape(cfg.output_dir), glob.escape(cfg.name) + "_*",
                           cfg.model_dir, "current.pth.tar")
    found = [p for p in glob.glob(pattern)
             if os.path.basename(os.path.dirname(os.path.dirname(p)))[len(cfg.name) + 1:]
             .replace("_", "").isdigit()]
    return max(found, key=os.path.getmtime) if found else ""


class RunDir:
    """Paths of one run and its rank-0 writers."""

    def __init__(self, path: str, cfg):
        self.path = path
        self.name = cfg.name
        self.log_dir = os.path.join(path, cfg.log_dir)
        self.ckpt_dir = os.path.join(path, cfg.model_dir)
        self.log_file = os.path.join(self.log_dir, f"{cfg.name}.txt")
        self.current = os.path.join(self.ckpt_dir, "current.pth.tar")
        self.best = os.path.join(self.ckpt_dir, "model_best.pth.tar")
        self.metrics_file = os.path.join(path, "metrics.jsonl")

    @classmethod
    def for_training(cls, cfg, resume: str = "", resumed_epoch: int = 0) -> "RunDir":
        """The resumed run's folder when resuming one of ours (its metrics.jsonl cut back to
        the checkpoint's epoch), else a new folder."""
        path = None
        if comm.is_main_process():
            path = run_folder_of_checkpoint(resume, cfg) if resume else None
            if path is None:
                path = _unique_folder(cfg.output_dir, cfg.name)
            else:
                cls(path, cfg).truncate_metrics(resumed_epoch)
            for sub in (cfg.log_dir, cfg.model_dir):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
        return cls(comm.broadcast_object(path), cfg)

    def truncate_metrics(self, epoch: int) -> None:
        """Keep only the complete rows of epochs <= ``epoch`` (a run killed between writing
        metrics and saving its checkpoint, or in the middle of a line, repeats that epoch)."""
        if not os.path.isfile(self.metrics_file):
            return
        keep = []
        with open(self.metrics_file, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and int(row.get("epoch", 0)) <= epoch:
                    keep.append(json.dumps(row) + "\n")
        tmp = self.metrics_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.metrics_file)

    def tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=self.log_dir)

    def record(self, row: Dict[str, Any], writer=None) -> None:
        """Append one epoch's metrics to metrics.jsonl and TensorBoard (rank 0 only)."""
        if not comm.is_main_process():
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in row.items()}
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if writer is not None:
            step = int(row["epoch"])
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                    group = "train" if k.startswith("train_") or k == "lr" else "test"
                    writer.add_scalar(f"{group}/{k}", v, step)
            writer.flush()
