"""Hooks: what happens around the training loop (detectron2's ``HookBase`` idea).

The trainer calls, on every rank and in the order the hooks were registered,
``before_train()``, then per epoch ``before_epoch()``, ``after_step(step)`` after each
optimiser step, ``after_epoch()``; finally ``after_train()``. ``after_epoch`` hooks share the
trainer's ``row`` (the metrics row of the epoch being finished) and ``metrics`` (the test
metrics, None when the epoch was not evaluated).

The default hooks of a training run, in order: :class:`GradMonitorHook` (when
``grad_stats_freq`` > 0), :class:`EvalHook`, :class:`AnalysisHook`, :class:`MetricsHook`,
:class:`CheckpointHook`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from analysis.grad_monitor import GradBalanceMonitor
from analysis.neural_collapse import nc_analysis
from analysis.report import is_due, log_epoch_figures
from engine.evaluation import training_features
from utils import comm

if TYPE_CHECKING:  # pragma: no cover
    from engine.trainer import Trainer

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


class HookBase:
    """A hook does nothing by default; override what you need. ``self.trainer`` is set when
    the hook is registered."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def wants_features(self, global_step: int) -> bool:
        """Whether the next step should also return the classifier's input features."""
        return False

    def after_step(self, step: Step) -> None:
        pass

    def after_epoch(self) -> None:
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

    def after_epoch(self) -> None:
        self.monitor.log(self.trainer.writer, self.trainer.state.epoch)
        self.trainer.row.update(self.monitor.summary())


class EvalHook(HookBase):
    """Test-set evaluation every ``eval_freq`` epochs and at the last; keeps the best Acc@1
    (and the ECE of that model, MiSLAS's ``its_ece``)."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.state.epoch % t.cfg.eval_freq and not t.last_epoch:
            return
        m = t.evaluate()
        t.metrics = m
        t.is_best = m["acc1"] > t.state.best_acc1
        if t.is_best:
            t.state.best_acc1, t.state.its_ece = m["acc1"], m["ece"]
            t.state.best_epoch = t.state.epoch
        t.row.update({k: m[k] for k in ("acc1", "acc5", "many", "medium", "few", "ece", "mce")})
        t.row["best_acc1"] = t.state.best_acc1


class AnalysisHook(HookBase):
    """After an evaluated epoch: classifier-norm histogram and (every ``plot_freq`` epochs)
    figures in TensorBoard; every ``nc_freq`` epochs the neural-collapse metrics of the
    training features (a pass over the training set with test transforms) into the row.
    Periodic tasks also run at the last epoch when enabled."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.metrics is None:
            return
        epoch, cfg = t.state.epoch, t.cfg
        if t.writer is not None:
            log_epoch_figures(t.writer, epoch, t.net, t.data.cls_num_list, t.ranges, t.metrics,
                              figures=is_due(cfg.plot_freq, epoch, t.last_epoch))
        if not is_due(cfg.nc_freq, epoch, t.last_epoch):
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
        t.row.update(comm.broadcast_object(out))  # only rank 0 computes


class MetricsHook(HookBase):
    """Appends the epoch's row to ``metrics.jsonl`` and TensorBoard (rank 0) and logs the
    test metrics."""

    def before_epoch(self) -> None:
        self._t0 = time.time()

    def after_epoch(self) -> None:
        t = self.trainer
        t.row["seconds"] = time.time() - self._t0
        t.run_dir.record(t.row, t.writer)
        m = t.metrics
        if m is not None:
            comm.on_main(log.info, "Epoch %d: Acc@1 %.2f Acc@5 %.2f many %.2f medium %.2f few "
                         "%.2f ECE %.2f (best Acc@1 %.2f at epoch %d)", t.state.epoch,
                         m["acc1"], m["acc5"], m["many"], m["medium"], m["few"], m["ece"],
                         t.state.best_acc1, t.state.best_epoch)


class CheckpointHook(HookBase):
    """Saves ``current.pth.tar`` after every epoch (and ``model_best.pth.tar`` when the
    epoch's model is the best so far), atomically."""

    def after_epoch(self) -> None:
        t = self.trainer
        t.save(best=t.is_best)
