"""Hooks: what happens around the training loop (detectron2's ``HookBase`` idea).

The trainer calls, on every rank and in the order the hooks were registered,
``before_train()``, then per epoch ``before_epoch()``, ``after_step(step)`` after each
optimiser step, ``after_epoch(record)``; finally ``after_train()``. The hooks of one epoch
publish to each other through its :class:`EpochRecord` (the metrics row, the test metrics,
whether the model is the best so far), never through fields of the trainer.

The default hooks of a training run, in the order :data:`DEFAULT_HOOKS` declares (each reads
what the ones before it published): :class:`GradMonitorHook` (when ``grad_stats_freq`` > 0),
:class:`EvalHook`, :class:`AnalysisHook`, :class:`MetricsHook`, :class:`CheckpointHook`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Type

import torch

from analysis.grad_monitor import GradBalanceMonitor
from analysis.neural_collapse import nc_analysis
from analysis.report import is_due, log_epoch_figures
from engine.evaluation import training_features
from utils import comm

log = logging.getLogger(__name__)


@dataclass
class Step:
    """What one training step saw, for :meth:`HookBase.after_step`.

    ``logits`` and ``features`` (the classifier's fc input, only when a hook asked for them
    through :meth:`HookBase.wants_features`) are detached; ``y_b`` is None without mixing.
    """

    epoch: int  # 0-based
    iteration: int  # 0-based, inside the epoch
    global_step: int
    logits: torch.Tensor
    features: Optional[torch.Tensor]
    y_a: torch.Tensor
    y_b: Optional[torch.Tensor]
    lam: float
    class_cnt: Optional[torch.Tensor]
    loss: Optional[torch.Tensor] = None  # the step's loss (detached, on the device)
    y_true: Optional[torch.Tensor] = None  # the batch's labels before mixing


@dataclass
class EpochRecord:
    """What the hooks of one finished epoch publish to each other (in hook order).

    ``row`` is the epoch's metrics.jsonl row (the trainer starts it with epoch, lr, train loss
    and accuracy; hooks add to it); ``metrics`` the test metrics (set by :class:`EvalHook`,
    None when the epoch was not evaluated); ``is_best`` whether they are the best so far;
    ``last`` whether this is the run's last epoch."""

    epoch: int  # epochs done (1-based, as in the logs)
    row: Dict[str, Any]
    last: bool
    metrics: Optional[dict] = None
    is_best: bool = False


class HookBase:
    """A hook does nothing by default; override what you need. ``self.trainer`` (the
    :class:`engine.trainer.Trainer` running it) is set when the hook is registered."""

    trainer: Any

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def wants_features(self, global_step: int) -> bool:
        """Whether the next step should also return the classifier's input features."""
        return False

    def after_step(self, step: Step) -> None:
        pass

    def after_epoch(self, record: EpochRecord) -> None:
        pass

    def after_train(self) -> None:
        pass


class GradMonitorHook(HookBase):
    """The ARB-Loss paper's attraction / repulsion diagnostic every ``freq`` steps
    (:class:`analysis.grad_monitor.GradBalanceMonitor`): TensorBoard and the metrics row."""

    def __init__(self, freq: int):
        self.freq = freq
        self.monitor: Optional[GradBalanceMonitor] = None

    def before_train(self) -> None:
        t = self.trainer
        self.monitor = GradBalanceMonitor(t.cfg.num_classes, self.freq, t.ranges)

    def wants_features(self, global_step: int) -> bool:
        return self.monitor.due(global_step)

    def after_step(self, step: Step) -> None:
        if step.features is not None:
            self.monitor.update(step.logits.float(), step.features.float(),
                                self.trainer.criterion, step.y_a,
                                step.y_b if step.lam != 1.0 else None, step.lam, step.class_cnt)

    def after_epoch(self, record: EpochRecord) -> None:
        self.monitor.log(self.trainer.writer, record.epoch)
        record.row.update(self.monitor.summary())


class EvalHook(HookBase):
    """Test-set evaluation every ``eval_freq`` epochs and at the last; keeps the best Acc@1
    (and the ECE of that model, MiSLAS's ``its_ece``)."""

    def after_epoch(self, record: EpochRecord) -> None:
        t = self.trainer
        if record.epoch % t.cfg.eval_freq and not record.last:
            return
        m = t.evaluate()
        record.metrics = m
        record.is_best = m["acc1"] > t.state.best_acc1
        if record.is_best:
            t.state.best_acc1, t.state.its_ece = m["acc1"], m["ece"]
            t.state.best_epoch = record.epoch
        record.row.update({k: m[k] for k in ("acc1", "acc5", "many", "medium", "few", "ece",
                                             "mce")})
        record.row["best_acc1"] = t.state.best_acc1


class AnalysisHook(HookBase):
    """After an evaluated epoch: classifier-norm histogram and (every ``plot_freq`` epochs)
    figures in TensorBoard; every ``nc_freq`` epochs the neural-collapse metrics of the
    training features (a pass over the training set with test transforms) into the row.
    Periodic tasks also run at the last epoch when enabled."""

    def after_epoch(self, record: EpochRecord) -> None:
        t = self.trainer
        if record.metrics is None:
            return
        epoch, cfg = record.epoch, t.cfg
        if t.writer is not None:
            log_epoch_figures(t.writer, epoch, t.net, t.data.cls_num_list, t.ranges,
                              record.metrics, figures=is_due(cfg.plot_freq, epoch, record.last))
        if not is_due(cfg.nc_freq, epoch, record.last):
            return
        got = training_features(cfg, t.net, t.data, t.device, t.dist.rank, t.dist.world_size,
                                t.autocast)
        if got is None:
            return
        feats, labels = got
        out: Dict[str, Any] = {}
        if comm.is_main_process():
            out, _ = nc_analysis(feats, labels, t.net.classifier.class_weights(), t.ranges,
                                 device=t.device)
        record.row.update(comm.broadcast_object(out))  # only rank 0 computes


class MetricsHook(HookBase):
    """Appends the epoch's row to ``metrics.jsonl`` and TensorBoard (rank 0) and logs the
    test metrics."""

    def before_epoch(self) -> None:
        self._t0 = time.time()

    def after_epoch(self, record: EpochRecord) -> None:
        t = self.trainer
        record.row["seconds"] = time.time() - self._t0
        t.run_dir.record(record.row, t.writer)
        m = record.metrics
        if m is not None:
            comm.on_main(log.info, "Epoch %d: Acc@1 %.2f Acc@5 %.2f many %.2f medium %.2f few "
                         "%.2f ECE %.2f (best Acc@1 %.2f at epoch %d)", record.epoch,
                         m["acc1"], m["acc5"], m["many"], m["medium"], m["few"], m["ece"],
                         t.state.best_acc1, t.state.best_epoch)


class CheckpointHook(HookBase):
    """Saves ``current.pth.tar`` after every epoch (and ``model_best.pth.tar`` when the
    epoch's model is the best so far), atomically."""

    def after_epoch(self, record: EpochRecord) -> None:
        self.trainer.save(best=record.is_best, metrics=record.metrics)


# The default hooks, in the order they run: evaluation publishes the metrics the analysis,
# the metrics row and the checkpoint (model_best) read; the gradient monitor adds its summary
# to the row first. Trainer.default_hooks builds them in this order (tested).
DEFAULT_HOOKS: Tuple[Type[HookBase], ...] = (GradMonitorHook, EvalHook, AnalysisHook,
                                             MetricsHook, CheckpointHook)
