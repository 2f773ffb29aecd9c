"""Exact resume, atomic checkpoints, safe loading, numerical faults, bad input, and run folders
that belong to one config and one process (the real-process cases: test_faults_processes.py).

Here: the in-process training and evaluation runs; the rest in
tests/unit/test_fault_tolerance.py, tests/processes/test_fault_tolerance.py."""
import hashlib
import os
import shutil
import signal

import numpy as np
import pytest
import torch

import engine.trainer
from engine import HookBase, commands
from tests.fixtures import (
    DIGITS_CE,
    RESUME_MIX,
    ROOT,
    assert_same_weights,
    final_weights,
    only_run_dir,
    read_metrics,
    signal_after_step,
    snapshot,
    strip_seconds,
    write_cifar,
)
from utils.checkpoint import load_checkpoint
from utils.errors import EXIT_NONFINITE

MIX = RESUME_MIX


@pytest.mark.slow
def test_interrupt_inside_an_epoch_then_resume_is_exact(baseline, tmp_path, monkeypatch):
    signal_after_step(monkeypatch, 10)  # a SIGTERM arriving during step 3 of epoch 2
    code = commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs",
                              "3", *MIX])
    assert code == 128 + signal.SIGTERM
    monkeypatch.undo()
    run = only_run_dir(str(tmp_path))
    # the log's hint is a command to copy: the run's own config (yaml + overrides)
    with open(os.path.join(run, "logs", "digits_imb005_ce.txt")) as f:
        assert (f"resume with: python train_stage1.py --cfg {os.path.join(run, 'config.yaml')} "
                f"resume {os.path.join(run, 'ckps', 'current.pth.tar')}") in f.read()
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 3)
    # the cut epoch's per-step losses and batch sizes, one entry per rank
    assert len(ckpt["partial"]) == 1 and len(ckpt["partial"][0]["losses"]) == 3
    assert ckpt["partial"][0]["counts"] == [64.0, 64.0, 64.0]
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs",
                              "3", *MIX, "resume", "auto"]) == 0
    assert only_run_dir(str(tmp_path)) == run  # continued in the same folder
    assert strip_seconds(read_metrics(run)) == baseline[0]
    assert_same_weights(final_weights(run), baseline[1])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = engine.trainer.mixup_criterion
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] >= 10 else loss  # epoch 2, step 3

    monkeypatch.setattr(engine.trainer, "mixup_criterion", poisoned)
    code = commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs",
                              "3", *MIX])
    assert code == EXIT_NONFINITE
    run = only_run_dir(str(tmp_path))
    assert load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))["epoch"] == 1
    log = open(os.path.join(run, "logs", "digits_imb005_ce.txt")).read()
    assert "non-finite loss (nan) at epoch 2, iteration 3" in log


def test_checkpoint_of_another_architecture_or_class_count(tmp_path, capsys):
    out = tmp_path / "runs"
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs",
                              "1"]) == 0
    ckpt = os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar")
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_CE, "backbone", "resnet20_fe", "resume", ckpt])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "missing keys: layer1.1.conv1.weight" in err
    data = tmp_path / "c100"
    write_cifar(str(data), "cifar100", 2, 1)
    cfg100 = os.path.join(ROOT, "config", "cifar100", "cifar100_imb01.yaml")
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", cfg100, "data_path", str(data), "download", "False",
                          "backbone", "resnet8_fe", "resume", ckpt])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "conv1.weight (16, 1, 3, 3) vs (16, 3, 3, 3)" in err


def _tree_digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(os.path.join(d, f).encode())
            h.update(open(os.path.join(d, f), "rb").read())
    return h.hexdigest()


BAD_YAML = {"syntax": "lr: [0.1\n", "unknown": "learning_rate: 0.1\n", "type": "lr: fast\n"}


@pytest.mark.parametrize("case,opts,match", [
    ("syntax", [], "bad.yaml: yaml syntax error at line 2"),
    ("unknown", [], "unknown config key 'learning_rate'"),
    ("type", [], "key 'lr' expects a float"),
    ("missing_cfg", [], "config file not found"),
    (None, ["imb_factor", "0"], "key 'imb_factor' is 0.0; accepted: a number in (0, 1]"),
    (None, ["imb_factor", "1.5"], "accepted: a number in (0, 1]"),
    (None, ["imb_factor", "-0.5"], "accepted: a number in (0, 1]"),
    (None, ["batch_size", "0"], "key 'batch_size' is 0"),
    (None, ["tail_class_idx", "[7, 12]"], "key 'tail_class_idx' is [7, 12]"),
    (None, ["backbone", "vgg16"], "key 'backbone' is 'vgg16'; accepted:"),
    (None, ["dataset", "mnist"], "key 'dataset' is 'mnist'; accepted:"),
    (None, ["num_classes", "12"], "key 'num_classes' is 12 but digits has 10 classes"),
    (None, ["resume", "/no/such.pth.tar"], "checkpoint not found: /no/such.pth.tar"),
    ("cifar_missing", [], "cifar10 not found under data_path"),
    ("cifar_truncated", [], "truncated"),
    ("not_writable", [], "key 'output_dir': cannot create"),
])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(tmp_path, capsys, case, opts,
                                                             match):
    out = tmp_path / "saved"
    old = out / "old_run_202001010000"
    old.mkdir(parents=True)
    (old / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = _tree_digest(str(out))
    cfg = DIGITS_CE
    extra = []
    if case in BAD_YAML:
        cfg = str(tmp_path / "bad.yaml")
        open(cfg, "w").write(BAD_YAML[case])
    elif case == "missing_cfg":
        cfg = str(tmp_path / "nope.yaml")
    elif case in ("cifar_missing", "cifar_truncated"):
        cfg = os.path.join(ROOT, "config", "cifar10", "cifar10_imb01.yaml")
        data = tmp_path / "cifar"
        if case == "cifar_truncated":
            write_cifar(str(data), "cifar10", 2, 1, tar=True)
            arc = data / "cifar-10-python.tar.gz"
            arc.write_bytes(arc.read_bytes()[:300])
        extra = ["data_path", str(data), "download", "False"]
    elif case == "not_writable":
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        extra = ["output_dir", str(blocker / "sub")]
    argv = ["--cfg", cfg, "output_dir", str(out), *opts, *extra]
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_stage1.py: error: "), err
    assert match in err
    assert "Traceback" not in err
    assert _tree_digest(str(out)) == before  # nothing saved was touched, no new folder


# ------------------------------------------------------------------ run folders
S2_MISLAS = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_mislas.yaml")
# the step schedule: a run on it may be extended (more epochs) in its own folder; on the
# digits config's cosine, more epochs would re-spread the schedule (another run)
STEP = ["cos", "False"]
ONE = ["num_epochs", "1", "print_freq", "3", *STEP]


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """A finished 1-epoch digits run; tests that write to a run folder use a copy."""
    out = tmp_path_factory.mktemp("one_run")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), *ONE]) == 0
    return only_run_dir(str(out))


def current(run):
    return os.path.join(run, "ckps", "current.pth.tar")


def run_log(run, name="digits_imb005_ce"):
    return open(os.path.join(run, "logs", f"{name}.txt")).read()


def copy_run(run, parent):
    dest = os.path.join(str(parent), os.path.basename(run))
    shutil.copytree(run, dest)
    return dest


def new_folders(parent, before):
    return sorted(set(os.listdir(parent)) - set(before))


class StartWeights(HookBase):
    """Records the classifier's weights the training starts from."""

    def before_train(self):
        self.weight = self.trainer.net.classifier.fc.weight.detach().clone()


def classifier(path):
    return load_checkpoint(path)["state_dict_classifier"]["fc.weight"]


def one_stderr_line(capsys, prog="train_stage1.py"):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), lines
    return lines[0]


def test_resume_of_another_config_starts_a_new_folder_from_its_weights(one_run, tmp_path):
    before = snapshot(one_run)
    out = tmp_path / "out"
    start = StartWeights()
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), "num_epochs", "2",
                              "print_freq", "3", "lr", "0.02", "resume", current(one_run),
                              *STEP], hooks=[start]) == 0
    new = only_run_dir(str(out))
    assert [r["epoch"] for r in read_metrics(new)] == [2]  # from the epoch after its last
    assert torch.equal(start.weight, classifier(current(one_run)))
    assert (f"WARNING {current(one_run)} is a checkpoint of another config (differs in: lr "
            f"0.05 -> 0.02): starting a new run from its weights at epoch 1; its folder "
            f"{one_run} is left untouched; run folder {new}\n") in run_log(new)
    assert snapshot(one_run) == before


def test_a_new_run_with_nothing_to_train_is_refused(one_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs", "1",
                           "lr", "0.02", "resume", current(one_run), *STEP])
    assert e.value.code == 2
    assert one_stderr_line(capsys) == (
        f"train_stage1.py: error: key 'num_epochs' is 1 but {current(one_run)} is at epoch 1 "
        "already: a new run from it would train nothing; set num_epochs above 1")
    assert os.listdir(tmp_path) == []


def test_resume_of_this_config_continues_in_its_folder(one_run, tmp_path):
    """Resume-safe keys may differ and num_epochs may grow; the folder is the run's."""
    run = copy_run(one_run, tmp_path / "saved")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "num_epochs", "2", "print_freq", "1",
                              "eval_freq", "1", "device", "cpu", "test_batch_size", "100",
                              "output_dir", str(tmp_path / "elsewhere"), "resume",
                              current(run), *STEP]) == 0
    assert os.listdir(tmp_path / "saved") == [os.path.basename(run)]
    assert not (tmp_path / "elsewhere").exists()
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    assert f"resumed from {current(run)} at epoch 1" in run_log(run)


def test_model_best_of_this_config_resumes_in_a_new_folder(one_run, tmp_path):
    """Continuing in the run's folder from another checkpoint than its newest would rewind
    the run's history (its later metrics rows and current.pth.tar)."""
    parent = os.path.dirname(one_run)
    before, names = snapshot(parent), os.listdir(parent)
    best = os.path.join(one_run, "ckps", "model_best.pth.tar")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs",
                              "2", "print_freq", "3", "resume", best, *STEP]) == 0
    new = only_run_dir(str(tmp_path))
    assert [r["epoch"] for r in read_metrics(new)] == [2]
    assert "not the newest checkpoint of its run (current.pth.tar)" in run_log(new)
    assert os.listdir(parent) == names and snapshot(parent) == before


def test_mislas_checkpoint_starts_a_new_folder_with_its_weights(one_run, tmp_path):
    """A checkpoint as MiSLAS saves it (no config; 'module.' prefixes; numpy scalars), in a
    MiSLAS run folder of the same name under the same output_dir."""
    ck = load_checkpoint(current(one_run))
    mislas = {"epoch": ck["epoch"], "best_acc1": np.float64(ck["best_acc1"]),
              "its_ece": np.float64(ck["its_ece"]),
              **{f"state_dict_{p}": {f"module.{k}": v for k, v in ck[f"state_dict_{p}"].items()}
                 for p in ("model", "classifier")}}
    theirs = tmp_path / "digits_imb005_ce_202001010000"
    (theirs / "ckps").mkdir(parents=True)
    (theirs / "logs").mkdir()
    (theirs / "logs" / "digits_imb005_ce.txt").write_text("MiSLAS log\n")
    path = str(theirs / "ckps" / "current.pth.tar")
    torch.save(mislas, path)
    before = snapshot(str(theirs))
    start = StartWeights()
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path), "num_epochs",
                              "2", "print_freq", "3", "resume", path], hooks=[start]) == 0
    [new] = new_folders(str(tmp_path), [theirs.name])
    new = str(tmp_path / new)
    assert [r["epoch"] for r in read_metrics(new)] == [2]
    assert torch.equal(start.weight, ck["state_dict_classifier"]["fc.weight"])
    assert (f"resumed from {path} at epoch 1: a checkpoint without a config (MiSLAS / "
            f"ARB-Loss), continued in a new run folder; run folder {new}") in run_log(new)
    assert snapshot(str(theirs)) == before


def test_checkpoint_of_a_later_stage_is_refused_by_stage1(one_run, tmp_path, capsys):
    ck = load_checkpoint(current(one_run))
    ck["stage"] = 2
    path = str(tmp_path / "s2.pth.tar")
    torch.save(ck, path)
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(tmp_path / "out"),
                           "resume", path])
    assert e.value.code == 2
    assert one_stderr_line(capsys) == (
        f"train_stage1.py: error: {path} is a stage-2 checkpoint; continue it with "
        "train_stage2.py (train_stage1.py resumes stage-1 checkpoints)")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_stage2_from_stage1_then_its_own_resumes(one_run, tmp_path):
    """Stage 2 starts from a stage-1 checkpoint in a new folder at epoch 0 (the stage-1 folder
    untouched); a stage-2 checkpoint continues in its folder with the same stage-2 config, and
    starts a new folder with another (more epochs included: stage 2's cosine spans them)."""
    before = snapshot(one_run)
    out = tmp_path / "s2"
    common = ["--cfg", S2_MISLAS, "output_dir", str(out), "print_freq", "3"]
    assert commands.train_stage2([*common, "num_epochs", "1", "resume", current(one_run)]) == 0
    assert snapshot(one_run) == before
    s2 = only_run_dir(str(out))
    assert [r["epoch"] for r in read_metrics(s2)] == [1]
    ck = load_checkpoint(current(s2))
    assert ck["stage"] == 2
    assert [g.get("name") for g in ck["optimizer"]["param_groups"]] == ["classifier", "lws"]
    before = snapshot(s2)
    # more epochs re-spread stage 2's cosine: another run, in a new folder
    assert commands.train_stage2([*common, "num_epochs", "2", "resume", "auto"]) == 0
    [new] = new_folders(str(out), [os.path.basename(s2)])
    assert [r["epoch"] for r in read_metrics(str(out / new))] == [2]
    assert "num_epochs 1 -> 2" in run_log(str(out / new), "digits_imb005_stage2_mislas")
    assert snapshot(s2) == before
    # the same config: the run's own folder (nothing left to train here)
    assert commands.train_stage2([*common, "num_epochs", "1", "resume", current(s2)]) == 0
    assert sorted(os.listdir(out)) == sorted([os.path.basename(s2), new])
    assert [r["epoch"] for r in read_metrics(s2)] == [1]


def test_read_only_checkpoint_folder_stops_before_training(one_run, tmp_path, capsys):
    run = copy_run(one_run, tmp_path / "saved")
    ckps = os.path.join(run, "ckps")
    os.chmod(ckps, 0o555)
    try:
        before = snapshot(str(tmp_path / "saved"))
        with pytest.raises(SystemExit) as e:
            commands.train_stage1(["--cfg", DIGITS_CE, "num_epochs", "2", "output_dir",
                               str(tmp_path / "saved"), "resume", current(run), *STEP])
        after = snapshot(str(tmp_path / "saved"))
    finally:
        os.chmod(ckps, 0o755)
    assert e.value.code == 2
    assert one_stderr_line(capsys) == (
        f"train_stage1.py: error: cannot continue the run in {run}: folder {ckps} is "
        "read-only (its checkpoints and logs are written there); make it writable, or resume "
        "a copy of the checkpoint to continue in a new run folder")
    assert after == before


def test_run_interrupted_before_its_first_metrics_row_resumes_in_its_own_folder(
        one_run, tmp_path, monkeypatch):
    signal_after_step(monkeypatch, 3)  # a SIGTERM arriving during step 3 of epoch 1
    args = ["--cfg", DIGITS_CE, "output_dir", str(tmp_path), *ONE]
    assert commands.train_stage1(args) == 128 + signal.SIGTERM
    monkeypatch.undo()
    run = only_run_dir(str(tmp_path))
    assert not os.path.exists(os.path.join(run, "metrics.jsonl"))
    assert load_checkpoint(current(run))["iteration"] == 3
    assert commands.train_stage1(args + ["resume", "auto"]) == 0
    assert only_run_dir(str(tmp_path)) == run
    # the same as the uninterrupted run
    assert strip_seconds(read_metrics(run)) == strip_seconds(read_metrics(one_run))
    assert_same_weights(final_weights(run), final_weights(one_run))


def test_eval_refuses_a_checkpoint_with_non_finite_weights(one_run, tmp_path, capsys):
    ck = load_checkpoint(current(one_run))
    ck["state_dict_classifier"]["fc.weight"][3, 1] = float("nan")
    ck["state_dict_classifier"]["fc.bias"][0] = float("inf")
    path = str(tmp_path / "diverged.pth.tar")
    torch.save(ck, path)
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_CE, "resume", path])
    assert e.value.code == 2
    assert one_stderr_line(capsys, "eval.py") == (
        f"eval.py: error: {path}: non-finite weights (NaN / Inf) in 'state_dict_classifier' "
        "tensor fc.weight (+1 more); the checkpoint is unusable (saved from a diverged run?)")
    assert os.listdir(tmp_path) == ["diverged.pth.tar"]  # no report folder
