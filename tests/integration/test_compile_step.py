"""The compiled training step (compile_mode) on the CPU: the digits demo trains to eager's
accuracy (torch.compile's inductor backend generates C++ for the CPU)."""
import pytest

from engine import commands
from tests.fixtures import DIGITS_ARB, only_run_dir, read_metrics


@pytest.mark.slow
def test_the_compiled_step_trains_the_digits_demo_as_eager_does(tmp_path):
    """Batch 139 (417 = 3 x 139 training images): every batch has the same shape, so the step
    is compiled once (a last partial batch would be a second graph: half a minute more of the
    suite's time on two cores)."""
    final = {}
    for mode in ("none", "default"):
        out = tmp_path / mode
        assert commands.train_stage1(["--cfg", DIGITS_ARB, "output_dir", str(out), "batch_size",
                                      "139", "compile_mode", mode]) == 0
        rows = read_metrics(only_run_dir(str(out)))
        assert len(rows) == 15
        final[mode] = rows[-1]["acc1"]
    assert final["none"] > 70 and abs(final["default"] - final["none"]) <= 1.0, final
