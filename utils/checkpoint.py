"""Checkpoints: atomic saving, safe loading (tensors and plain types only), clear mismatch errors.

Layout (MiSLAS / ARB-Loss compatible): ``epoch``, ``state_dict_model``,
``state_dict_classifier`` (``state_dict_block`` for Places), ``best_acc1``, ``its_ece``;
ours add ``optimizer``, ``config`` (yaml string), ``metrics`` and ``rng`` for exact resume.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn as nn

from utils.errors import CheckpointError, first_line

log = logging.getLogger(__name__)


def _numpy_scalar_globals() -> List[Any]:
    """numpy globals a MiSLAS checkpoint uses for its float64 ``its_ece`` / ``best_acc1``.

    Rebuilding a numpy scalar or dtype from bytes runs no user code, so allowing them keeps
    ``weights_only=True`` safe.
    """
    names = []
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["scalar"])
            names.append(mod.scalar)
            break
        except (ImportError, AttributeError):
            continue
    names.append(np.dtype)
    for t in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, t):
            names.append(getattr(np.dtypes, t))
    return names


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    """Write ``state`` to a temporary file beside ``path``, fsync it, then rename it over
    ``path``: a kill at any moment leaves either the old or the new file, never a torn one.

    A failed write (disk full, read-only folder, quota) raises a one-line
    :class:`CheckpointError` naming the folder; the previous file at ``path`` is unchanged and
    the temporary file is removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(write_error(f"cannot save checkpoint {path}", folder, e)
                              + "; the previous checkpoint there is unchanged") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass


def write_error(what: str, folder: str, err: OSError) -> str:
    """``<what>: no space left on device in <folder>`` (the reason in words, lower case)."""
    reason = {errno.ENOSPC: "no space left on device",
              errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system"}.get(
        err.errno, (err.strerror or first_line(err)).lower())
    return f"{what}: {reason} in {folder}"


def load_checkpoint(path: str, legacy: bool = False) -> Dict[str, Any]:
    """Load a checkpoint dict onto the CPU with ``torch.load(weights_only=True)``.

    ``legacy=True`` (config key ``legacy_checkpoint``) falls back to a full unpickle for a
    trusted old checkpoint that holds other objects; never use it on a file you did not make.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not legacy:
            first = first_line(e, "refused")
            raise CheckpointError(
                f"{path}: refused to load -- it holds objects beyond tensors and plain types "
                f"({first[:200]}); nothing in it was run. If it is a trusted MiSLAS / ARB-Loss "
                "checkpoint, set legacy_checkpoint True") from None
        log.warning("legacy_checkpoint: fully unpickling %s (trusted files only)", path)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any failure of an untrusted format
            raise CheckpointError(f"{path}: not a readable checkpoint ({e2})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a "
                              f"torch file: {first_line(e)[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict_model" not in ckpt:
        raise CheckpointError(f"{path}: not an ARB-Loss / MiSLAS checkpoint (no "
                              "'state_dict_model' entry)")
    return ckpt


def strip_module_prefix(state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Remove the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state.items())


def _mismatch(module: nn.Module, state: Dict[str, torch.Tensor]) -> str:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatch (checkpoint vs model)", shapes)):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            parts.append(f"{label}: {', '.join(items[:4])}{more}")
    return "; ".join(parts)


def first_non_finite(state: Dict[str, Any]) -> str:
    """The name of the first floating-point tensor of ``state`` holding NaN or Inf, with
    ``(+N more)`` when there are others; '' when every tensor is finite."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if not bad:
        return ""
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"{bad[0]}{more}"


def load_network_state(net: nn.Module, ckpt: Dict[str, Any], path: str = "checkpoint") -> None:
    """Load every part of an :class:`models.LTNet` (model, block, classifier) from ``ckpt``,
    with or without ``module.`` prefixes; one clear error names what does not match, or the
    first tensor holding NaN / Inf (weights of a diverged run, unusable for training or
    evaluation). Nothing is loaded unless every part fits."""
    states = {}
    for name, module in net.parts().items():
        key = f"state_dict_{name}"
        if key not in ckpt:
            raise CheckpointError(f"{path}: has no '{key}' entry; it was saved for another "
                                  "model or recipe")
        state = strip_module_prefix(ckpt[key])
        problem = _mismatch(module, state)
        if problem:
            raise CheckpointError(f"{path}: '{key}' does not fit this model "
                                  f"(backbone / num_classes of the config?): {problem}")
        bad = first_non_finite(state)
        if bad:
            raise CheckpointError(f"{path}: non-finite weights (NaN / Inf) in '{key}' tensor "
                                  f"{bad}; the checkpoint is unusable (saved from a diverged "
                                  "run?)")
        states[name] = state
    for name, module in net.parts().items():
        module.load_state_dict(states[name])


def network_state(net: nn.Module) -> Dict[str, Any]:
    """``state_dict_<part>`` entries of an :class:`models.LTNet` (no ``module.`` prefixes)."""
    return {f"state_dict_{name}": m.state_dict() for name, m in net.parts().items()}
