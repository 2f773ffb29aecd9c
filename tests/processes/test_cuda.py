"""Every CUDA code path: mixed precision (bf16, fp16 with the loss scaler), channels_last,
torch.compile, the CIFAR and image-list device pipelines on the GPU, deterministic mode, exact
resume, a 1-process NCCL group. All marked ``cuda``: they skip without a CUDA device and are
run by ``bench/gpu_check.sh`` on a GPU machine.

Here: the launched processes; the rest in tests/integration/test_cuda.py."""
import sys

import pytest

from tests.fixtures import (
    DIGITS_ARB,
    finish,
    only_run_dir,
    read_metrics,
    start,
)

pytestmark = pytest.mark.cuda
CUDA = ["device", "cuda", "num_epochs", "2", "print_freq", "3", "workers", "0"]


def test_one_process_nccl_group(tmp_path):
    """torchrun with one process on a GPU: the NCCL backend, DDP, and the evaluation of the
    saved model equal to a single-process eval.py."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
               "--master_port", str(port), "train_stage1.py", "--cfg", DIGITS_ARB,
               "output_dir", str(tmp_path), *CUDA])
    out, _ = finish(p)
    assert p.returncode == 0, out[-3000:]
    assert "distributed: rank 0 of 1, backend nccl, device cuda:0" in out
    rows = read_metrics(only_run_dir(str(tmp_path)))
    assert len(rows) == 2
