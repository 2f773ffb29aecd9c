"""Config loading: every shipped yaml, reference (MiSLAS) yaml files, overrides, errors.

Here: the launched processes; the rest in tests/unit/test_config.py."""
import os

import pytest

from tests.fixtures import ROOT, run_cli


# One real process proves the command-line path end to end (exit status, stderr, no traceback);
# the full list of user errors is checked in-process in test_fault_tolerance.py (each fresh
# interpreter costs a torch import).
@pytest.mark.parametrize("args,match", [
    (["--cfg", "config/digits/digits_imb005_ce.yaml", "dataset", "mnist"], "'dataset'"),
])
@pytest.mark.slow
def test_cli_user_errors_exit_2_without_traceback_or_run_folder(tmp_path, args, match):
    out = tmp_path / "out"
    r = (run_cli("train_stage1.py", *args, "output_dir", str(out), cwd=ROOT)
        if len(args) > 2 else run_cli("train_stage1.py", *args, cwd=ROOT))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert match in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not os.listdir(out)
