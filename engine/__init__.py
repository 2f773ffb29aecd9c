"""The training engine: :class:`Trainer`, its hooks, state and checkpointing.

Scripts import from here; the engine imports analysis, methods, models, datasets, config and
utils (never a script).
"""
from engine.hooks import HookBase, Step
from engine.runtime import autocast_factory, distributed_session, seed_everything
from engine.state import CutEpoch, RandomStreams, StopFlag, TrainState
from engine.trainer import Trainer

__all__ = ["Trainer", "HookBase", "Step", "TrainState", "CutEpoch", "RandomStreams", "StopFlag",
           "distributed_session", "autocast_factory", "seed_everything"]
