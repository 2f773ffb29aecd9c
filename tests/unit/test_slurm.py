"""SLURM: the task layout of an srun step and the requeue call (utils/slurm.py)."""
import os
import signal

import pytest

from engine.state import StopFlag
from tests.fixtures import fake_scontrol
from utils import slurm


@pytest.mark.parametrize("nodelist,first", [
    ("gpu07", "gpu07"), ("gpu[07-09,12],cpu1", "gpu07"), ("a1,b[2-3]", "a1"),
    ("node[003,010-012]-ib", "node003-ib"), ("127.0.0.1", "127.0.0.1"),
])
def test_first_host_of_a_node_list(nodelist, first):
    assert slurm.first_host(nodelist) == first


def test_the_task_comes_from_an_srun_step_only():
    step = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
            "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "12345"}
    assert slurm.task_from_env(step) == slurm.SlurmTask(3, 4, 1, "gpu07", 15000 + 12345 % 20000)
    assert slurm.task_from_env({**step, "MASTER_ADDR": "h", "MASTER_PORT": "29500"})[3:] == (
        "h", 29500)
    # srun's per-step count wins over the job's
    assert slurm.task_from_env({**step, "SLURM_STEP_NUM_TASKS": "2"}).world_size == 2
    batch_shell = {k: v for k, v in step.items() if k != "SLURM_STEP_ID"}
    assert slurm.task_from_env(batch_shell) is None  # a plain python in the batch script
    assert slurm.task_from_env({**step, "SLURM_NTASKS": "1"}) is None  # one task: no group
    assert slurm.task_from_env({}) is None


def test_requeue_calls_scontrol_inside_a_job(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm.requeue() == "not requeued (not a SLURM job)"
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert slurm.requeue() == "not requeued (no scontrol on PATH)"
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path)) + os.pathsep + os.environ["PATH"])
    assert slurm.requeue() == "requeued (job 777)"
    assert (tmp_path / "calls.txt").read_text() == "requeue 777\n"
    monkeypatch.setenv("PATH", str(fake_scontrol(tmp_path, code=1)))
    assert slurm.requeue() == "requeue of job 777 failed (scontrol: error: refused)"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_the_preemption_signals_set_the_stop_flag(sig):
    flag = StopFlag()
    flag.install()
    try:
        os.kill(os.getpid(), sig)
        assert flag.signum == sig and flag.preempted and flag.any_rank()
    finally:
        flag.restore()
    assert signal.getsignal(sig) == signal.SIG_DFL
