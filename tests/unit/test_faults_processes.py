"""A rank's error in the run log (the process-level failures are in
tests/processes/test_faults_processes.py)."""
import re

import pytest

pytestmark = pytest.mark.slow


def test_an_error_of_another_rank_goes_to_the_run_log(tmp_path):
    """Rank 1 has no log handler of its own: its error is appended to rank 0's run log,
    marked with the rank (torchrun's SIGTERM would otherwise be the log's only word)."""
    import torch

    from engine.trainer import Trainer
    from utils.comm import DistInfo
    log_file = tmp_path / "run.txt"
    log_file.write_text("2026-01-01 00:00:00 INFO run folder: x\n")
    trainer = Trainer.__new__(Trainer)  # only what _log_to_file reads
    trainer.dist = DistInfo(True, 1, 2, 1, torch.device("cpu"))
    trainer.run_dir = type("RunDirStub", (), {"log_file": str(log_file)})()
    trainer._log_to_file("stopped at epoch 2, step 3: cannot read image x.jpg")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2 and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ERROR rank 1: stopped at epoch 2, step 3: "
        r"cannot read image x.jpg", lines[1]), lines
    trainer.run_dir = type("RunDirStub", (), {"log_file": str(tmp_path / "gone" / "x.txt")})()
    trainer._log_to_file("unwritable log: nothing raised")  # the error reaches stderr anyway
