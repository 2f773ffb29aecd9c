"""Exact resume, atomic checkpoints, safe loading, numerical faults, bad input, and run folders
that belong to one config and one process (the real-process cases: test_faults_processes.py).

Here: the checks without a training loop or a process; the rest in
tests/integration/test_fault_tolerance.py, tests/processes/test_fault_tolerance.py."""
import argparse
import errno
import os

import numpy as np
import pytest
import torch

import engine.trainer
from config import get_cfg_defaults, load_config
from config.resume import RESUME_SAFE_KEYS, config_differences
from engine import commands
from engine.checkpointer import own_rank_entry
from tests.fixtures import (
    DIGITS_CE,
)
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import CheckpointError, RunError
from utils.rundir import RunLock


def test_cut_epoch_statistics_are_taken_per_rank():
    """A checkpoint keeps one entry per rank; with another number of processes (or an entry
    that is not a list) the resumed epoch's statistics start empty instead of mixing ranks."""
    entry = {"losses": [1.5, 2.0], "counts": [64.0, 64.0], "correct": 30.0}
    assert own_rank_entry([entry]) == entry  # one process here: rank 0
    assert own_rank_entry([entry, entry]) == {}
    assert own_rank_entry({"seen": 128.0}) == {}
    assert own_rank_entry(None) == {}


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "current.pth.tar")
    save_checkpoint({"state_dict_model": {"w": torch.ones(3)}, "epoch": 1}, path)
    real = torch.save

    def dies_halfway(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict_model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real)
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["current.pth.tar"]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth.tar"
    torch.save({"state_dict_model": {}, "epoch": Evil(str(marker))}, str(bad))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(bad))
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_CE, "resume", str(bad)])
    assert e.value.code == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_legacy_checkpoint_only_behind_the_flag(tmp_path):
    p = str(tmp_path / "old.pth.tar")
    torch.save({"state_dict_model": {}, "args": argparse.Namespace(lr=0.1)}, p)
    with pytest.raises(CheckpointError, match="legacy_checkpoint"):
        load_checkpoint(p)
    assert load_checkpoint(p, legacy=True)["args"].lr == 0.1


def test_mislas_numpy_scalars_load_with_weights_only(tmp_path):
    p = str(tmp_path / "mislas.pth.tar")
    torch.save({"epoch": 200, "state_dict_model": {}, "best_acc1": np.float64(70.1),
                "its_ece": np.float64(5.2)}, p)
    assert load_checkpoint(p)["its_ece"] == pytest.approx(5.2)


def test_truncated_and_foreign_files(tmp_path):
    good = str(tmp_path / "good.pth.tar")
    save_checkpoint({"state_dict_model": {"w": torch.ones(1000)}, "epoch": 1}, good)
    trunc = tmp_path / "trunc.pth.tar"
    trunc.write_bytes(open(good, "rb").read()[:700])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(trunc))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(str(text))
    tensor = str(tmp_path / "tensor.pt")
    torch.save(torch.ones(2), tensor)
    with pytest.raises(CheckpointError, match="no 'state_dict_model'"):
        load_checkpoint(tensor)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pth.tar"))


# the step schedule: a run on it may be extended (more epochs) in its own folder; on the
# digits config's cosine, more epochs would re-spread the schedule (another run)
STEP = ["cos", "False"]


def one_stderr_line(capsys, prog="train_stage1.py"):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), lines
    return lines[0]


def test_resume_safe_keys_are_config_keys_and_only_they_are_ignored():
    defaults = get_cfg_defaults()
    assert RESUME_SAFE_KEYS <= set(defaults)
    cfg = load_config(DIGITS_CE, ["workers", "4", "print_freq", "1", "device", "cpu",
                                  "data_path", "/elsewhere", "num_epochs", "30", *STEP])
    saved = load_config(DIGITS_CE, STEP)
    assert config_differences(saved, cfg) == []  # safe keys, and more epochs (step schedule)
    # on a cosine schedule more epochs change every later epoch's lr: another run
    assert config_differences(load_config(DIGITS_CE), load_config(
        DIGITS_CE, ["num_epochs", "30"])) == ["num_epochs 15 -> 30"]
    saved = load_config(DIGITS_CE)
    cfg = load_config(DIGITS_CE, ["lr", "0.1", "num_epochs", "10", "seed", "1"])
    assert config_differences(saved, cfg) == ["lr 0.05 -> 0.1", "num_epochs 15 -> 10",
                                              "seed 0 -> 1"]


def test_run_lock_is_exclusive_and_a_dead_holder_does_not_block(tmp_path):
    folder = str(tmp_path)
    first, second = RunLock(folder), RunLock(folder)
    first.acquire()
    with pytest.raises(RunError) as e:
        second.acquire()
    assert str(e.value) == (f"run folder {folder} is in use by process {os.getpid()} (a run "
                            "of this config is writing there); wait for it to end or stop "
                            "it first")
    first.release()
    second.acquire()  # released: free again
    second.release()
    # a lock file left by a process that is gone (its lock went with it)
    (tmp_path / ".lock").write_text("999999999 elsewhere\n")
    first.acquire()
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    first.release()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "current.pth.tar")
    save_checkpoint({"state_dict_model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def full(obj, f, *a, **k):
        f.write(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint({"state_dict_model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert str(e.value) == (f"cannot save checkpoint {path}: no space left on device in "
                            f"{tmp_path}; the previous checkpoint there is unchanged")
    assert os.listdir(tmp_path) == ["current.pth.tar"]  # no temporary file left
    assert load_checkpoint(path)["epoch"] == 1


def test_ctrl_c_during_start_up_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.trainer, "build_data", interrupted)
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path / "out")])
    assert e.value.code == 130
    assert one_stderr_line(capsys) == "train_stage1.py: interrupted"
    assert not (tmp_path / "out").exists()
