"""pytest fixtures (generated CIFAR archives) and the CUDA skip; the shared helpers are in
tests/fixtures.py."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.fixtures import (  # noqa: E402
    DIGITS_CE,
    RESUME_MIX,
    final_weights,
    only_run_dir,
    read_metrics,
    strip_seconds,
    write_cifar,
)


@pytest.fixture(scope="session")
def full_cifar(tmp_path_factory):
    """Full-size CIFAR-10 and CIFAR-100 training sets (zero images), 1 test image a class."""
    root = tmp_path_factory.mktemp("cifar_full")
    write_cifar(str(root / "c10"), "cifar10", 5000, 1)
    write_cifar(str(root / "c100"), "cifar100", 500, 1)
    return root


@pytest.fixture(scope="session")
def small_cifar10(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_small")
    return write_cifar(str(root), "cifar10", 60, 10)


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """An uninterrupted 3-epoch digits run with mixup (deterministic, CPU): its metrics rows
    (without seconds) and final weights, which every exact-resume test must reproduce."""
    from engine import commands
    out = tmp_path_factory.mktemp("baseline")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "3",
                                  *RESUME_MIX]) == 0
    run = only_run_dir(str(out))
    return strip_seconds(read_metrics(run)), final_weights(run)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests skip themselves without a CUDA device (bench/gpu_check.sh
    runs them on a GPU machine); every other test runs everywhere."""
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by bench/gpu_check.sh)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
