"""End-to-end training / evaluation on the embedded digits data and generated CIFAR.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_train.py."""
from engine import commands
from tests.fixtures import DIGITS_ARB


def test_dry_run_prints_summary_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert commands.train_stage1(["--cfg", DIGITS_ARB, "--dry-run", "output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training images: " in text and "largest class" in text and "smallest" in text
    assert "classes many / medium / few: 1 [0, 1) / 5 [1, 6) / 4 [6, 10)" in text
    assert "backbone: resnet8_fe" in text and "classifier: linear, 650 parameters" in text
    assert "loss: ARB-Loss (batch counts)" in text
    assert not out.exists()
