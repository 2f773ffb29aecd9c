"""Config loading: yacs defaults + a yaml file + ``KEY VALUE`` overrides, with clear errors.

Yaml files written for MiSLAS / the ARB-Loss code load unchanged: every reference key has a
default, strings such as ``2e-4`` are decoded as numbers (as yacs does), and an integer given
for a float key is accepted. ``null`` is accepted where the published configs use it, with the
meaning it has there: ``imb_factor: null`` for the image-list data sets (their split is fixed,
the factor unused), ``alpha: null`` with ``mixup: False`` (unused), ``gpu: null``; a null that
would have to be used (``imb_factor`` of CIFAR / digits, ``alpha`` with mixup on) is a
one-line :class:`ConfigError`. MiSLAS stage-2 configs (``mode: 'stage2'``) and stage-2 keys set
in a stage-1 run are refused with one line, never silently ignored.

Every value passes one check before it reaches the code: its type is that of the key's default
(:data:`_NULL_DEFAULT_TYPES` for the keys whose default is null), numbers must be finite and lie
in the key's range (:data:`_RULES`), strings of a key with choices must be one of them
(``_CHOICES``). A key given twice in one yaml file is an error (yaml itself keeps the last).
"""
from __future__ import annotations

import ast
import difflib
import math
import os
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from config.defaults import get_cfg_defaults
from utils.errors import ConfigError

__all__ = ["get_cfg_defaults", "load_config", "cfg_to_yaml", "cfg_from_yaml_string",
           "mixup_enabled", "classifier_kind", "check_loss", "ARB_FLAGS", "validate", "check_value",
           "accepted_values", "check_class_ranges", "IMAGE_LIST_DATASETS", "STAGE2_KEYS",
           "CLASS_RANGE_KEYS", "RANGE_PLACEHOLDER", "TIMM_PREFIX", "PLACES_BACKBONES"]

_CHOICES = {
    "imb_type": ("exp", "step"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("none", "bf16", "fp16"),
    "las_shape": ("concave", "linear", "convex", "exp"),
    "class_order": ("reference", "stable"),
    "imagelist_pipeline": ("fast", "reference"),
    "imagelist_decode": ("cpu", "cuda"),
    "sampler": ("instance", "class_balanced", "sqrt", "progressive", "class_aware"),
    "loss": ("auto", "ce", "arb", "balanced_softmax", "logit_adjust", "ldam", "focal", "cb",
             "label_smoothing", "dr"),
    "classifier": ("auto", "linear", "cosine", "etf"),
    # the registries' names (datasets.DATASETS, models.BACKBONES; tested equal)
    "dataset": ("cifar10", "cifar100", "digits", "imagenet", "ina2018", "places", "imagelist",
                "folder"),
    "backbone": ("resnet8_fe", "resnet20_fe", "resnet32_fe", "resnet44_fe", "resnet56_fe",
                 "resnet110_fe", "resnet32_fe_c100", "resnet10_fe", "resnet50_fe",
                 "resnet101_fe", "resnet152_fe"),
    "cb_base": ("softmax", "focal"),
    "stage2_method": ("mislas", "crt", "lws"),
    "compile_mode": ("none", "default", "reduce-overhead", "max-autotune"),
}

# The backbones of dataset 'places': ImageNet ResNets whose torchvision layout the frozen
# pretrained trunk needs (models.resnet.RESNET_SPECS; tested equal).
PLACES_BACKBONES = ("resnet10_fe", "resnet50_fe", "resnet101_fe", "resnet152_fe")

# Data sets with a fixed published split (list files): imb_factor is not used; the published
# ImageNet-LT / iNaturalist / Places-LT configs say ``imb_factor: null``.
IMAGE_LIST_DATASETS = ("imagenet", "ina2018", "places", "imagelist")
# Your own data: the classes are counted from the data (num_classes null or absent), a folder
# tree is taken as it is unless imb_factor asks for a long tail.
OWN_DATASETS = ("imagelist", "folder")

# Keys read only by a stage-2 script (classifier re-training): shift_bn and lr_factor by MiSLAS's
# train_stage2.py, train_stage2_instance by ARB-Loss's (entirely commented out there). Stage-1
# training cannot honour them.
STAGE2_KEYS = ("shift_bn", "lr_factor", "train_stage2_instance", "stage2_method")

# The many / medium / few class ranges ([start, end) each); all three at the placeholder
# default [0, 1] means "not given": the ranges are derived from the training counts.
CLASS_RANGE_KEYS = ("head_class_idx", "med_class_idx", "tail_class_idx")
RANGE_PLACEHOLDER = [0, 1]

# The defaults, frozen: the type reference of every key (a key set to null keeps its type).
_DEFAULTS = get_cfg_defaults()
_DEFAULTS.freeze()
# Keys that accept null: those whose default is None, and those the published configs set null.
_NULLABLE = frozenset([k for k, v in _DEFAULTS.items() if v is None]
                      + ["gpu", "imb_factor", "alpha", "num_classes"])
# The type of each key whose default is null (every other key has the type of its default).
_NULL_DEFAULT_TYPES: Dict[str, type] = {
    "mode": str, "smooth_tail": float, "smooth_head": float, "lr_factor": float,
}
# The item type of list keys whose default is empty (others: the type of the default's items).
_LIST_ITEM_TYPES: Dict[str, type] = {"lr_factors": float}

# numpy's legacy seeding (np.random.seed in engine/runtime.py: seed_everything) accepts
# [0, 2**32 - 1]; the per-rank streams (engine/state.py: RandomStreams, seed + 7919 * rank)
# use numpy's default_rng and torch's manual_seed, which accept any such seed plus the offset.
SEED_MAX = 2 ** 32 - 1
# Integers beyond int64 overflow in torch / numpy calls.
_INT64_MAX = 2 ** 63 - 1


class _Rule(NamedTuple):
    """The values a key accepts beyond its type: ``text`` describes them, ``ok`` tests one
    (a number, or for a list key the whole list of numbers)."""
    text: str
    ok: Callable[[Any], bool]


def _at_least(low: float, kind: str = "an integer") -> _Rule:
    return _Rule(f"{kind} >= {low}", lambda v: v >= low)


def _above(low: float) -> _Rule:
    return _Rule(f"a number > {low}", lambda v: v > low)


def _interval(low: float, high: float, kind: str = "a number", low_open: bool = False,
              high_open: bool = False) -> _Rule:
    text = f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return _Rule(text, lambda v: ((low < v) if low_open else (low <= v))
                 and ((v < high) if high_open else (v <= high)))


def _class_range_ok(v: Sequence[int]) -> bool:
    return len(v) == 2 and 0 <= v[0] < v[1]


def _lr_steps_ok(v: Sequence[int]) -> bool:
    return all(x >= 0 for x in v) and list(v) == sorted(v)


_CLASS_RANGE_RULE = _Rule("[start, end] with 0 <= start < end (the classes start .. end - 1)",
                          _class_range_ok)

# Ranges of the numeric keys (a number key without a rule accepts any finite number).
_RULES: Dict[str, _Rule] = {
    **{k: _at_least(1) for k in ("print_freq", "num_classes", "batch_size", "num_epochs",
                                 "eval_freq", "image_size", "resize_size")},
    **{k: _at_least(0) for k in ("workers", "test_batch_size", "warmup_epochs",
                                 "grad_stats_freq", "nc_freq", "plot_freq",
                                 "digits_test_per_class", "gpu")},
    "world_size": _Rule("-1 (not set) or an integer >= 1", lambda v: v == -1 or v >= 1),
    "rank": _Rule("-1 (not set) or an integer >= 0", lambda v: v >= -1),
    "seed": _interval(0, SEED_MAX, "an integer"),
    "imb_factor": _interval(0, 1, low_open=True),
    "lr": _above(0),
    "lr_factor": _above(0),
    "las_power": _above(0),
    "weight_decay": _at_least(0, "a number"),
    "momentum": _at_least(0, "a number"),
    "alpha": _at_least(0, "a number"),
    "eval_tau_norm": _at_least(0, "a number"),
    # logit adjustment: tau < 0 would favour the head classes, the opposite of the method
    "la_tau": _at_least(0, "a number"),
    "eval_logit_adjust": _at_least(0, "a number"),
    # label smoothing of one class: 1 would leave no weight on the true class
    "smooth_head": _interval(0, 1, high_open=True),
    "smooth_tail": _interval(0, 1, high_open=True),
    **{k: _CLASS_RANGE_RULE for k in CLASS_RANGE_KEYS},
    "lr_steps": _Rule("epochs >= 0 in increasing order (e.g. [160, 180])", _lr_steps_ok),
    "lr_factors": _Rule("numbers > 0, one per lr_steps entry (e.g. [0.01, 0.0001]), or [] "
                        "(0.1, 0.01, ...)", lambda v: all(x > 0 for x in v)),
    "dr_reg_lambda": _at_least(0, "a number"),
    "randaugment_n": _at_least(1),
    "focal_gamma": _at_least(0, "a number"),
    "cb_beta": _interval(0, 1, high_open=True),
    "label_smoothing": _interval(0, 1),
    "ldam_max_m": _above(0),
    "ldam_s": _above(0),
    "drw_epoch": _Rule("an integer >= 0 (0 = no deferred re-weighting)", lambda v: v >= 0),
    "randaugment_m": _interval(0, 30, "an integer"),
    "cutmix_alpha": _at_least(0, "a number"),
}

_KIND_NAMES = {bool: "a bool", int: "an integer", float: "a float", str: "a string"}
_ANY_OF_KIND = {bool: "True or False", int: "an integer", float: "a finite number",
                str: "a string"}


def _key_type(key: str) -> type:
    """The type of a key's values (list for list keys)."""
    default = _DEFAULTS[key]
    if default is None:
        return _NULL_DEFAULT_TYPES[key]
    return list if isinstance(default, (list, tuple)) else type(default)


def _item_type(key: str) -> type:
    """The item type of a list key."""
    if key in _LIST_ITEM_TYPES:
        return _LIST_ITEM_TYPES[key]
    items = _DEFAULTS[key]
    return float if any(isinstance(i, float) for i in items) else type(items[0])


def _kind(key: str) -> str:
    """The type of a key in words: 'a float', 'a list of integers'..."""
    t = _key_type(key)
    if t is list:
        return "a list of " + {int: "integers", float: "numbers", str: "strings",
                               bool: "bools"}[_item_type(key)]
    return _KIND_NAMES[t]


def accepted_values(key: str) -> str:
    """What a key accepts, in words (the end of every error message about it)."""
    t = _key_type(key)
    if key in _CHOICES:
        text = ", ".join(_CHOICES[key])
        if key == "backbone":
            text += ", or timm:<name> (a timm model, e.g. timm:resnext50_32x4d)"
    elif key in _RULES:
        text = _RULES[key].text
    elif t is list:
        text = _kind(key)
    else:
        text = _ANY_OF_KIND[t]
    return text + (", or null" if key in _NULLABLE else "")


def _show(value: Any, limit: int = 80) -> str:
    """A value as shown in an error message: its repr, shortened."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(value: Any, default_type: type) -> Any:
    """Decode a raw yaml / command-line value the way yacs does, keeping strings for str keys."""
    if isinstance(value, str) and default_type is not str:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    if (default_type is str and value is not None
            and not isinstance(value, (str, list, tuple, dict, set))):
        value = str(value)
    return value


def _as_type(value: Any, t: type) -> Any:
    """``value`` as type ``t`` (an integral float counts as an int, an int as a float), or
    raise ValueError."""
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond the float range
                return math.inf if value > 0 else -math.inf
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif t is str:
        if isinstance(value, str):
            return value
    raise ValueError(value)


def _with_source(source: Optional[str], msg: str) -> str:
    return f"{source}: {msg}" if source else msg


def check_value(key: str, value: Any, source: Optional[str] = None) -> Any:
    """The value of ``key`` decoded and checked (type, finite, range, choices); a one-line
    :class:`ConfigError` naming the key, the value and what is accepted otherwise.
    ``source`` (a file name, 'command line') starts the message."""
    t = _key_type(key)
    raw = value
    value = _decode(value, t)
    if value is None:
        if key in _NULLABLE:
            return None
        raise ConfigError(_with_source(source, f"key '{key}' cannot be null (an empty value "
                                               "in yaml is null); accepted: "
                                               f"{accepted_values(key)}"))
    try:
        if t is list:
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            value = [_as_type(v, _item_type(key)) for v in value]
        else:
            value = _as_type(value, t)
    except ValueError:
        raise ConfigError(_with_source(source, f"key '{key}' expects {_kind(key)}, got "
                                               f"{_show(raw)}; accepted: "
                                               f"{accepted_values(key)}")) from None
    numbers = value if t is list else [value] if t in (int, float) else []
    in_rule = key not in _RULES or _RULES[key].ok(value)
    note = ""
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        note = " (finite)"
    elif in_rule and any(isinstance(v, int) and not -_INT64_MAX - 1 <= v <= _INT64_MAX
                         for v in numbers):
        note = " (a 64-bit integer: below 2**63)"
    if note or not in_rule or (key in _CHOICES and not _is_choice(key, value)):
        raise ConfigError(_with_source(source, f"key '{key}' is {_show(value)}; accepted: "
                                               f"{accepted_values(key)}{note}"))
    return value


TIMM_PREFIX = "timm:"  # backbone timm:<name>: a timm model (models/timm_backbone.py)


def _is_choice(key: str, value: Any) -> bool:
    if key == "backbone" and isinstance(value, str) and value.startswith(TIMM_PREFIX):
        return len(value) > len(TIMM_PREFIX)  # the name is checked against timm when built
    return value in _CHOICES[key]


def _apply(cfg: CN, items: dict, source: str) -> None:
    for key, value in items.items():
        if not isinstance(key, str) or key not in cfg:
            close = difflib.get_close_matches(str(key), list(cfg.keys()), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown config key {_show(key)}{hint}; "
                              "accepted keys are listed in config/defaults.py")
        if isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' takes a single value, not a mapping "
                              f"(got {_show(value)}); accepted: {accepted_values(key)}")
        cfg[key] = check_value(key, value, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (yaml keeps the last one
    silently). Keys merged in with ``<<`` may be overridden, as yaml intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = lines.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(f"key {_show(key)} is given twice (lines {first} and {again}); "
                         "give each key once")


def _read_yaml(path: str) -> dict:
    if not path:
        raise ConfigError("no config file given: pass --cfg FILE (see config/ for examples)")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: yaml syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError: an integer beyond Python's digit limit
        raise ConfigError(f"{path}: cannot read config file ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty (no 'key: value' lines); start "
                          "from a file in config/ (config/defaults.py lists every key)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of 'key: value' lines at the top level")
    return raw


def check_class_ranges(cfg: CN) -> bool:
    """Check the many / medium / few ranges as far as the data is not needed; returns whether
    they are given (False: all three at the placeholder [0, 1], to be derived from counts).

    Given ranges must be contiguous: many starts at 0, medium starts where many ends, few
    where medium ends (:func:`analysis.metrics.class_ranges` checks that few ends at the
    number of classes, once the data is known).
    """
    values = {k: list(cfg[k]) for k in CLASS_RANGE_KEYS}
    placeholders = [k for k, v in values.items() if v == RANGE_PLACEHOLDER]
    if len(placeholders) == len(CLASS_RANGE_KEYS):
        return False
    for key in CLASS_RANGE_KEYS:
        v = values[key]
        if not _class_range_ok(v):
            raise ConfigError(f"key '{key}' is {v}; accepted: {_CLASS_RANGE_RULE.text}")
    head, med, tail = (values[k] for k in CLASS_RANGE_KEYS)
    if head[0] == 0 and head[1] == med[0] and med[1] == tail[0]:
        return True
    given = [k for k in CLASS_RANGE_KEYS if k not in placeholders]
    rule = ("all three of head_class_idx, med_class_idx, tail_class_idx as contiguous "
            "[start, end] ranges from 0 to num_classes (many, then medium, then few), or none "
            "(derived from the training counts)")
    if placeholders and given:
        shown = " and ".join(f"'{k}' is {values[k]}" for k in given)
        missing = " and ".join(f"'{k}'" for k in placeholders)
        raise ConfigError(f"key {shown} but {missing} "
                          f"{'is' if len(placeholders) == 1 else 'are'} not given; "
                          f"accepted: {rule}")
    raise ConfigError(f"keys 'head_class_idx' {head}, 'med_class_idx' {med}, 'tail_class_idx' "
                      f"{tail} are not contiguous; accepted: {rule}")


def validate(cfg: CN, stage: Optional[int] = 1) -> None:
    """Check every value (type, range, choices; see :func:`check_value`) and the rules that
    join keys, for a run of ``stage`` (1, 2, or None for evaluation). Class ranges are checked
    against the number of classes once the counts exist."""
    for key in cfg:
        check_value(key, cfg[key])
    check_stage(cfg, stage)
    if cfg.imb_factor is None and cfg.dataset not in IMAGE_LIST_DATASETS + OWN_DATASETS:
        raise ConfigError(f"key 'imb_factor' is null; dataset {cfg.dataset} needs a number "
                          "in (0, 1] (null only for the image-list data sets "
                          f"{', '.join(IMAGE_LIST_DATASETS)}, whose split is fixed, and for "
                          "folder: the tree as it is)")
    if cfg.num_classes is None and cfg.dataset not in OWN_DATASETS:
        raise ConfigError(f"key 'num_classes' is null; dataset {cfg.dataset} needs an integer "
                          ">= 1 (null, counted from the data, only for imagelist and folder)")
    if cfg.dataset == "imagelist" and not (cfg.train_list and cfg.test_list):
        missing = "train_list" if not cfg.train_list else "test_list"
        raise ConfigError(f"key '{missing}' is empty; dataset imagelist reads the list files it "
                          "names ('<relative image path> <label>' lines, paths relative to "
                          "data_path): set train_list and test_list (val_list optional)")
    if cfg.alpha is None and cfg.mixup:
        raise ConfigError("key 'alpha' is null but 'mixup' is True; accepted: a number >= 0 "
                          "(mixup draws lam from Beta(alpha, alpha)), or mixup False")
    if cfg.LAS and (cfg.smooth_head is None or cfg.smooth_tail is None):
        raise ConfigError("LAS: True needs 'smooth_head' and 'smooth_tail' (numbers in [0, 1))")
    name = cfg.name or ""
    if any(c in name for c in "/\\\0"):
        # the run folder is <output_dir>/<name>_<time>: a path here would leave output_dir
        raise ConfigError(f"key 'name' is {_show(name)}; accepted: a folder name without '/' "
                          "or '\\' (runs go to <output_dir>/<name>_<YYYYmmddHHMM>)")
    if cfg.dataset == "places" and cfg.backbone not in PLACES_BACKBONES:
        raise ConfigError(f"key 'backbone' is {cfg.backbone!r}; dataset 'places' needs an "
                          f"ImageNet ResNet: {', '.join(PLACES_BACKBONES)}")
    _check_manual_rank(cfg)
    check_class_ranges(cfg)
    _check_schedule(cfg)
    check_loss(cfg)
    _check_classifier(cfg)
    _check_augmentation(cfg)


# The flags of the published code that select ARB-Loss (or one of its variants).
ARB_FLAGS = ("arbloss", "warbloss", "arbloss_fl", "arb_loss_use_global_class_cnt")
LAS_LOSSES = ("ce", "arb")  # label-aware smoothing works with these (as published)
DRW_LOSSES = ("ce", "ldam")  # deferred re-weighting (LDAM-DRW) with these


def check_loss(cfg: CN) -> str:
    """The loss a config selects (``loss``; ``auto``: ARB-Loss when a published ARB flag is on,
    else cross-entropy), checked against the other loss keys (:class:`ConfigError` with one
    line naming the key): another loss with an ARB flag on, LAS with a loss other than ce / arb,
    DRW with a loss other than ce / ldam or with LAS."""
    name = cfg.loss
    if name == "auto":
        name = "arb" if (cfg.arbloss or cfg.warbloss or cfg.arbloss_fl) else "ce"
    elif name not in _CHOICES["loss"]:
        raise ConfigError(f"key 'loss' is {name!r}; accepted: {accepted_values('loss')}")
    elif name != "arb":
        flags = [f for f in ARB_FLAGS if cfg[f]]
        if flags:
            raise ConfigError(f"key 'loss' is {name!r} but {', '.join(flags)} "
                              f"{'is' if len(flags) == 1 else 'are'} True (ARB-Loss flags); "
                              "set them False, or use loss arb")
    if cfg.LAS and name not in LAS_LOSSES:
        raise ConfigError(f"LAS: True (label-aware smoothing) works with loss ce or arb, "
                          f"not {name!r}")
    if cfg.drw_epoch > 0:
        if name not in DRW_LOSSES:
            raise ConfigError(f"key 'drw_epoch' is {cfg.drw_epoch} (deferred re-weighting) "
                              f"but loss is {name!r}; accepted with loss "
                              + " or ".join(DRW_LOSSES))
        if cfg.LAS:
            raise ConfigError("key 'drw_epoch' > 0 (deferred re-weighting) does not combine "
                              "with LAS: True")
    return name


# The data sets that have a per-image augmentation policy (AutoAugment / RandAugment): those
# with PIL images; the digits are 8x8 arrays.
POLICY_DATASETS = ("cifar10", "cifar100", "imagenet", "ina2018", "places", "imagelist",
                   "folder")


def _check_augmentation(cfg: CN) -> None:
    if cfg.compile and cfg.compile_mode != "none":
        raise ConfigError(f"keys 'compile' (the network) and 'compile_mode' "
                          f"({cfg.compile_mode!r}, the whole step) are both set; accepted: "
                          "one of them (compile_mode covers the network too)")
    on = [k for k in ("autoaugment", "randaugment") if cfg[k]]
    if len(on) > 1:
        raise ConfigError("keys 'autoaugment' and 'randaugment' are both True; accepted: at "
                          "most one augmentation policy")
    if mixup_enabled(cfg) and cfg.cutmix and cfg.cutmix_alpha > 0:
        raise ConfigError("keys 'mixup' and 'cutmix' are both on; accepted: at most one batch "
                          "mixing (set mixup False, or cutmix False)")
    if on and cfg.dataset not in POLICY_DATASETS:
        raise ConfigError(f"key '{on[0]}' is True but data set {cfg.dataset} has no such "
                          f"augmentation; accepted for {', '.join(POLICY_DATASETS)}")
    if on and cfg.device_pipeline:
        raise ConfigError(f"keys 'device_pipeline' and '{on[0]}' are both True: the device "
                          "pipeline cannot apply autoaugment / randaugment (per-image PIL "
                          "policies); set device_pipeline False")

# classifier of loss's authors (key 'classifier: auto'): LDAM-DRW pairs LDAM with a cosine
# classifier (cifar_train.py: use_norm = True if args.loss_type == 'LDAM'); Yang et al. train
# their fixed ETF with the dot regression (config keys ETF_classifier, reg_dot_loss)
_AUTO_CLASSIFIER = {"ldam": "cosine", "dr": "etf"}


def classifier_kind(cfg: CN) -> str:
    """The classifier head of a config: ``classifier``, or for ``auto`` the one the loss's
    authors used (cosine for ``ldam``, etf for ``dr``, linear otherwise)."""
    if cfg.classifier != "auto":
        return cfg.classifier
    return _AUTO_CLASSIFIER.get(cfg.loss, "linear")


def _check_classifier(cfg: CN) -> None:
    kind = classifier_kind(cfg)
    if cfg.loss == "dr" and kind != "etf":
        raise ConfigError(f"key 'loss' is 'dr' (dot regression) but 'classifier' is {kind!r}; "
                          "the dot regression trains features towards a fixed ETF: set "
                          "classifier etf (or auto)")
    if cfg.eval_tau_norm and kind in ("cosine", "etf"):
        raise ConfigError(f"key 'eval_tau_norm' is {cfg.eval_tau_norm:g} but the classifier is "
                          f"{kind!r}, whose class vectors all have norm 1: tau-normalisation "
                          "changes nothing; set eval_tau_norm 0 (eval_logit_adjust works with "
                          "every classifier)")


def _check_manual_rank(cfg: CN) -> None:
    # a manual set-up (no launcher): world_size processes, this one's rank given in the config;
    # a launcher's RANK / WORLD_SIZE replace both (utils.comm.init_distributed)
    manual = cfg.world_size > 1 and cfg.dist_url != "env://"
    if manual and not 0 <= cfg.rank < cfg.world_size:
        raise ConfigError(f"key 'rank' is {cfg.rank}; accepted: 0 .. world_size-1 "
                          f"({cfg.world_size - 1}) for a manual distributed set-up "
                          f"(dist_url {cfg.dist_url})")


def _check_schedule(cfg: CN) -> None:
    if cfg.lr_factors and len(cfg.lr_factors) != len(cfg.lr_steps):
        raise ConfigError(f"key 'lr_factors' is {list(cfg.lr_factors)} but 'lr_steps' is "
                          f"{list(cfg.lr_steps)}; accepted: one factor per step, or [] "
                          "(x0.1 after the first step, x0.01 after the second, ...)")


def check_stage(cfg: CN, stage: Optional[int]) -> None:
    """A config is for one stage: ``mode: 'stage2'`` (MiSLAS's stage-2 files) and the stage-2
    keys belong to ``train_stage2.py``, everything else to ``train_stage1.py``; ``stage``
    None (evaluation) accepts both. Never silently ignore a key the script cannot honour."""
    if cfg.mode not in (None, "stage1", "stage2"):
        raise ConfigError(f"key 'mode' is {cfg.mode!r}; accepted: 'stage1', 'stage2' or null")
    if stage == 1:
        if cfg.mode == "stage2":
            raise ConfigError("key 'mode' is 'stage2': a stage-2 config (classifier "
                              "re-training, MiSLAS); run it with train_stage2.py")
        for key in STAGE2_KEYS:
            if cfg[key] != _DEFAULTS[key]:
                raise ConfigError(f"key '{key}' is {cfg[key]!r}: a stage-2 key that stage-1 "
                                  "training does not use; remove it (or set it to "
                                  f"{_DEFAULTS[key]!r}), or run train_stage2.py")
    elif stage == 2 and cfg.mode != "stage2":
        raise ConfigError(f"key 'mode' is {cfg.mode!r}: train_stage2.py needs a stage-2 config "
                          "(mode: 'stage2'); run stage-1 configs with train_stage1.py")
    elif stage == 2 and cfg.stage2_method == "mislas" and (cfg.smooth_head is None
                                                          or cfg.smooth_tail is None):
        raise ConfigError("stage2_method 'mislas' trains with label-aware smoothing: set "
                          "'smooth_head' and 'smooth_tail' (numbers in [0, 1))")


def mixup_enabled(cfg: CN) -> bool:
    """Whether training mixes batches: ``mixup`` on and ``alpha`` > 0.

    With ``alpha`` 0 the published ``mixup_data`` (MiSLAS methods.py) draws lam = 1, i.e. no
    mixing; ``alpha: null`` passes :func:`validate` only with mixup off.
    """
    return bool(cfg.mixup) and cfg.alpha is not None and cfg.alpha > 0


# Classes of each data set: ``num_classes`` when neither the yaml nor the command line gives it
# (the reference default 100 fits only CIFAR-100; its default data set is CIFAR-10).
DATASET_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "imagenet": 1000,
                       "ina2018": 8142, "places": 365, "imagelist": None, "folder": None}


def load_config(path: str, opts: Sequence[str] = (), stage: Optional[int] = 1) -> CN:
    """Defaults, then the yaml file at ``path``, then ``KEY VALUE`` pairs from ``opts``,
    validated for ``stage`` (1: train_stage1.py, 2: train_stage2.py, None: eval.py).
    ``num_classes`` given nowhere is the data set's (:data:`DATASET_NUM_CLASSES`; null for
    your own data: counted by ``datasets.build_data``); ``imb_factor`` given nowhere is null
    for a folder tree (taken as it is)."""
    cfg = get_cfg_defaults()
    raw = _read_yaml(path)
    _apply(cfg, raw, path)
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError("overrides must come as KEY VALUE pairs; got an odd number: "
                          f"{_show(opts, 200)}")
    _apply(cfg, dict(zip(opts[0::2], opts[1::2])), "command line")
    given = set(raw) | set(opts[0::2])
    if "num_classes" not in given:
        cfg.num_classes = DATASET_NUM_CLASSES.get(cfg.dataset, cfg.num_classes)
    if "imb_factor" not in given and cfg.dataset == "folder":
        cfg.imb_factor = None  # the tree as it is
    validate(cfg, stage)
    if not cfg.name:
        cfg.name = os.path.splitext(os.path.basename(path))[0]
    cfg.freeze()
    return cfg


def cfg_to_yaml(cfg: CN) -> str:
    """The config as a yaml string (stored in checkpoints)."""
    return cfg.dump()


# What a key absent from a stored checkpoint config meant when the checkpoint was written, where
# that differs from today's default: before the key existed every head was linear.
_ABSENT_MEANT = {"classifier": "linear"}


def cfg_from_yaml_string(text: str) -> CN:
    """Rebuild a config from :func:`cfg_to_yaml` output, on top of today's defaults (a key the
    stored config predates takes the value it meant then, :data:`_ABSENT_MEANT`)."""
    cfg = get_cfg_defaults()
    raw = yaml.safe_load(text) or {}
    items = {**_ABSENT_MEANT, **{k: v for k, v in raw.items() if k in cfg}}
    _apply(cfg, items, "checkpoint config")
    return cfg
