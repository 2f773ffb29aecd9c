"""bench/gpu_check.sh in its CPU mode: without CUDA it says so in one line and exits 0."""
import os
import subprocess

import pytest

from tests.fixtures import ROOT, child_env


@pytest.mark.slow
def test_gpu_check_without_cuda_says_so_and_exits_0():
    env = child_env({"CUDA_VISIBLE_DEVICES": ""})  # also on a GPU machine: force CPU mode
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device on this machine: nothing to check (run it on a GPU machine)"]
