"""The shipped sbatch file (tools/slurm/train.sbatch) parses and asks for what pre-emption needs."""
import os


def test_the_sbatch_file_starts_tasks_with_srun_and_asks_for_the_signal():
    import subprocess

    from tests.fixtures import ROOT
    path = os.path.join(ROOT, "tools", "slurm", "train.sbatch")
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text = open(path).read()
    assert "#SBATCH --signal=USR1@90" in text and "#SBATCH --requeue" in text
    assert "srun --kill-on-bad-exit=1 python train_stage1.py" in text and "resume auto" in text
    assert "torchrun" not in text.split("#SBATCH")[-1]
