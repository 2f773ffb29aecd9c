"""Logging set-up: rank 0 logs INFO to stdout and the run's text log; other ranks only warnings."""
from __future__ import annotations

import logging
import sys
from typing import Optional

_FMT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(rank: int = 0, log_file: Optional[str] = None) -> logging.Logger:
    """Configure the root logger once per process; returns it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(_FMT, datefmt="%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_file and rank == 0:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    return root


def file_handler(log_file: str) -> logging.Handler:
    """A handler appending records to ``log_file`` in the run log's format."""
    fh = logging.FileHandler(log_file)
    fh.setFormatter(logging.Formatter(_FMT, datefmt="%Y-%m-%d %H:%M:%S"))
    return fh


def add_log_file(log_file: str) -> logging.Handler:
    """Also write the root logger's records to ``log_file`` (rank 0 calls this); returns the
    handler (remove and close it when the run ends)."""
    fh = file_handler(log_file)
    logging.getLogger().addHandler(fh)
    return fh


def format_seconds(s: float) -> str:
    """``h:mm:ss`` for progress lines."""
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{sec:02d}"
