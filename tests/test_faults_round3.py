"""Faults and bad input, round 3: the next command a user types.

The resume hint continues the run that stopped (its own config.yaml), a resume whose schedule
would change leaves the run's folder alone, one sweep per folder, the dry run refuses what the
real start-up refuses, an empty yaml, the tau-grid cap, warnings for silently ignored values,
and a run stopped before it trained leaves no folder behind."""
import os
import shlex
import signal
import sys
import time

import pytest

from config import load_config
from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    ROOT,
    finish,
    kill_tree,
    only_run_dir,
    read_metrics,
    run_cli,
    signal_after_step,
    start,
    wait_for_rows,
    write_cifar,
)
from utils.errors import ConfigError

S2_MISLAS = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_mislas.yaml")


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ 1. the resume hint
@pytest.mark.slow
def test_the_printed_resume_command_continues_the_run_with_its_overrides(tmp_path):
    """A run started with overrides, stopped by SIGTERM: the printed command (run as printed)
    continues it in its folder with its 4 epochs (the yaml says 15), and ends as the
    uninterrupted run."""
    out = tmp_path / "runs"
    opts = ["output_dir", str(out), "name", "hint", "num_epochs", "4", "print_freq", "1"]
    p = start([sys.executable, "train_stage1.py", "--cfg", DIGITS_CE, *opts])
    run = wait_for_rows(str(out), 1, p)
    os.killpg(p.pid, signal.SIGTERM)
    text, _ = finish(p)
    assert p.returncode == 128 + signal.SIGTERM, text[-2000:]
    (line,) = [ln for ln in text.splitlines() if "resume with: " in ln]
    command = line.split("resume with: ", 1)[1]
    cfg_file = shlex.quote(os.path.join(run, "config.yaml"))
    ckpt = shlex.quote(os.path.join(run, "ckps", "current.pth.tar"))
    assert command == f"python train_stage1.py --cfg {cfg_file} resume {ckpt}"
    argv = shlex.split(command)
    assert argv[:2] == ["python", "train_stage1.py"]
    done = run_cli("train_stage1.py", *argv[2:])
    assert done.returncode == 0, done.stderr[-2000:]
    assert only_run_dir(str(out)) == run  # the same folder
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    base = tmp_path / "base"
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(base), "name", "hint",
                              "num_epochs", "4", "print_freq", "1"]) == 0
    assert strip(rows) == strip(read_metrics(only_run_dir(str(base))))


@pytest.mark.slow
def test_a_resume_that_would_respread_the_cosine_schedule_starts_a_new_folder(
        tmp_path, monkeypatch):
    """Stage 2 (cosine over num_epochs): a run of 6 epochs stopped, then its own checkpoint
    resumed with the yaml's 10 epochs, leaves its folder untouched and says why."""
    s1 = tmp_path / "s1"
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(s1), "num_epochs",
                                  "2"]) == 0
    stage1 = os.path.join(only_run_dir(str(s1)), "ckps", "current.pth.tar")
    out = tmp_path / "s2"
    signal_after_step(monkeypatch, 20)
    assert commands.train_stage2(["--cfg", S2_MISLAS, "output_dir", str(out), "resume", stage1,
                              "num_epochs", "6"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    run = only_run_dir(str(out))
    before = open(os.path.join(run, "metrics.jsonl")).read()
    ckpt = os.path.join(run, "ckps", "current.pth.tar")
    assert load_config(os.path.join(run, "config.yaml"), stage=2).num_epochs == 6
    assert commands.train_stage2(["--cfg", S2_MISLAS, "output_dir", str(out), "resume", ckpt,
                              "num_epochs", "7"]) == 0
    assert open(os.path.join(run, "metrics.jsonl")).read() == before
    (new,) = [os.path.join(out, d) for d in os.listdir(out) if os.path.join(out, d) != run]
    text = open(os.path.join(new, "logs", "digits_imb005_stage2_mislas.txt")).read()
    assert "num_epochs 6 -> 7" in text and "left untouched" in text


# ------------------------------------------------------------------ 2. one sweep per folder
@pytest.mark.slow
def test_a_second_sweep_on_the_same_folder_stops_naming_the_first(tmp_path):
    out = tmp_path / "sweep"
    first = start([sys.executable, "tools/sweep.py", "--cfg", DIGITS_CE, "--seeds", "0",
                   "--out", str(out), "--", "num_epochs", "30"])
    try:
        lock = out / ".sweep.lock"
        t0 = time.time()
        while not (lock.exists() and lock.read_text().strip()) and time.time() - t0 < 120:
            assert first.poll() is None, finish(first)
            time.sleep(0.1)
        second = run_cli("tools/sweep.py", "--cfg", DIGITS_CE, "--seeds", "0", "--out",
                         str(out), "--", "num_epochs", "30")
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sweep.py: error: folder ") and (
            f"is in use by process {first.pid} (another sweep is running there)" in err[0])
    finally:
        kill_tree(first)
        finish(first)


# ------------------------------------------------------------------ 3. dry run = start-up
@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    return write_cifar(str(tmp_path_factory.mktemp("c10")), "cifar10", 20, 2)


def refusals(cifar10):
    """Config values the real start-up refuses although no data file is wrong."""
    cifar = ["--cfg", os.path.join(ROOT, "config", "cifar10", "cifar10_imb001.yaml"),
             "data_path", cifar10, "download", "False", "imb_factor", "0.1", "workers", "0"]
    digits = ["--cfg", DIGITS_CE]
    return [
        (cifar + ["autoaugment", "True", "device_pipeline", "True"],
         "keys 'device_pipeline' and 'autoaugment' are both True"),
        (cifar + ["randaugment", "True", "device_pipeline", "True"],
         "keys 'device_pipeline' and 'randaugment' are both True"),
        (digits + ["autoaugment", "True"],
         "key 'autoaugment' is True but data set digits has no such augmentation"),
        (digits + ["mixup", "True", "cutmix", "True"], "keys 'mixup' and 'cutmix' are both on"),
        (digits + ["loss", "dr", "classifier", "linear"], "key 'loss' is 'dr'"),
        (digits + ["classifier", "etf", "num_classes", "10", "backbone", "resnet8_fe",
                   "loss", "ce", "eval_tau_norm", "1"], "key 'eval_tau_norm' is 1"),
        (digits + ["loss", "focal", "LAS", "True", "smooth_head", "0.1", "smooth_tail", "0.0"],
         "LAS: True (label-aware smoothing) works with loss ce or arb"),
        (digits + ["la_tau", "-1", "loss", "logit_adjust"], "key 'la_tau' is -1.0"),
        (digits + ["lr_factors", "[0.1]"], "key 'lr_factors' is [0.1]"),
    ]


@pytest.mark.slow
def test_the_dry_run_refuses_every_value_the_real_start_up_refuses(cifar10, tmp_path,
                                                                     capsys):
    for argv, message in refusals(cifar10):
        lines = []
        for dry in (["--dry-run"], []):
            out = tmp_path / ("dry" if dry else "real")
            with pytest.raises(SystemExit) as e:
                commands.train_stage1([*argv, *dry, "output_dir", str(out), "num_epochs", "1"])
            assert e.value.code == 2, argv
            lines.append(one_error_line(capsys))
            assert not out.exists(), argv
        assert lines[0] == lines[1] and message in lines[0], (argv, lines)


# ------------------------------------------------------------------ 4. empty yaml, defaults
def test_an_empty_yaml_says_so(tmp_path):
    for text in ("", "\n\n", "# only a comment\n"):
        p = tmp_path / "empty.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=f"^{p}: the config file is empty"):
            load_config(str(p))


def test_num_classes_given_nowhere_is_the_data_sets(tmp_path):
    for dataset, classes in (("cifar10", 10), ("cifar100", 100), ("digits", 10),
                             ("imagenet", 1000), ("ina2018", 8142), ("places", 365)):
        p = tmp_path / f"{dataset}.yaml"
        p.write_text(f"dataset: {dataset}\nimb_factor: {0.1 if 'ci' in dataset else 'null'}\n"
                     "backbone: resnet50_fe\n")
        if dataset == "digits":
            p.write_text("dataset: digits\n")
        assert load_config(str(p)).num_classes == classes, dataset
        assert load_config(str(p), ["num_classes", "7"]).num_classes == 7
    p = tmp_path / "given.yaml"
    p.write_text("dataset: cifar10\nnum_classes: 100\n")
    assert load_config(str(p)).num_classes == 100  # given: kept (and checked against the data)


# ------------------------------------------------------------------ 5. tau grid cap
def test_the_tau_grid_cap_is_stated(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_CE, "resume", str(tmp_path / "x.pth.tar"),
                          "--tau-sweep", "tau_norm", "--tau-grid", "0:1000:0.0001"])
    assert e.value.code == 2
    assert one_error_line(capsys) == (
        "eval.py: error: --tau-grid '0:1000:0.0001' has 10,000,001 points; accepted: at most "
        "10,001 (a larger step or a shorter range)")


# ------------------------------------------------------------------ 6. silently accepted
@pytest.mark.slow
def test_warnings_for_a_batch_larger_than_the_data_and_an_unread_data_path(tmp_path):
    done = run_cli("train_stage1.py", "--cfg", DIGITS_CE, "output_dir", str(tmp_path),
                   "num_epochs", "1", "batch_size", "1000", "data_path", "/data/digits")
    assert done.returncode == 0, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert ("batch_size 1000 is larger than the 417 training images: one step an epoch"
            in said)
    assert "data_path '/data/digits' is not read: dataset digits" in said


def test_a_negative_logit_adjustment_tau_is_refused():
    with pytest.raises(ConfigError, match="key 'la_tau' is -0.5; accepted: a number >= 0"):
        load_config(DIGITS_CE, ["loss", "logit_adjust", "la_tau", "-0.5"])


# ------------------------------------------------------------------ 7. nothing left behind
def test_a_run_stopped_before_it_trained_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from datasets.common import ArrayImageDataset
    from utils.errors import DataError

    def unreadable(self, i):
        raise DataError("cannot read image /x/1.jpg: not an image file")

    monkeypatch.setattr(ArrayImageDataset, "__getitem__", unreadable)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "1"])
    assert e.value.code == 2
    assert "cannot read image /x/1.jpg" in one_error_line(capsys)
    assert os.listdir(out) == []
