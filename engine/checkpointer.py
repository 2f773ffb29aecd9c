"""Saving and restoring everything a run needs to continue exactly (detectron2's
``Checkpointer(model, **checkpointables)`` idea).

A checkpoint is one dict. It keeps the MiSLAS / ARB-Loss keys (``state_dict_model``,
``state_dict_classifier``, ``state_dict_block``, ``epoch``, ``best_acc1``, ``its_ece``), so
the published ``eval.py`` can read ours and we can read theirs, and adds:

* ``version``, ``config`` (yaml string), ``metrics``, ``num_classes``, ``backbone``,
  ``world_size``;
* the :class:`~engine.state.TrainState` fields at the top level (``iteration``,
  ``best_epoch``);
* one entry per *shared* checkpointable (``optimizer``, ``scaler``): rank 0's state;
* one list per *per-rank* checkpointable (``rng``, ``partial``): every rank's state, in rank
  order, gathered in one collective.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from config import cfg_from_yaml_string
from config.resume import config_differences
from utils import comm
from utils.checkpoint import load_network_state, network_state, save_checkpoint
from utils.errors import CheckpointError, ConfigError, one_line
from utils.rundir import find_latest_checkpoint, run_folder_of_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2


class Checkpointer:
    """Saves and restores a network (an :class:`models.LTNet`) and named checkpointables.

    Args:
        net: the plain network (not the DDP / compiled wrapper).
        state: the :class:`~engine.state.TrainState` (its fields go to the top level).
        per_rank: name -> object whose state differs per rank.
        shared: name -> object whose state is the same on every rank (None values skipped).
    """

    def __init__(self, net, state, per_rank: Mapping[str, Any],
                 shared: Mapping[str, Any]):
        self.net = net
        self.state = state
        self.per_rank = dict(per_rank)
        self.shared = {k: v for k, v in shared.items() if v is not None}

    def save(self, paths: Iterable[str], meta: Dict[str, Any]) -> None:
        """Write the checkpoint to every path in ``paths`` (rank 0, atomically); ``meta``
        adds top-level entries (config, metrics...). Every rank must call it; a failed write
        (disk full) raises the same :class:`CheckpointError` on every rank, so no rank is
        left waiting for rank 0 in a later collective."""
        gathered = comm.all_gather_object({k: v.state_dict() for k, v in self.per_rank.items()})
        error = None
        if comm.is_main_process():
            ckpt = network_state(self.net)
            ckpt.update(self.state.state_dict())
            ckpt.update({k: [g[k] for g in gathered] for k in self.per_rank})
            ckpt.update({k: v.state_dict() for k, v in self.shared.items()})
            ckpt.update(meta)
            ckpt["version"] = CHECKPOINT_VERSION
            ckpt["world_size"] = comm.get_world_size()
            try:
                for path in paths:
                    save_checkpoint(ckpt, path)
            except CheckpointError as e:
                error = e
        error = comm.broadcast_object(error)  # also the barrier: rank 0 has written
        if error is not None:
            raise error

    def restore(self, ckpt: Dict[str, Any], path: str) -> None:
        """Load network, state and checkpointables from ``ckpt`` (read from ``path``).

        Per-rank entries are restored when the checkpoint has one per rank of this run; with
        another number of processes the random streams restart (a warning) and a cut epoch's
        statistics start empty (its train loss then covers the remaining steps).
        """
        load_network_state(self.net, ckpt, path)
        self.state.load_state_dict(ckpt)
        other_world = False
        for name, obj in self.per_rank.items():
            entries = ckpt.get(name)
            if entries is None:
                continue
            if not (isinstance(entries, list) and len(entries) == comm.get_world_size()):
                other_world = True
            entry = own_rank_entry(entries)
            if entry:
                obj.load_state_dict(entry)
        if other_world:
            log.warning("resuming with a different number of processes: random streams "
                        "restart")
        for name, obj in self.shared.items():
            if name not in ckpt:
                continue
            try:
                obj.load_state_dict(ckpt[name])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{path}: {name} state does not fit this model "
                                      f"({e})") from None

    def restore_weights(self, ckpt: Dict[str, Any], path: str) -> List[str]:
        """Start from another run's checkpoint: the network, and each shared checkpointable
        (optimiser, loss scaler) whose state fits; returns the names loaded. An optimiser
        keeps its own hyper-parameters (this config's momentum, weight decay...): only its
        state (momentum buffers) is taken. The training state and per-rank entries are not
        read."""
        load_network_state(self.net, ckpt, path)
        loaded = []
        for name, obj in self.shared.items():
            if name not in ckpt:
                continue
            if _load_fitting_state(obj, ckpt[name]):
                loaded.append(name)
            else:
                log.warning("%s: its %s state does not fit this run; %s starts afresh", path,
                            name, name)
        return loaded


def _load_fitting_state(obj: Any, state: Any) -> bool:
    """Load ``state`` into ``obj`` if it fits (for an optimiser: the same parameter groups and
    shapes; its hyper-parameters are kept); False, with ``obj`` unchanged, otherwise."""
    if not isinstance(obj, torch.optim.Optimizer):
        try:
            obj.load_state_dict(state)
            return True
        except (ValueError, KeyError, TypeError, RuntimeError):
            return False
    before = copy.deepcopy(obj.state_dict())
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in obj.param_groups]
    try:
        obj.load_state_dict(state)
        fits = all(v.shape == p.shape for g in obj.param_groups for p in g["params"]
                   for v in obj.state.get(p, {}).values() if torch.is_tensor(v) and v.dim())
    except (ValueError, KeyError, TypeError, RuntimeError):
        fits = False
    if not fits:
        obj.load_state_dict(before)
        return False
    for g, h in zip(obj.param_groups, hyper):
        g.update(h)
    return True


def own_rank_entry(entries: Any) -> Dict[str, Any]:
    """This rank's entry of a checkpoint's per-rank list ({} when the list is missing or was
    written by another number of processes, so that ranks never mix)."""
    if isinstance(entries, list) and len(entries) == comm.get_world_size():
        return dict(entries[comm.get_rank()] or {})
    return {}


# ----------------------------------------------------------------------------- resume policy
def resume_path(cfg) -> str:
    """The checkpoint a run of ``cfg`` resumes from ('' for a fresh run), before anything is
    created: ``resume`` as given (a missing file is a :class:`CheckpointError`), or for
    ``auto`` the newest ``current.pth.tar`` of runs of this name under ``output_dir`` (the
    same answer on every rank)."""
    resume = cfg.resume
    if resume == "auto":
        resume = comm.broadcast_object(
            find_latest_checkpoint(cfg.output_dir, cfg.name, cfg.model_dir))
        if not resume:
            log.info("resume auto: no earlier run of '%s' under %s; starting fresh", cfg.name,
                     cfg.output_dir)
    elif resume and not os.path.isfile(resume):
        raise CheckpointError(f"key 'resume': checkpoint not found: {resume}")
    return resume


def resume_checkpoint(checkpointer: Checkpointer, cfg, stage: int, ckpt: dict,
                      path: str) -> Tuple[Optional[str], str]:
    """Restore the checkpoint ``ckpt`` (read from ``path``) into a run of ``cfg`` at ``stage``;
    returns the run folder to continue in (None: a new folder) and a note to log ('' for an
    exact resume in the checkpoint's own folder).

    * The ``current.pth.tar`` of a run of this config (the same up to
      :data:`config.resume.RESUME_SAFE_KEYS`): exact resume of everything, in its run folder.
      Another checkpoint of this config (``model_best``, a copy elsewhere): exact resume in a
      new folder (continuing in the run's folder would rewind its history).
    * A checkpoint of ours with another config: :func:`start_from_checkpoint` in a new folder.
    * A checkpoint without a config (MiSLAS / ARB-Loss): weights, epoch and best Acc@1
      (:meth:`Checkpointer.restore`), in a new folder.

    The checkpoint's folder is written only in the first case. A network that does not fit,
    or a checkpoint of a later stage, raises :class:`CheckpointError` (nothing is created).
    """
    state = checkpointer.state
    held = int(ckpt.get("stage", 1))
    if held > stage:
        raise CheckpointError(f"{path} is a stage-{held} checkpoint; continue it with "
                              f"train_stage{held}.py (train_stage{stage}.py resumes "
                              f"stage-{stage} checkpoints)")
    saved = ckpt.get("config")
    if not isinstance(saved, str):
        checkpointer.restore(ckpt, path)
        return None, (f"resumed from {path} at epoch {state.epoch}: a checkpoint without a "
                      "config (MiSLAS / ARB-Loss), continued in a new run folder")
    try:
        differs = config_differences(cfg_from_yaml_string(saved), cfg)
    except ConfigError as e:
        differs = [f"(its stored config is not readable: {one_line(str(e))})"]
    origin = run_folder_of_checkpoint(path, cfg.name, cfg.log_dir, cfg.model_dir)
    where = origin or os.path.dirname(os.path.abspath(path))
    if not differs:
        checkpointer.restore(ckpt, path)
        if origin is None or os.path.basename(path) == "current.pth.tar":
            return origin, ""
        return None, (f"resumed from {path} at epoch {state.epoch}: not the newest checkpoint "
                      "of its run (current.pth.tar), so the run continues in a new run folder; "
                      f"its folder {where} is left untouched")
    start_from_checkpoint(checkpointer, ckpt, path)
    shown = ", ".join(differs[:6]) + (f" (+{len(differs) - 6} more)" if len(differs) > 6
                                      else "")
    return None, (f"{path} is a checkpoint of another config (differs in: {shown}): starting "
                  f"a new run from its weights at epoch {state.epoch}; its folder {where} is "
                  "left untouched")


def start_from_checkpoint(checkpointer: Checkpointer, ckpt: dict, path: str) -> None:
    """Start a new run (in a new folder) from a checkpoint of another config: its network
    weights, the optimiser / loss-scaler state where it fits (momentum buffers; the
    hyper-parameters stay this config's), and its epoch counter (training goes on from the
    epoch after its last complete one). The random streams start from this config's seed and
    the best Acc@1 from 0 (the new folder's model_best is one of its own). (Stage 2 starts
    from a stage-1 checkpoint without this: see
    :meth:`engine.stage2.Stage2Trainer.resolve_resume`.)"""
    checkpointer.restore_weights(ckpt, path)
    checkpointer.state.epoch = int(ckpt.get("epoch", 0))
