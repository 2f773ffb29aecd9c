"""Running under SLURM: the process layout of an ``srun`` step, and requeueing a pre-empted job.

``srun`` starts one task per process and tells each its place through the environment
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_STEP_NODELIST``), as timm,
torchvision's references and mmengine read it. The variables count only inside a job step
(``SLURM_STEP_ID`` set by srun): a plain ``python`` in the batch script of a 4-task job sees
``SLURM_NTASKS=4`` too, and must not wait for three processes that never start.

Pre-emption: ``sbatch --signal=USR1@90`` sends SIGUSR1 to every task 90 s before the time limit
(submitit sends SIGUSR2, because NCCL may catch USR1). Training then saves a resumable
checkpoint at the next step boundary and asks SLURM to requeue the job (:func:`requeue`); the
requeued job continues with ``resume auto``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Mapping, NamedTuple, Optional

# the signals that mean "you are about to be stopped: save and requeue"
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class SlurmTask(NamedTuple):
    """This process's place in an srun step and the rendezvous of its group."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``'gpu[07-09,12],cpu1'`` -> ``'gpu07'``."""
    item, depth = "", 0
    for ch in nodelist.strip():
        if ch == "," and depth == 0:
            break
        depth += (ch == "[") - (ch == "]")
        item += ch
    if "[" not in item:
        return item
    prefix, rest = item.split("[", 1)
    ranges, suffix = rest.split("]", 1)
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def task_from_env(env: Optional[Mapping[str, str]] = None) -> Optional[SlurmTask]:
    """The :class:`SlurmTask` of this process when it is one of several tasks of an srun step
    (see the module docstring); None otherwise. The rendezvous is the step's first node, port
    ``MASTER_PORT`` or one derived from the job id (every task of the job derives the same)."""
    env = os.environ if env is None else env
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    world = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    if world <= 1:
        return None
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    addr = env.get("MASTER_ADDR") or first_host(nodes)
    port = int(env.get("MASTER_PORT") or 15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return SlurmTask(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", "0")), addr,
                     port)


def requeue() -> str:
    """Ask SLURM to requeue this job (``scontrol requeue $SLURM_JOB_ID``); returns what happened
    in a few words, for the log line."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "not requeued (not a SLURM job)"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return "not requeued (no scontrol on PATH)"
    try:
        done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"requeue of job {job} failed ({e})"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return f"requeue of job {job} failed ({why[0] if why else done.returncode})"
    return f"requeued (job {job})"
