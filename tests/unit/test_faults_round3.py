"""Faults and bad input, round 3: the next command a user types.

The resume hint continues the run that stopped (its own config.yaml), a resume whose schedule
would change leaves the run's folder alone, one sweep per folder, the dry run refuses what the
real start-up refuses, an empty yaml, the tau-grid cap, warnings for silently ignored values,
and a run stopped before it trained leaves no folder behind.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_faults_round3.py, tests/processes/test_faults_round3.py."""
import os

import pytest

from config import load_config
from engine import commands
from tests.fixtures import (
    DIGITS_CE,
    ROOT,
    one_error_line,
    write_cifar,
)
from utils.errors import ConfigError


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


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


def test_a_negative_logit_adjustment_tau_is_refused():
    with pytest.raises(ConfigError, match="key 'la_tau' is -0.5; accepted: a number >= 0"):
        load_config(DIGITS_CE, ["loss", "logit_adjust", "la_tau", "-0.5"])
