"""Config loading: every shipped yaml, reference (MiSLAS) yaml files, overrides, errors."""
import glob
import os
import re

import pytest

from config import get_cfg_defaults, load_config, mixup_enabled
from tests.conftest import ROOT, run_cli
from utils.errors import ConfigError

# The yacs defaults of the published ARB-Loss code (_C in utils/logger.py of
# github.com/lilydedbb/ARBLOSS); MiSLAS's are the same up to alpha except
# dist_url='tcp://224.66.41.62:23456', and lack the keys from arbloss on.
REFERENCE_DEFAULTS = dict(
    name='', print_freq=40, workers=16, log_dir='logs', model_dir='ckps', dataset='cifar10',
    data_path='./data/cifar10', num_classes=100, imb_factor=0.01, backbone='resnet32_fe',
    resume='', head_class_idx=[0, 1], med_class_idx=[0, 1], tail_class_idx=[0, 1],
    deterministic=True, gpu=0, world_size=-1, rank=-1, dist_url='env://', dist_backend='nccl',
    multiprocessing_distributed=False, distributed=False, mode=None, smooth_tail=None,
    smooth_head=None, shift_bn=False, lr_factor=None, lr=0.1, batch_size=128,
    weight_decay=0.002, num_epochs=200, momentum=0.9, cos=False, mixup=True, alpha=1.0,
    arbloss=False, warbloss=False, arb_loss_use_global_class_cnt=False, LAS=False,
    not_pretrained=False, arbloss_fl=False, train_stage2_instance=False)

PUBLISHED = os.path.join(ROOT, "tests", "data", "published_configs")
# the MiSLAS CIFAR-10 stage-1 file with every ARB-Loss key added (as yacs accepts it)
ARB_KEYS = """arbloss: True
warbloss: False
arb_loss_use_global_class_cnt: False
LAS: False
not_pretrained: False
arbloss_fl: False
train_stage2_instance: False
"""


def test_defaults_hold_every_reference_key():
    cfg = get_cfg_defaults()
    for k, v in REFERENCE_DEFAULTS.items():
        assert cfg[k] == v, k


def test_reference_yaml_loads_unchanged(tmp_path):
    mislas = os.path.join(PUBLISHED, "mislas", "cifar10", "cifar10_imb001_stage1_mixup.yaml")
    p = tmp_path / "ref.yaml"
    p.write_text(open(mislas).read() + ARB_KEYS)
    cfg = load_config(str(p))
    assert cfg.weight_decay == pytest.approx(2e-4) and cfg.gpu is None
    assert cfg.head_class_idx == [0, 3] and cfg.arbloss and cfg.mode == "stage1"


def test_mixup_enabled():
    cfg = get_cfg_defaults()
    for mixup, alpha, on in ((True, 1.0, True), (True, 0.2, True), (True, 0.0, False),
                             (False, 1.0, False), (False, None, False)):
        cfg.mixup, cfg.alpha = mixup, alpha
        assert mixup_enabled(cfg) is on, (mixup, alpha)


@pytest.mark.parametrize("dataset", ["imagenet", "ina2018", "places"])
def test_imb_factor_null_is_accepted_for_image_lists(tmp_path, dataset):
    p = tmp_path / "x.yaml"
    p.write_text(f"dataset: {dataset}\nimb_factor: null\n")
    assert load_config(str(p)).imb_factor is None


def test_alpha_null_is_accepted_without_mixup(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("mixup: False\nalpha: null\n")
    cfg = load_config(str(p))
    assert cfg.alpha is None and not mixup_enabled(cfg)
    assert load_config(str(p), ["alpha", "0.5"]).alpha == 0.5  # null keeps the key's type


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*", "*.yaml"))))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]


def test_published_readme_configs_exist_with_the_recipe():
    """The CIFAR families as published by ARB-Loss (cross-entropy baselines without mixup), and
    the README's *_stage1_mixup files (ours) as ARB-Loss + mixup."""
    for ds in ("cifar10", "cifar100"):
        for r, imb in (("001", 0.01), ("002", 0.02), ("01", 0.1)):
            cfg = load_config(os.path.join(ROOT, "config", ds, f"{ds}_imb{r}_stage1_mixup.yaml"))
            assert ((cfg.arbloss, cfg.mixup, cfg.alpha, cfg.backbone) ==
                (True, True, 1.0, "resnet32_fe"))
            assert ((cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.num_epochs, cfg.cos) ==
                (0.1, 128, 2e-4, 200, False))
            assert cfg.imb_factor == imb
            fam = {s: load_config(os.path.join(ROOT, "config", ds, f"{ds}_imb{r}{s}.yaml"))
                   for s in ("", "_arbloss", "_arbloss_mixup", "_arbloss_ugcc")}
            assert not fam[""].arbloss and not fam[""].mixup
            assert fam["_arbloss"].arbloss and not fam["_arbloss"].mixup
            assert fam["_arbloss_mixup"].arbloss and fam["_arbloss_mixup"].mixup
            u = fam["_arbloss_ugcc"]
            assert u.arbloss and u.arb_loss_use_global_class_cnt and not u.mixup


def test_overrides_are_merged():
    cfg = load_config(os.path.join(ROOT, "config", "digits", "digits_imb005_ce.yaml"),
                      ["lr", "0.5", "num_epochs", "3", "head_class_idx", "[0, 2]", "arbloss",
                       "True", "weight_decay", "0"])
    assert ((cfg.lr, cfg.num_epochs, cfg.head_class_idx, cfg.arbloss, cfg.weight_decay) ==
        (0.5, 3, [0, 2], True, 0.0))


@pytest.mark.parametrize("text,opts,match", [
    ("lr: fast\n", [], "'lr' expects a float"),
    ("learning_rate: 0.1\n", [], "unknown config key 'learning_rate'"),
    ("lr: [0.1\n", [], "yaml syntax error at line"),
    ("imb_factor: 0\n", [], "imb_factor"),
    ("imb_factor: 1.5\n", [], "imb_factor"),
    ("imb_factor: -0.1\n", [], "imb_factor"),
    ("batch_size: 0\n", [], "batch_size"),
    ("", ["lr"], "KEY VALUE pairs"),
    ("", ["nosuchkey", "1"], "unknown config key 'nosuchkey'"),
    ("head_class_idx: 3\n", [], "head_class_idx"),
    ("imb_factor: null\n", [], "key 'imb_factor' is null; dataset cifar10 needs a number"),
    ("dataset: digits\nimb_factor: null\n", [], "dataset digits needs a number in (0, 1]"),
    ("dataset: cifar100\n", ["imb_factor", "None"], "dataset cifar100 needs a number"),
    ("mixup: True\nalpha: null\n", [], "key 'alpha' is null but 'mixup' is True"),
    ("alpha: -1\n", [], "key 'alpha' is -1.0; accepted: a number >= 0"),
    ("lr: null\n", [], "key 'lr' cannot be null; it expects a float (default 0.1)"),
    ("mode: 'stage2'\n", [], "a stage-2 config (classifier re-training, MiSLAS); run it with "
     "train_stage2.py"),
    ("mode: 'stage3'\n", [], "key 'mode' is 'stage3'; accepted: 'stage1', 'stage2' or null"),
    ("shift_bn: True\n", [], "key 'shift_bn' is True: a stage-2 key"),
    ("lr_factor: 0.5\n", [], "key 'lr_factor' is 0.5: a stage-2 key"),
    ("", ["train_stage2_instance", "True"], "key 'train_stage2_instance' is True: a stage-2"),
])
def test_config_errors(tmp_path, text, opts, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(str(p), opts)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


# One real process proves the command-line path end to end (exit status, stderr, no traceback);
# the full list of user errors is checked in-process in test_fault_tolerance.py (each fresh
# interpreter costs a torch import).
@pytest.mark.parametrize("args,match", [
    (["--cfg", "config/digits/digits_imb005_ce.yaml", "dataset", "mnist"], "'dataset'"),
])
def test_cli_user_errors_exit_2_without_traceback_or_run_folder(tmp_path, args, match):
    out = tmp_path / "out"
    r = (run_cli("train_stage1.py", *args, "output_dir", str(out), cwd=ROOT)
        if len(args) > 2 else run_cli("train_stage1.py", *args, cwd=ROOT))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert match in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not os.listdir(out)
