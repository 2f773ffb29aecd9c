"""The compiled training step (compile_mode) on the CPU: the digits demo trains to eager's
accuracy, and an interrupted compiled run resumes exactly (torch.compile's inductor backend
generates C++ for the CPU)."""
import pytest

from engine import commands
from tests.fixtures import (
    DIGITS_ARB,
    assert_same_weights,
    final_weights,
    only_run_dir,
    read_metrics,
    signal_after_step,
    strip_seconds,
)


@pytest.mark.slow
def test_the_compiled_step_trains_as_eager_and_resumes_exactly(tmp_path, monkeypatch):
    """Batch 139 (417 = 3 x 139 training images): every batch has the same shape, so the step
    is compiled once (a last partial batch would be a second graph: half a minute more of the
    suite's time on two cores)."""
    def args(out, mode):
        return ["--cfg", DIGITS_ARB, "output_dir", str(tmp_path / out), "batch_size", "139",
                "compile_mode", mode]

    runs = {}
    for mode in ("none", "default"):
        assert commands.train_stage1(args(mode, mode)) == 0
        runs[mode] = only_run_dir(str(tmp_path / mode))
    eager, compiled = read_metrics(runs["none"]), read_metrics(runs["default"])
    assert len(eager) == len(compiled) == 15
    assert eager[-1]["acc1"] > 70 and abs(compiled[-1]["acc1"] - eager[-1]["acc1"]) <= 1.0
    # stopped by SIGTERM during step 1 of epoch 4, then resume auto: the uninterrupted
    # compiled run's metrics and weights, bit for bit
    signal_after_step(monkeypatch, 10)
    assert commands.train_stage1(args("cut", "default")) == 128 + 15
    monkeypatch.undo()
    assert commands.train_stage1(args("cut", "default") + ["resume", "auto"]) == 0
    cut = only_run_dir(str(tmp_path / "cut"))
    assert strip_seconds(read_metrics(cut)) == strip_seconds(compiled)
    assert_same_weights(final_weights(cut), final_weights(runs["default"]))
