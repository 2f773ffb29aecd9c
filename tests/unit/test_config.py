"""Config loading: every shipped yaml, reference (MiSLAS) yaml files, overrides, errors.

Here: the checks without a training loop or a process; the rest in
tests/processes/test_config.py."""
import glob
import os
import re

import pytest

from config import get_cfg_defaults, load_config, mixup_enabled
from tests.fixtures import ROOT
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
NOT_EMPTY = "print_freq: 40\n"  # a yaml holding only a default
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
    p.write_text(f"dataset: {dataset}\nimb_factor: null\nbackbone: resnet50_fe\n")
    assert load_config(str(p)).imb_factor is None


def test_alpha_null_is_accepted_without_mixup(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("mixup: False\nalpha: null\n")
    cfg = load_config(str(p))
    assert cfg.alpha is None and not mixup_enabled(cfg)
    assert load_config(str(p), ["alpha", "0.5"]).alpha == 0.5  # null keeps the key's type


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "config", "*", "*.yaml"))))
def test_every_shipped_config_loads(path):
    stage = 2 if "_stage2_" in os.path.basename(path) else 1
    cfg = load_config(path, stage=stage)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]
    assert (cfg.mode == "stage2") == (stage == 2)


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
                      ["lr", "0.5", "num_epochs", "3", "head_class_idx", "[0, 2]",
                       "med_class_idx", "[2, 6]", "tail_class_idx", "[6, 10]", "arbloss",
                       "True", "weight_decay", "0", "seed", "4294967295", "lr_steps", "[3]"])
    assert ((cfg.lr, cfg.num_epochs, cfg.head_class_idx, cfg.arbloss, cfg.weight_decay) ==
        (0.5, 3, [0, 2], True, 0.0))
    assert cfg.seed == 2 ** 32 - 1 and cfg.lr_steps == [3] and cfg.tail_class_idx == [6, 10]


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
    ("lr: null\n", [], "bad.yaml: key 'lr' cannot be null (an empty value in yaml is null); "
     "accepted: a number > 0"),
    ("mode: 'stage2'\n", [], "a stage-2 config (classifier re-training, MiSLAS); run it with "
     "train_stage2.py"),
    ("mode: 'stage3'\n", [], "key 'mode' is 'stage3'; accepted: 'stage1', 'stage2' or null"),
    ("shift_bn: True\n", [], "key 'shift_bn' is True: a stage-2 key"),
    ("lr_factor: 0.5\n", [], "key 'lr_factor' is 0.5: a stage-2 key"),
    ("", ["train_stage2_instance", "True"], "key 'train_stage2_instance' is True: a stage-2"),
    ("world_size: 2\ndist_url: 'tcp://127.0.0.1:23456'\n", [],
     "key 'rank' is -1; accepted: 0 .. world_size-1 (1) for a manual distributed set-up"),
    ("world_size: 2\nrank: 2\ndist_url: 'tcp://127.0.0.1:23456'\n", [], "key 'rank' is 2"),
    ("dataset: places\nbackbone: resnet32_fe\n", [],
     "key 'backbone' is 'resnet32_fe'; dataset 'places' needs an ImageNet ResNet"),
])
def test_config_errors(tmp_path, text, opts, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text or NOT_EMPTY)  # an empty file is an error of its own
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_config(str(p), opts)


# The cases of the "one line for every user error" issue: each names the key, the value and
# what is accepted (exact messages, as the README quotes them).
@pytest.mark.parametrize("text,opts,message", [
    ("", ["seed", "-1"],
     "command line: key 'seed' is -1; accepted: an integer in [0, 4294967295]"),
    ("", ["seed", "4294967296"],
     "command line: key 'seed' is 4294967296; accepted: an integer in [0, 4294967295]"),
    ("seed: 1.5\n", [],
     "bad.yaml: key 'seed' expects an integer, got 1.5; accepted: an integer in [0, 4294967295]"),
    ("lr:\n", [],
     "bad.yaml: key 'lr' cannot be null (an empty value in yaml is null); accepted: a number > 0"),
    ("", ["batch_size", "None"], "command line: key 'batch_size' cannot be null (an empty value "
     "in yaml is null); accepted: an integer >= 1"),
    ("", ["batch_size", ""],
     "command line: key 'batch_size' expects an integer, got ''; accepted: an integer >= 1"),
    ("", ["lr_steps", "['a','b']"], "command line: key 'lr_steps' expects a list of integers, got "
     "\"['a','b']\"; accepted: epochs >= 0 in increasing order (e.g. [160, 180])"),
    ("lr_steps: [[160], 180]\n", [], "bad.yaml: key 'lr_steps' expects a list of integers, got "
     "[[160], 180]; accepted: epochs >= 0 in increasing order (e.g. [160, 180])"),
    ("lr_steps: [180, 160]\n", [], "bad.yaml: key 'lr_steps' is [180, 160]; accepted: epochs "
     ">= 0 in increasing order (e.g. [160, 180])"),
    ("lr_steps: [160, 180]\nlr_factors: [0.01]\n", [], "key 'lr_factors' is [0.01] but "
     "'lr_steps' is [160, 180]; accepted: one factor per step, or []"),
    ("", ["lr_factors", "[0.1, 0]"], "command line: key 'lr_factors' is [0.1, 0.0]; accepted: "
     "numbers > 0, one per lr_steps entry"),
    ("", ["loss", "dr", "classifier", "linear"], "key 'loss' is 'dr' (dot regression) but "
     "'classifier' is 'linear'; the dot regression trains features towards a fixed ETF"),
    ("", ["classifier", "cosine", "eval_tau_norm", "1"], "key 'eval_tau_norm' is 1 but the "
     "classifier is 'cosine', whose class vectors all have norm 1"),
    ("", ["loss", "ldam", "eval_tau_norm", "1"], "key 'eval_tau_norm' is 1 but the classifier "
     "is 'cosine'"),
    ("", ["classifier", "norm"], "command line: key 'classifier' is 'norm'; accepted: auto, "
     "linear, cosine, etf"),
    ("", ["smooth_head", "abc"], "command line: key 'smooth_head' expects a float, got 'abc'; "
     "accepted: a number in [0, 1), or null"),
    ("smooth_tail: 1.0\n", [],
     "bad.yaml: key 'smooth_tail' is 1.0; accepted: a number in [0, 1), or null"),
    ("lr: .inf\n", [], "bad.yaml: key 'lr' is inf; accepted: a number > 0 (finite)"),
    ("weight_decay: .nan\n", [],
     "bad.yaml: key 'weight_decay' is nan; accepted: a number >= 0 (finite)"),
    ("", ["momentum", "1e400"], "command line: key 'momentum' is inf; accepted: a number >= 0 "
     "(finite)"),
    ("", ["num_epochs", "1e30"], "command line: key 'num_epochs' is "
     "1000000000000000019884624838656; accepted: an integer >= 1 (a 64-bit integer: below "
     "2**63)"),
    ("mixup: 1\n", [], "bad.yaml: key 'mixup' expects a bool, got 1; accepted: True or False"),
    ("", ["mixup", "yes"],
     "command line: key 'mixup' expects a bool, got 'yes'; accepted: True or False"),
    ("name: [a, b]\n", [],
     "bad.yaml: key 'name' expects a string, got ['a', 'b']; accepted: a string"),
    # a path as name would put the run folder outside output_dir
    ("", ["name", "../up"], "key 'name' is '../up'; accepted: a folder name without '/' or '\\' "
     "(runs go to <output_dir>/<name>_<YYYYmmddHHMM>)"),
    ("name: a/b\n", [], "key 'name' is 'a/b'; accepted: a folder name without '/'"),
    ("lr: {a: 1}\n", [], "bad.yaml: key 'lr' takes a single value, not a mapping (got "
     "{'a': 1}); accepted: a number > 0"),
    ("", ["world_size", "0"],
     "command line: key 'world_size' is 0; accepted: -1 (not set) or an integer >= 1"),
    ("", ["gpu", "-1"], "command line: key 'gpu' is -1; accepted: an integer >= 0, or null"),
    ("", ["amp", "fp8"], "command line: key 'amp' is 'fp8'; accepted: none, bf16, fp16"),
    ("", ["workers", "-2"], "command line: key 'workers' is -2; accepted: an integer >= 0"),
    ("lr: 0.1\nseed: 1\nlr: 0.2\n", [],
     "bad.yaml: key 'lr' is given twice (lines 1 and 3); give each key once"),
    # class ranges: all three or none, contiguous
    ("head_class_idx: [0, 3]\n", [], "key 'head_class_idx' is [0, 3] but 'med_class_idx' and "
     "'tail_class_idx' are not given; accepted: all three of head_class_idx, med_class_idx, "
     "tail_class_idx as contiguous [start, end] ranges from 0 to num_classes (many, then "
     "medium, then few), or none (derived from the training counts)"),
    ("head_class_idx: [0, 3]\nmed_class_idx: [3, 7]\n", [], "key 'head_class_idx' is [0, 3] "
     "and 'med_class_idx' is [3, 7] but 'tail_class_idx' is not given; accepted: all three"),
    ("head_class_idx: [0, 3]\nmed_class_idx: [4, 7]\ntail_class_idx: [7, 10]\n", [],
     "keys 'head_class_idx' [0, 3], 'med_class_idx' [4, 7], 'tail_class_idx' [7, 10] are not "
     "contiguous; accepted: all three"),
    ("head_class_idx: [1, 3]\nmed_class_idx: [3, 7]\ntail_class_idx: [7, 10]\n", [],
     "keys 'head_class_idx' [1, 3], 'med_class_idx' [3, 7], 'tail_class_idx' [7, 10] are not "
     "contiguous"),
    ("", ["med_class_idx", "[5, 5]"], "command line: key 'med_class_idx' is [5, 5]; accepted: "
     "[start, end] with 0 <= start < end (the classes start .. end - 1)"),
    ("", ["tail_class_idx", "[1, 2, 3]"], "command line: key 'tail_class_idx' is [1, 2, 3]; "
     "accepted: [start, end] with 0 <= start < end"),
])
def test_one_line_errors_name_key_value_and_accepted(tmp_path, text, opts, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text or NOT_EMPTY)  # an empty file is an error of its own
    with pytest.raises(ConfigError) as e:
        load_config(str(p), opts)
    msg = str(e.value).replace(str(tmp_path) + os.sep, "")
    assert "\n" not in msg
    assert msg.startswith(message), msg  # the whole message, or its start where it is long


def test_an_integer_too_long_for_python_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    # Python >= 3.11 (and the 3.9 / 3.10 security releases) refuse to parse it; older ones
    # parse it and the range check refuses it
    assert str(e.value).startswith((f"{p}: cannot read config file (ValueError: Exceeds the "
                                    "limit (4300 digits) for integer string conversion",
                                    f"{p}: key 'seed' is <an integer of about 5000 digits>"))


def test_yaml_merge_keys_may_be_overridden_and_nested_duplicates_are_refused(tmp_path):
    from config import _read_yaml
    p = tmp_path / "m.yaml"
    p.write_text("a: &x {k: 1, j: 2}\nb:\n  <<: *x\n  k: 3\n")
    assert _read_yaml(str(p)) == {"a": {"k": 1, "j": 2}, "b": {"k": 3, "j": 2}}
    p.write_text("a:\n  k: 1\n  k: 2\n")
    with pytest.raises(ConfigError, match=re.escape("key 'k' is given twice (lines 2 and 3)")):
        _read_yaml(str(p))


def test_every_key_has_a_type_and_a_description():
    """A key whose default is null (or an empty list) must declare its type in config: the
    check cannot guess it."""
    from config import accepted_values
    for key in get_cfg_defaults():
        assert accepted_values(key), key


def test_class_ranges_all_three_given_or_none(tmp_path):
    from analysis.metrics import class_ranges, derive_class_ranges
    counts = [50] * 3 + [30] * 4 + [5] * 3
    p = tmp_path / "x.yaml"
    p.write_text("num_classes: 10\n")
    assert class_ranges(load_config(str(p)), counts) == derive_class_ranges(counts)
    # [0, 1] is a real range once the other two are given (one many-shot class)
    cfg = load_config(str(p), ["head_class_idx", "[0, 1]", "med_class_idx", "[1, 6]",
                               "tail_class_idx", "[6, 10]"])
    assert class_ranges(cfg, counts) == {"many": (0, 1), "medium": (1, 6), "few": (6, 10)}
    cfg = load_config(str(p), ["head_class_idx", "[0, 1]", "med_class_idx", "[1, 6]",
                               "tail_class_idx", "[6, 12]"])
    with pytest.raises(ConfigError) as e:
        class_ranges(cfg, counts)
    assert str(e.value) == (
        "key 'tail_class_idx' is [6, 12] but the data has 10 classes; accepted: class ranges "
        "covering [0, 10) (few ending at 10), or none of head / med / tail_class_idx (derived "
        "from the training counts)")


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_a_mislas_stage2_config_without_smoothing_is_refused_when_it_loads(tmp_path):
    """MiSLAS's stage 2 trains with label-aware smoothing: refused at load (the dry run too),
    not when the loss is built."""
    p = tmp_path / "s2.yaml"
    p.write_text("mode: 'stage2'\ndataset: digits\nimb_factor: 0.05\n")
    with pytest.raises(ConfigError, match="stage2_method 'mislas' trains with label-aware "
                                          "smoothing: set 'smooth_head' and 'smooth_tail'"):
        load_config(str(p), stage=2)
    assert load_config(str(p), ["stage2_method", "crt"], stage=2).stage2_method == "crt"
    assert load_config(str(p), ["smooth_head", "0.2", "smooth_tail", "0.0"], stage=2)
