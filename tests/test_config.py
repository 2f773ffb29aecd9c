"""Config loading: every shipped yaml, reference (MiSLAS) yaml files, overrides, errors."""
import glob
import os

import pytest

from config import get_cfg_defaults, load_config
from tests.conftest import ROOT, run_cli
from utils.errors import ConfigError

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

MISLAS_YAML = """name: cifar10_imb001_stage1_mixup
print_freq: 40
workers: 16
log_dir: 'logs'
model_dir: 'ckps'
dataset: 'cifar10'
data_path: './data/cifar10'
num_classes: 10
imb_factor: 0.01
backbone: 'resnet32_fe'
resume: ''
head_class_idx:
  - 0
  - 3
med_class_idx:
  - 3
  - 7
tail_class_idx:
  - 7
  - 10
deterministic: True
distributed: False
gpu: null
world_size: -1
rank: -1
dist_url: 'tcp://224.66.41.62:23456'
dist_backend: 'nccl'
multiprocessing_distributed: False
mode: 'stage1'
smooth_head: 0.3
smooth_tail: 0.0
shift_bn: True
lr_factor: 0.5
lr: 0.1
batch_size: 128
weight_decay: 2e-4
num_epochs: 200
momentum: 0.9
cos: False
mixup: True
alpha: 1.0
arbloss: True
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
    p = tmp_path / "ref.yaml"
    p.write_text(MISLAS_YAML)
    cfg = load_config(str(p))
    assert cfg.weight_decay == pytest.approx(2e-4) and cfg.gpu is None
    assert cfg.head_class_idx == [0, 3] and cfg.arbloss and cfg.mode == "stage1"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*", "*.yaml"))))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]


def test_published_readme_configs_exist_with_the_recipe():
    for ds in ("cifar10", "cifar100"):
        for r, imb in (("001", 0.01), ("002", 0.02), ("01", 0.1)):
            cfg = load_config(os.path.join(ROOT, "config", ds, f"{ds}_imb{r}_stage1_mixup.yaml"))
            assert (cfg.arbloss, cfg.mixup, cfg.alpha, cfg.backbone) == \
                (True, True, 1.0, "resnet32_fe")
            assert (cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.num_epochs, cfg.cos) == \
                (0.1, 128, 2e-4, 200, False)
            assert cfg.imb_factor == imb
            fam = {s: load_config(os.path.join(ROOT, "config", ds, f"{ds}_imb{r}{s}.yaml"))
                   for s in ("", "_arbloss", "_arbloss_mixup", "_arbloss_ugcc")}
            assert not fam[""].arbloss and fam[""].mixup
            assert fam["_arbloss"].arbloss and not fam["_arbloss"].mixup
            assert fam["_arbloss_mixup"].arbloss and fam["_arbloss_mixup"].mixup
            u = fam["_arbloss_ugcc"]
            assert u.arbloss and u.arb_loss_use_global_class_cnt and not u.mixup


def test_overrides_are_merged():
    cfg = load_config(os.path.join(ROOT, "config", "digits", "digits_imb005_ce.yaml"),
                      ["lr", "0.5", "num_epochs", "3", "head_class_idx", "[0, 2]", "arbloss",
                       "True", "weight_decay", "0"])
    assert (cfg.lr, cfg.num_epochs, cfg.head_class_idx, cfg.arbloss, cfg.weight_decay) == \
        (0.5, 3, [0, 2], True, 0.0)


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
])
def test_config_errors(tmp_path, text, opts, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
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
    r = run_cli("train_stage1.py", *args, "output_dir", str(out), cwd=ROOT) \
        if len(args) > 2 else run_cli("train_stage1.py", *args, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert match in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() or not os.listdir(out)
