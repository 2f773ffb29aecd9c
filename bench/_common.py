"""Shared helpers of the bench scripts: device choice, a header, interleaved timing, tables.

Candidates are timed side by side in one process: after a warm-up, every repeat runs each
candidate once in turn, so slow drifts of the machine (other processes, clock changes) hit
all of them alike. The best (minimum) of the repeats is reported: interference from other
processes only ever adds time, so on a shared machine the minimum is the estimate closest to
the cost of the code itself (the median is returned too).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pick_device() -> torch.device:
    """CUDA when available, else CPU. ``BENCH_THREADS=N`` sets torch's intra-op threads:
    on a CPU shared with other busy processes, 1 thread avoids OpenMP barriers waiting for a
    descheduled sibling thread (seconds-long stalls of millisecond ops)."""
    threads = int(os.environ.get("BENCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def header(title: str, device: torch.device) -> None:
    """Print what the numbers were measured on."""
    print(f"# {title}")
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    load = (", load average %.1f / %.1f / %.1f" % os.getloadavg() if hasattr(os, "getloadavg")
        else "")
    print(f"device: {device} = {what}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} intra-op threads{load}")
    print()


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fns: Dict[str, Callable[[], object]], device: torch.device, repeats: int,
           warmup: int = 1, inner: int = 1, with_median: bool = False):
    """Best seconds per call of each function over ``repeats`` interleaved repeats (see the
    module docstring); with ``with_median`` also the medians, as a second dict.

    ``inner`` calls are timed together (for calls far shorter than the timer's resolution)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - t0) / inner)
    best = {k: min(v) for k, v in samples.items()}
    if with_median:
        return best, {k: statistics.median(v) for k, v in samples.items()}
    return best


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (printed and returned)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa
    out = "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                    + [line(r) for r in cells])
    print(out)
    print()
    return out


def ms(seconds: float) -> str:
    """Milliseconds with 3 significant digits."""
    return f"{seconds * 1e3:.3g}"
