"""The published yaml files of ARB-Loss and MiSLAS (verbatim copies under
tests/data/published_configs, see the README.txt there) run unchanged, and our configs of the same
name carry the published values.

Here: the launched processes; the rest in tests/unit/test_published_configs.py,
tests/integration/test_published_configs.py."""
import os

import pytest

from tests.fixtures import (
    ROOT,
    run_cli,
)

PUB = os.path.join(ROOT, "tests", "data", "published_configs")


@pytest.mark.slow
def test_cli_refuses_a_stage2_file_in_one_line(tmp_path):
    out = tmp_path / "out"
    rel = os.path.join("mislas", "cifar100", "cifar100_imb001_stage2_mislas.yaml")
    r = run_cli("train_stage1.py", "--cfg", os.path.join(PUB, rel), "output_dir", str(out),
                cwd=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train_stage2.py" in lines[0], r.stderr
    assert os.listdir(tmp_path) == []
