"""DDP on CPU with gloo: torchrun, torch.distributed.launch, a 2-node rendezvous.

Here: the launched processes; the rest in tests/unit/test_distributed.py."""
import os
import signal
import sys
import time

import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_ARB,
    HANG_TIMEOUT,
    ROOT,
    finish,
    free_port,
    only_run_dir,
    read_metrics,
    start,
    wait_for_rows,
)
from utils.checkpoint import load_checkpoint

# loader workers cost seconds of start-up per rank: the first test covers them under DDP
RUN = ["num_epochs", "1", "print_freq", "2", "workers", "0"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two processes on a 2-core machine


def launch(args, **env):
    """Run ``python -m <args>``; returns (exit status, stdout + stderr)."""
    p = start([sys.executable, "-m", *args], dict(ONE_THREAD, **env))
    out, _ = finish(p)
    return p.returncode, out


def check_single_run(out_dir, capsys):
    run = only_run_dir(str(out_dir))
    ckpt_path = os.path.join(run, "ckps", "current.pth.tar")
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    with open(os.path.join(run, "logs", "digits_imb005_arbloss.txt")) as f:
        assert "INFO device cpu, 2 processes, backend gloo\n" in f.read()
    assert not any(k.startswith("module.") for k in ckpt["state_dict_model"])
    # the DDP evaluation logged during training equals a single-process evaluation
    assert commands.evaluate(["--cfg", DIGITS_ARB, "--json", "resume", ckpt_path]) == 0
    import json
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    logged = read_metrics(run)[-1]
    for k in ("acc1", "acc5", "many", "medium", "few", "ece"):
        assert single[k] == pytest.approx(logged[k], abs=1e-9), k
    assert single["num_samples"] == 500
    return run


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path, capsys):
    code, out = launch(["torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "train_stage1.py", "--cfg", DIGITS_ARB,
                        "output_dir", str(tmp_path), *RUN, "workers", "2"])
    assert code == 0, out
    assert out.count("Epoch 1: Acc@1") == 1  # only rank 0 logs
    assert "using the gloo backend" in out
    check_single_run(tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_launcher_with_one_process_forms_a_group_of_one(tmp_path, capsys):
    """As torchvision's references: under a launcher the processes always form a group, one
    process included (the DDP code path of a 1-GPU torchrun job)."""
    code, out = launch(["torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                        str(free_port()), "train_stage1.py", "--cfg", DIGITS_ARB,
                        "output_dir", str(tmp_path), *RUN])
    assert code == 0, out
    assert "distributed: rank 0 of 1, backend gloo, device cpu" in out
    ckpt = load_checkpoint(os.path.join(only_run_dir(str(tmp_path)), "ckps", "current.pth.tar"))
    assert ckpt["world_size"] == 1 and len(ckpt["rng"]) == 1


@pytest.mark.slow
@pytest.mark.distributed
def test_stage2_under_torchrun(tmp_path, capsys):
    """train_stage2.py with 2 processes from a stage-1 checkpoint: rank-aware class-aware
    sampling, DDP over classifier + LWS; the logged evaluation equals eval.py's."""
    s1 = tmp_path / "s1"
    assert commands.train_stage1(["--cfg", DIGITS_ARB, "output_dir", str(s1), "num_epochs", "1",
                              "print_freq", "5"]) == 0
    ckpt = os.path.join(only_run_dir(str(s1)), "ckps", "current.pth.tar")
    s2 = tmp_path / "s2"
    cfg = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_mislas.yaml")
    code, out = launch(["torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "train_stage2.py", "--cfg", cfg, "resume", ckpt,
                        "output_dir", str(s2), *RUN])
    assert code == 0, out
    run = only_run_dir(str(s2))
    path = os.path.join(run, "ckps", "current.pth.tar")
    saved = load_checkpoint(path)
    assert saved["world_size"] == 2 and saved["stage"] == 2
    capsys.readouterr()
    assert commands.evaluate(["--cfg", cfg, "--json", "--no-report", "--no-nc", "resume",
                             path]) == 0
    import json
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    logged = read_metrics(run)[-1]
    for k in ("acc1", "many", "medium", "few", "ece"):
        assert single[k] == pytest.approx(logged[k], abs=1e-9), k


@pytest.mark.slow
@pytest.mark.distributed
def test_legacy_launcher_with_the_seed_argument_shape(tmp_path, capsys):
    # python -m torch.distributed.launch --nproc_per_node N --master_port P train_stage1.py --cfg
    # (passes --local-rank to the script); the yaml's world_size 8 disagrees: a warning
    code, out = launch(["torch.distributed.launch", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "train_stage1.py", "--cfg", DIGITS_ARB,
                        "output_dir", str(tmp_path), "world_size", "8", *RUN])
    assert code == 0, out
    assert "config world_size=8 differs from the launcher's 2 processes" in out
    check_single_run(tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_node_rendezvous_on_localhost(tmp_path, capsys):
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc_per_node", "1", "--node_rank", str(node), "--rdzv_backend", "c10d",
               "--rdzv_id", "arbtest", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "train_stage1.py", "--cfg", DIGITS_ARB, "output_dir", str(tmp_path), *RUN]
        procs.append(start(cmd, ONE_THREAD))
    outs = [finish(p)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    check_single_run(tmp_path, capsys)


def worker_pid(launcher, rank: int) -> int:
    """The pid of the launcher's worker process that has ``RANK=rank`` (Linux /proc)."""
    t0 = time.time()
    while time.time() - t0 < HANG_TIMEOUT:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != launcher.pid:
                    continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"RANK={rank}".encode() in f.read().split(b"\0"):
                        return int(pid)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker with RANK={rank}")


FAULTY = os.path.join("tests", "train_with_fault.py")


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Only rank 1 is signalled; both ranks stop after the same step (otherwise the checkpoint
    gather would hang), rank 0 saves and logs the signal, and resume finishes the run."""
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port()), FAULTY, "--cfg", DIGITS_ARB,
            "output_dir", str(tmp_path), *RUN, "num_epochs", "3"]
    slow = dict(ONE_THREAD, ARB_TEST_FAULT="slow")  # 7 steps of >= 0.2 s an epoch
    p = start(args, slow)
    run = wait_for_rows(str(tmp_path), 1, p)
    os.kill(worker_pid(p, 1), signal.SIGTERM)
    out, _ = finish(p)
    assert p.returncode != 0, out[-3000:]
    assert out.count("interrupted by signal 15 at epoch") == 1, out[-3000:]
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and len(ckpt["partial"]) == 2
    done, step = ckpt["epoch"], ckpt["iteration"]
    assert 1 <= done < 3 and step >= 1  # stopped after a step inside epoch done + 1
    assert f"interrupted by signal 15 at epoch {done + 1}, iteration {step}" in out
    # the same launch with resume auto continues in the same folder to the end
    args[args.index("--master_port") + 1] = str(free_port())
    p = start(args + ["resume", "auto"], ONE_THREAD)
    out, _ = finish(p)
    assert p.returncode == 0, out[-3000:]
    assert os.listdir(tmp_path) == [os.path.basename(run)]
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.distributed
def test_a_rank_that_dies_ends_the_job_non_zero(tmp_path):
    """Rank 1 exits at once (exit 17) while rank 0 waits in a collective: the launcher must end
    the job with a non-zero status, not wait for the 30-minute collective timeout (``finish``
    fails the test after 600 s; here it takes about 5 s)."""
    code, out = launch(["torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), FAULTY, "--cfg", DIGITS_ARB,
                        "output_dir", str(tmp_path), *RUN], ARB_TEST_FAULT="die_on_rank1")
    assert code != 0, out
    assert "exitcode  : 17" in out or "exitcode: 17" in out, out[-3000:]


@pytest.mark.slow
@pytest.mark.distributed
def test_srun_tasks_without_torchrun_form_one_group(tmp_path, capsys):
    """Two processes started as srun starts them (SLURM variables, no torchrun, no RANK)."""
    port = str(free_port())
    procs = [start([sys.executable, "train_stage1.py", "--cfg", DIGITS_ARB,
                    "output_dir", str(tmp_path), *RUN],
                   dict(ONE_THREAD, SLURM_JOB_ID="99", SLURM_STEP_ID="0", SLURM_NTASKS="2",
                        SLURM_PROCID=str(r), SLURM_LOCALID=str(r), MASTER_PORT=port,
                        SLURM_STEP_NODELIST="127.0.0.1"))
             for r in range(2)]
    outs = [finish(p)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "SLURM task 1 of 2 (local 1); rendezvous tcp://127.0.0.1:" + port in outs[1]
    assert "distributed: rank 0 of 2, backend gloo, device cpu" in outs[0]
    check_single_run(tmp_path, capsys)
