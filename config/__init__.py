"""Config loading: yacs defaults + a yaml file + ``KEY VALUE`` overrides, with clear errors.

Yaml files written for MiSLAS / the ARB-Loss code load unchanged: every reference key has a
default, strings such as ``2e-4`` are decoded as numbers (as yacs does), and an integer given
for a float key is accepted. ``null`` is accepted where the published configs use it, with the
meaning it has there: ``imb_factor: null`` for the image-list data sets (their split is fixed,
the factor unused), ``alpha: null`` with ``mixup: False`` (unused), ``gpu: null``; a null that
would have to be used (``imb_factor`` of CIFAR / digits, ``alpha`` with mixup on) is a
one-line :class:`ConfigError`. MiSLAS stage-2 configs (``mode: 'stage2'``) and stage-2 keys set
in a stage-1 run are refused with one line, never silently ignored.
"""
from __future__ import annotations

import ast
import difflib
import os
from typing import Any, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from config.defaults import get_cfg_defaults
from utils.errors import ConfigError

__all__ = ["get_cfg_defaults", "load_config", "cfg_to_yaml", "cfg_from_yaml_string",
           "mixup_enabled", "IMAGE_LIST_DATASETS", "STAGE2_KEYS"]

_CHOICES = {
    "imb_type": ("exp", "step"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("none", "bf16", "fp16"),
    "las_shape": ("concave", "linear", "convex", "exp"),
    "class_order": ("reference", "stable"),
    "imagelist_pipeline": ("fast", "reference"),
    "imagelist_decode": ("cpu", "cuda"),
    "loss": ("auto", "ce", "arb", "balanced_softmax", "logit_adjust", "ldam", "focal", "cb",
             "label_smoothing"),
    "cb_base": ("softmax", "focal"),
}

# Data sets with a fixed published split (list files): imb_factor is not used; the published
# ImageNet-LT / iNaturalist / Places-LT configs say ``imb_factor: null``.
IMAGE_LIST_DATASETS = ("imagenet", "ina2018", "places")

# Keys read only by a stage-2 script (classifier re-training): shift_bn and lr_factor by MiSLAS's
# train_stage2.py, train_stage2_instance by ARB-Loss's (entirely commented out there). Stage-1
# training cannot honour them.
STAGE2_KEYS = ("shift_bn", "lr_factor", "train_stage2_instance")

# The defaults, frozen: the type reference of every key (a key set to null keeps its type).
_DEFAULTS = get_cfg_defaults()
_DEFAULTS.freeze()
# Keys that accept null: those whose default is None, and those the published configs set null.
_NULLABLE = frozenset([k for k, v in _DEFAULTS.items() if v is None]
                      + ["gpu", "imb_factor", "alpha"])


def _decode(value: Any, default: Any) -> Any:
    """Decode a raw yaml / command-line value the way yacs does, keeping strings for str keys."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if (isinstance(default, str) and not isinstance(value, str) and value is not None
            and not isinstance(value, (list, dict))):
        value = str(value)
    return value


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    value = _decode(value, default)
    if value is None and default is not None and key not in _NULLABLE:
        raise ConfigError(f"{source}: key '{key}' cannot be null; it expects a "
                          f"{type(default).__name__} (default {default!r})")
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    kind = type(default).__name__
    raise ConfigError(f"{source}: key '{key}' expects a {kind} (default {default!r}), "
                      f"got {value!r}")


def _apply(cfg: CN, items: dict, source: str) -> None:
    for key, value in items.items():
        if not isinstance(key, str) or key not in cfg:
            close = difflib.get_close_matches(str(key), list(cfg.keys()), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown config key '{key}'{hint}; "
                              "accepted keys are listed in config/defaults.py")
        if isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' takes a single value, not a mapping")
        cfg[key] = _coerce(key, value, _DEFAULTS[key], source)


def _read_yaml(path: str) -> dict:
    if not path:
        raise ConfigError("no config file given: pass --cfg FILE (see config/ for examples)")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: yaml syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of 'key: value' lines at the top level")
    return raw


def validate(cfg: CN, stage: Optional[int] = 1) -> None:
    """Check values that do not depend on the data (class ranges are checked once counts
    exist), for a run of ``stage`` (1, 2, or None for evaluation)."""
    check_stage(cfg, stage)
    for key, choices in _CHOICES.items():
        if cfg[key] not in choices:
            raise ConfigError(f"key '{key}' is {cfg[key]!r}; accepted: {', '.join(choices)}")
    if cfg.imb_factor is None:
        if cfg.dataset not in IMAGE_LIST_DATASETS:
            raise ConfigError(f"key 'imb_factor' is null; dataset {cfg.dataset} needs a number "
                              "in (0, 1] (null only for the image-list data sets "
                              f"{', '.join(IMAGE_LIST_DATASETS)}, whose split is fixed)")
    elif not 0.0 < cfg.imb_factor <= 1.0:
        raise ConfigError(f"key 'imb_factor' is {cfg.imb_factor}; accepted: a number in (0, 1]")
    positive = ("batch_size", "num_epochs", "num_classes", "print_freq", "eval_freq")
    for key in positive:
        if cfg[key] < 1:
            raise ConfigError(f"key '{key}' is {cfg[key]}; accepted: an integer >= 1")
    for key in ("workers", "test_batch_size", "warmup_epochs", "grad_stats_freq", "nc_freq",
                "plot_freq", "digits_test_per_class"):
        if cfg[key] < 0:
            raise ConfigError(f"key '{key}' is {cfg[key]}; accepted: an integer >= 0")
    if not cfg.lr > 0:
        raise ConfigError(f"key 'lr' is {cfg.lr}; accepted: a number > 0")
    if cfg.alpha is None:
        if cfg.mixup:
            raise ConfigError("key 'alpha' is null but 'mixup' is True; accepted: a number >= 0 "
                              "(mixup draws lam from Beta(alpha, alpha)), or mixup False")
    elif cfg.alpha < 0:
        raise ConfigError(f"key 'alpha' is {cfg.alpha}; accepted: a number >= 0")
    if cfg.weight_decay < 0 or cfg.momentum < 0:
        raise ConfigError("keys 'weight_decay' and 'momentum' must be >= 0")
    for key in ("head_class_idx", "med_class_idx", "tail_class_idx"):
        v = cfg[key]
        if len(v) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise ConfigError(f"key '{key}' is {v}; accepted: [start, end] with two integers")
    if cfg.LAS and (cfg.smooth_head is None or cfg.smooth_tail is None):
        raise ConfigError("LAS: True needs 'smooth_head' and 'smooth_tail' (numbers in [0, 1))")


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


def mixup_enabled(cfg: CN) -> bool:
    """Whether training mixes batches: ``mixup`` on and ``alpha`` > 0.

    With ``alpha`` 0 the published ``mixup_data`` (MiSLAS methods.py) draws lam = 1, i.e. no
    mixing; ``alpha: null`` passes :func:`validate` only with mixup off.
    """
    return bool(cfg.mixup) and cfg.alpha is not None and cfg.alpha > 0


def load_config(path: str, opts: Sequence[str] = (), stage: Optional[int] = 1) -> CN:
    """Defaults, then the yaml file at ``path``, then ``KEY VALUE`` pairs from ``opts``,
    validated for ``stage`` (1: train_stage1.py, 2: train_stage2.py, None: eval.py)."""
    cfg = get_cfg_defaults()
    _apply(cfg, _read_yaml(path), path)
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides must come as KEY VALUE pairs; got an odd number: {opts}")
    _apply(cfg, dict(zip(opts[0::2], opts[1::2])), "command line")
    validate(cfg, stage)
    if not cfg.name:
        cfg.name = os.path.splitext(os.path.basename(path))[0]
    cfg.freeze()
    return cfg


def cfg_to_yaml(cfg: CN) -> str:
    """The config as a yaml string (stored in checkpoints)."""
    return cfg.dump()


def cfg_from_yaml_string(text: str) -> CN:
    """Rebuild a config from :func:`cfg_to_yaml` output, on top of today's defaults."""
    cfg = get_cfg_defaults()
    raw = yaml.safe_load(text) or {}
    _apply(cfg, {k: v for k, v in raw.items() if k in cfg}, "checkpoint config")
    return cfg

