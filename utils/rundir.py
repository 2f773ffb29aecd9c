"""The run folder: ``<output_dir>/<name>_<YYYYmmddHHMM>/{logs/<name>.txt, ckps/*.pth.tar,
metrics.jsonl, TensorBoard events, .lock}``. Only rank 0 writes; every rank knows the path.

A run folder belongs to one run of one config:

* while a run writes to its folder, rank 0 holds an exclusive lock on ``<run>/.lock`` (the
  file names its pid); a second process that wants the folder (``resume auto`` of the same
  config while the first runs) stops with one line and touches nothing. The operating system
  releases the lock whenever the holder ends, however it ends; the file itself may stay.
* resuming continues in the checkpoint's folder only when the config is the same up to
  ``config.resume.RESUME_SAFE_KEYS``; otherwise the trainer starts a new folder, and the
  checkpoint's folder is never written.

Nothing here reads a config: the callers pass the few values (output_dir, name, log_dir,
model_dir) it needs.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from utils import comm
from utils.checkpoint import write_error
from utils.errors import ConfigError, RunError, UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, folders are unprotected
    fcntl = None

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"

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


def run_folder_of_checkpoint(path: str, name: str, log_dir: str = "logs",
                             model_dir: str = "ckps") -> Optional[str]:
    """The run folder a checkpoint of ours lives in (``<run>/<model_dir>/x.pth.tar``, the run
    having its metrics, text log (``<log_dir>/<name>.txt``) or lock file: also a run stopped
    before its first metrics row), else None."""
    ckpt_dir = os.path.dirname(os.path.abspath(path))
    run = os.path.dirname(ckpt_dir)
    marks = (METRICS_FILE, os.path.join(log_dir, f"{name}.txt"), LOCK_FILE)
    if (os.path.basename(ckpt_dir) == model_dir and
            any(os.path.isfile(os.path.join(run, m)) for m in marks)):
        return run
    return None


def find_latest_checkpoint(output_dir: str, name: str, model_dir: str = "ckps") -> str:
    """Newest ``current.pth.tar`` of runs named ``name`` under ``output_dir`` ('' if none)."""
    pattern = os.path.join(glob.escape(output_dir), glob.escape(name) + "_*", model_dir,
                           "current.pth.tar")
    found = [p for p in glob.glob(pattern)
             if os.path.basename(os.path.dirname(os.path.dirname(p)))[len(name) + 1:]
             .replace("_", "").isdigit()]
    return max(found, key=os.path.getmtime) if found else ""


def _holder(path: str) -> str:
    """Who holds a run folder's lock, from the lock file (``process <pid> on <host>``)."""
    try:
        with open(path, encoding="utf-8") as f:
            pid, _, host = f.read().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "another process"
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


class RunLock:
    """Exclusive use of a run folder by one process: ``fcntl.flock`` on ``<run>/.lock``, the
    holder's pid (and host) written in the file. Held from :meth:`acquire` until
    :meth:`release` or the end of the process (the operating system releases it then, so the
    lock of a process that died is free; the file may stay). The descriptor is not inherited
    by child processes, so loader workers never keep a folder locked."""

    def __init__(self, folder: str, file: str = LOCK_FILE,
                 busy: str = "a run of this config is writing there"):
        self.folder = folder
        self.path = os.path.join(folder, file)
        self.busy = busy  # what the holder is doing, for the error line
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunError` naming the holder (nothing is written
        then)."""
        if fcntl is None or self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(write_error("cannot lock the run folder", self.folder, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            kind = "run folder" if os.path.basename(self.path) == LOCK_FILE else "folder"
            raise RunError(f"{kind} {self.folder} is in use by {_holder(self.path)} "
                           f"({self.busy}); wait for it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_only(folder: str) -> bool:
    """A folder this process cannot write (permissions, a read-only file system or mount), or
    one marked read-only (no write bit for anyone: ``chmod a-w``), which is respected even
    by root (in a container, runs often are root)."""
    return not os.access(folder, os.W_OK) or not os.stat(folder).st_mode & 0o222


def check_writable(run: str, folders: List[str]) -> None:
    """Refuse, before any training, to continue a run whose folders cannot be written:
    :class:`RunError` naming the folder."""
    for folder in folders:
        if os.path.isdir(folder) and _read_only(folder):
            raise RunError(f"cannot continue the run in {run}: folder {folder} is read-only "
                           "(its checkpoints and logs are written there); make it writable, "
                           "or resume a copy of the checkpoint to continue in a new run "
                           "folder")


class RunDir:
    """Paths of one run and its rank-0 writers."""

    def __init__(self, path: str, name: str, log_dir: str = "logs", model_dir: str = "ckps"):
        self.path = path
        self.name = name
        self.log_dir = os.path.join(path, log_dir)
        self.ckpt_dir = os.path.join(path, model_dir)
        self.log_file = os.path.join(self.log_dir, f"{name}.txt")
        self.current = os.path.join(self.ckpt_dir, "current.pth.tar")
        self.best = os.path.join(self.ckpt_dir, "model_best.pth.tar")
        self.metrics_file = os.path.join(path, METRICS_FILE)
        # the config the run trains with (yaml + overrides), loadable with --cfg
        self.config_file = os.path.join(path, CONFIG_FILE)
        self.lock: Optional[RunLock] = None  # rank 0 of a training run holds it
        self.created = False  # made by this process (not a resumed run's folder)

    @classmethod
    def for_training(cls, output_dir: str, name: str, log_dir: str = "logs",
                     model_dir: str = "ckps", continue_in: Optional[str] = None,
                     resumed_epoch: int = 0) -> "RunDir":
        """Rank 0 takes the run's folder and locks it (:class:`RunLock`): ``continue_in``, the
        folder of the run being resumed (checked writable, its metrics.jsonl cut back to the
        checkpoint's epoch), else a new folder ``<output_dir>/<name>_<stamp>``. Every rank gets
        the RunDir, or the same one-line error (nothing is written then)."""
        path, error, lock = None, None, None
        if comm.is_main_process():
            try:
                if continue_in:
                    path = continue_in
                    check_writable(path, [path] + [os.path.join(path, sub) for sub in
                                                   (log_dir, model_dir)])
                    lock = RunLock(path)
                    lock.acquire()
                    cls(path, name, log_dir, model_dir).truncate_metrics(resumed_epoch)
                else:
                    path = _unique_folder(output_dir, name)
                    lock = RunLock(path)
                    lock.acquire()
                for sub in (log_dir, model_dir):
                    os.makedirs(os.path.join(path, sub), exist_ok=True)
            except UserError as e:
                if lock is not None:
                    lock.release()
                error = e
            except OSError as e:
                if lock is not None:
                    lock.release()
                error = RunError(write_error("cannot prepare the run folder", path, e))
        path, error = comm.broadcast_object((path, error))
        if error is not None:
            raise error
        run = cls(path, name, log_dir, model_dir)
        run.lock = lock
        run.created = not continue_in
        return run

    def write_config(self, text: str) -> None:
        """Write the run's config (rank 0) as ``config.yaml``, replacing it atomically."""
        tmp = self.config_file + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.config_file)
        except OSError as e:
            raise RunError(write_error(f"cannot write {self.config_file}", self.path, e)) from None

    def discard_if_untrained(self) -> bool:
        """Remove the folder of a run this process created when it holds no checkpoint and no
        metrics row (a run stopped by an error before its first epoch ended leaves nothing
        behind); rank 0, after :meth:`release`. Returns whether it was removed."""
        if not self.created or os.path.exists(self.current) or os.path.exists(self.best):
            return False
        if os.path.isfile(self.metrics_file) and os.path.getsize(self.metrics_file) > 0:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return not os.path.exists(self.path)

    def release(self) -> None:
        """Give the folder's lock back (rank 0; at the end of a run)."""
        if self.lock is not None:
            self.lock.release()

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
        """Append one epoch's metrics to metrics.jsonl and TensorBoard (rank 0 writes; every
        rank calls it and gets the same :class:`RunError` when the write fails)."""
        error = None
        if comm.is_main_process():
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()}
            try:
                with open(self.metrics_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(clean) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                error = RunError(write_error(f"cannot write {self.metrics_file}", self.path, e))
        error = comm.broadcast_object(error)
        if error is not None:
            raise error
        if not comm.is_main_process():
            return
        if writer is not None:
            step = int(row["epoch"])
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                    group = "train" if k.startswith("train_") or k == "lr" else "test"
                    writer.add_scalar(f"{group}/{k}", v, step)
            writer.flush()


# ----------------------------------------------------------------------------- reading metrics
def is_finite_number(x: Any) -> bool:
    """A real number (not a bool), finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def metrics_path(run: str) -> str:
    """The metrics.jsonl of a run folder (a path to the file itself is accepted too)."""
    if os.path.isfile(run) and os.path.basename(run) == METRICS_FILE:
        return run
    return os.path.join(run, METRICS_FILE)


@dataclass
class MetricsLog:
    """The rows of one run's metrics.jsonl (written by :meth:`RunDir.record`), sorted by epoch,
    and notes on the lines that were skipped."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def evaluated(self) -> List[Dict[str, Any]]:
        """Rows with a finite Acc@1 (epochs that were evaluated)."""
        return [r for r in self.rows if is_finite_number(r.get("acc1"))]

    def best(self) -> Optional[Dict[str, Any]]:
        """The first evaluated epoch reaching the highest Acc@1 (as model_best keeps it)."""
        ev = self.evaluated
        return max(ev, key=lambda r: (r["acc1"], -r["epoch"])) if ev else None

    def final(self) -> Optional[Dict[str, Any]]:
        ev = self.evaluated
        return ev[-1] if ev else None


def read_metrics(run: str) -> MetricsLog:
    """The metrics.jsonl of ``run`` (a run folder or the file): every line holding a JSON object
    with a finite ``epoch``; a partial last line (a run in progress), an unreadable line or a
    row without an epoch is skipped with a note. A missing or unreadable file gives no rows and
    one note."""
    path = metrics_path(run)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return MetricsLog([], [f"{path}: cannot read ({e})"])
    numbered = [(i + 1, text) for i, text in enumerate(lines) if text.strip()]
    log_ = MetricsLog()
    for k, (lineno, text) in enumerate(numbered):
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            log_.notes.append("partial last line ignored (run in progress?)"
                              if k == len(numbered) - 1 else f"line {lineno} unreadable, skipped")
            continue
        if not isinstance(row, dict) or not is_finite_number(row.get("epoch")):
            log_.notes.append(f"line {lineno} has no epoch, skipped")
            continue
        log_.rows.append(row)
    log_.rows.sort(key=lambda r: r["epoch"])
    return log_
