"""The training engine: a :class:`Trainer` that owns everything a run needs and calls hooks.

    trainer = Trainer(cfg, dist_info)     # data, network, loss (cheap: nothing on disk yet)
    print(trainer.summary())              # what --dry-run prints
    exit_code = trainer.train()           # run folder, resume, epochs, hooks, checkpoints

One epoch is :meth:`Trainer.train_one_epoch` (the optimiser loop) followed by the hooks'
``after_epoch`` (evaluation, analysis, metrics row, checkpoint; see :mod:`engine.hooks`).
Subclasses change one part by overriding one method (``build_network``,
``build_optimizer``, ``set_lr``, ``train_mode``...).
"""
from __future__ import annotations

import functools
import logging
import shlex
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from analysis.metrics import class_ranges
from config import cfg_to_yaml
from datasets import DataBundle, build_data
from datasets.common import check_num_classes
from datasets.loader import eval_loader
from datasets.workers import shutdown_workers
from engine.checkpointer import Checkpointer, resume_checkpoint, resume_path
from engine.evaluation import PostHoc, evaluate
from engine.hooks import EpochRecord, HookBase, Step
from engine.parts import RunParts
from engine.runtime import autocast_factory, grad_scaler, seed_everything
from engine.state import CutEpoch, RandomStreams, StopFlag, TrainState
from methods import mixup_criterion
from methods.mixup import batch_mixing
from utils import comm, slurm
from utils.checkpoint import load_checkpoint
from utils.errors import (
    EXIT_NONFINITE,
    ConfigError,
    Interrupted,
    NonFiniteLoss,
    UserError,
    one_line,
)
from utils.logger import add_log_file, file_handler, format_seconds
from utils.rundir import (
    RunDir,
)

log = logging.getLogger("train")


def forward_and_loss(train_net: nn.Module, criterion, autocast, x: torch.Tensor,
                     y_a: torch.Tensor, y_b: torch.Tensor, lam, cnt: Optional[torch.Tensor],
                     want_features: bool):
    """Forward (the classifier's input too when ``want_features``) and the mixed loss: the
    part of a training step that ``compile_mode`` compiles. Returns (loss, logits, features)."""
    feats = None
    with autocast():
        if want_features:
            out, feats = train_net(x, return_features=True)
        else:
            out = train_net(x)
    loss = mixup_criterion(criterion, out.float(), y_a, y_b, lam, cnt, feats)
    return loss, out, feats


def step_functions(train_net: nn.Module, criterion, autocast, optimizer, compile_mode: str):
    """``(forward_loss, optimizer_step)`` of a training step: :func:`forward_and_loss` over
    these parts and the optimiser's ``step``; with a ``compile_mode`` both compiled, the first
    as one graph per input signature (the full batch, the last partial one; the backward by
    AOT autograd), the second as a few fused kernels (its learning rates are tensors, see
    :meth:`engine.parts.RunParts.lr_tensor_device`)."""
    step = functools.partial(forward_and_loss, train_net, criterion, autocast)
    if compile_mode == "none":
        return step, optimizer.step
    return (torch.compile(step, mode=compile_mode, dynamic=False),
            torch.compile(optimizer.step))


class Trainer(RunParts):
    """Stage-1 training (MiSLAS / ARB-Loss recipe) of the network, loss and data named by
    ``cfg``, on the device and process group of ``dist``.

    Owns: ``data``, ``ranges`` (many / medium / few), ``net`` (the plain network) and
    ``train_net`` (its DDP / compiled wrapper), ``criterion``, ``optimizer``, ``scaler``,
    ``streams`` (random streams of batch mixing), ``state`` (:class:`TrainState`), ``cut`` (the
    statistics of an interrupted epoch), ``run_dir``, ``writer`` (TensorBoard, rank 0),
    the loaders and the hooks. ``hooks`` given here run after the default ones;
    ``data`` replaces the config's data set (benchmarks, tests); ``dry_run`` builds for
    :meth:`summary` only (no pretrained weights are fetched).
    """

    STAGE = 1  # saved in checkpoints ('stage'), so stage 2 tells its own from stage 1's

    # set by setup() for the length of train()
    run_dir: Optional[RunDir] = None
    log_file: Optional[logging.Handler] = None  # the run's text log (rank 0)
    position: Optional["_Position"] = None  # where the loop is, for the log of an error

    def __init__(self, cfg, dist: comm.DistInfo, hooks: Sequence[HookBase] = (),
                 data: Optional[DataBundle] = None, dry_run: bool = False):
        self.cfg = cfg
        self.dry_run = dry_run  # build for a summary only: no weights are downloaded
        self.dist = dist
        self.device = dist.device
        seed_everything(cfg.seed, cfg.deterministic, self.device)
        self.data = data if data is not None else build_data(cfg)
        check_num_classes(cfg.num_classes, len(self.data.cls_num_list), "the data")
        self.ranges = class_ranges(cfg, self.data.cls_num_list)
        self.net = self.build_network()
        self.criterion = self.build_criterion()
        self.posthoc = PostHoc.from_config(cfg, self.data.cls_num_list)
        self.autocast = autocast_factory(cfg, self.device)
        self.mix = batch_mixing(cfg)  # mixup, CutMix or None
        self.extra_hooks: List[HookBase] = list(hooks)
        self.hooks: List[HookBase] = []
        self.state = TrainState()
        self.cut = CutEpoch()
        self.streams = RandomStreams(cfg.seed, dist.rank)
        self.writer = None  # TensorBoard, rank 0 of a training run
        self.epoch_metrics: Optional[dict] = None  # the last finished epoch's test metrics

    # ------------------------------------------------------------------ set-up
    def resolve_resume(self) -> str:
        """The checkpoint to resume from ('' for a fresh run), before anything is created
        (:func:`engine.checkpointer.resume_path`)."""
        return resume_path(self.cfg)

    def setup(self) -> None:
        """Everything :meth:`train` needs beyond what ``__init__`` built: :meth:`prepare`,
        then the resume (:meth:`resume_from`), the run folder (locked) and the hooks.

        Nothing is written before the checkpoint has been read and fits the network, and the
        folder is free (not locked by another process) and writable."""
        resume = self.resolve_resume()
        self.prepare()
        continue_in, note = None, ""
        if resume:
            ckpt = load_checkpoint(resume, legacy=self.cfg.legacy_checkpoint)
            continue_in, note = self.resume_from(ckpt, resume)
            if continue_in is None and self.state.epoch >= self.cfg.num_epochs:
                raise ConfigError(f"key 'num_epochs' is {self.cfg.num_epochs} but {resume} is "
                                  f"at epoch {self.state.epoch} already: a new run from it "
                                  "would train nothing; set num_epochs above "
                                  f"{self.state.epoch}")
        cfg = self.cfg
        self.run_dir = RunDir.for_training(cfg.output_dir, cfg.name, cfg.log_dir, cfg.model_dir,
                                           continue_in, self.state.epoch)
        if comm.is_main_process():
            self.log_file = add_log_file(self.run_dir.log_file)
            log.info("run folder: %s", self.run_dir.path)
            d = self.dist  # said before the log file opened; the log keeps it too
            log.info("device %s, %s", d.device, f"{d.world_size} processes, backend {d.backend}"
                     if d.distributed else "one process")
            if note:
                log.warning("%s; run folder %s", note, self.run_dir.path)
            elif resume:
                log.info("resumed from %s at epoch %d%s", resume, self.state.epoch,
                         f", iteration {self.state.iteration}" if self.state.iteration else "")
            log.info("config:\n%s", cfg_to_yaml(self.cfg))
            self.run_dir.write_config(cfg_to_yaml(self.cfg))
            log.info("%s", self.summary().replace("\n", "; "))
            self.writer = self.run_dir.tensorboard()
        self.position = _Position()
        for h in [self.position] + self.default_hooks() + self.extra_hooks:
            h.trainer = self
            self.hooks.append(h)

    def resume_from(self, ckpt: dict, path: str) -> Tuple[Optional[str], str]:
        """Restore ``ckpt`` (read from ``path``) by the resume policy of
        :func:`engine.checkpointer.resume_checkpoint`; returns the run folder to continue in
        (None: a new folder) and a note to log."""
        return resume_checkpoint(self.checkpointer, self.cfg, self.STAGE, ckpt, path)

    def prepare(self) -> None:
        """The network on its device (wrapped for DDP / compile), loss, optimiser, scaler,
        checkpointer, loaders and stop flag: what :meth:`train_one_epoch` needs. Creates
        nothing on disk."""
        cfg, device, net = self.cfg, self.device, self.net
        net.to(device)
        if cfg.channels_last and device.type == "cuda":
            net.to(memory_format=torch.channels_last)
        self.criterion.to(device)
        self.optimizer = self.build_optimizer()
        self.scaler = grad_scaler(cfg, device)
        self.checkpointer = Checkpointer(
            net, self.state, per_rank={"rng": self.streams, "partial": self.cut},
            shared={"optimizer": self.optimizer, "scaler": self.scaler})
        self.train_net: nn.Module = net
        if self.dist.distributed:
            if cfg.sync_bn:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            self.train_net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            self.train_net = torch.compile(self.train_net)
        self.forward_loss, self.optimizer_step = step_functions(
            self.train_net, self.criterion, self.autocast, self.optimizer, cfg.compile_mode)
        rank, world = self.dist.rank, self.dist.world_size
        self.train_loader = self.build_train_loader()
        self.test_loader = eval_loader(cfg, self.data, "test", device, rank, world)
        self.stop = StopFlag(comm.host_group())

    # ------------------------------------------------------------------ loop
    def train(self) -> int:
        """Train from the current state to ``num_epochs``; returns the exit status (0 done,
        128 + N stopped by signal N after saving, 3 non-finite loss). A user error (bad
        checkpoint, unreadable image, disk full...) is raised as is, after being written to
        the run's log with where it happened; every exit path stops the loader workers and
        releases the run folder (:meth:`close`)."""
        failed = False
        try:
            self.setup()
            self.stop.install()
            for h in self.hooks:
                h.before_train()
            for epoch in range(self.state.epoch, self.cfg.num_epochs):
                self.run_epoch(epoch)
            for h in self.hooks:
                h.after_train()
            comm.on_main(log.info, "done: best Acc@1 %.2f (ECE %.2f) at epoch %d; run folder "
                         "%s", self.state.best_acc1, self.state.its_ece, self.state.best_epoch,
                         self.run_dir.path)
            return 0
        except Interrupted:
            self.save(best=False, metrics=self.epoch_metrics)
            if self.stop.preempted:  # SLURM's notice: every rank saved, rank 0 requeues
                what = comm.on_main(slurm.requeue)
                comm.on_main(log.warning, "pre-empted at epoch %d, step %d: checkpoint saved, "
                             "%s", self.state.epoch + 1, self.state.iteration, what)
            comm.on_main(log.warning, "interrupted by signal %d at epoch %d, iteration %d; "
                         "resume with: %s", self.stop.signum, self.state.epoch + 1,
                         self.state.iteration, self.resume_command())
            return 128 + self.stop.signum
        except NonFiniteLoss as e:
            comm.on_main(log.error, "%s", e)
            return EXIT_NONFINITE
        except UserError as e:
            where = self.position.describe() if self.position is not None else "at start-up"
            self._log_to_file(f"stopped {where}: {one_line(str(e))}")
            failed = True
            raise
        finally:
            self.close()  # first: a SIGTERM meanwhile only sets the stop flag
            if getattr(self, "stop", None) is not None:
                self.stop.restore()
            if failed and self.run_dir is not None and comm.is_main_process():
                self.run_dir.discard_if_untrained()

    def resume_command(self) -> str:
        """The command that continues this run exactly: its own config (``config.yaml`` in the
        run folder: the yaml and every override it ran with) and its checkpoint."""
        return (f"python train_stage{self.STAGE}.py --cfg {shlex.quote(self.run_dir.config_file)}"
                f" resume {shlex.quote(self.run_dir.current)}")

    def _log_to_file(self, message: str) -> None:
        """An ERROR record of ``message`` in the run's text log (:func:`log_error_to_run`)."""
        log_error_to_run(message, self.log_file, self.dist.rank, self.run_dir)

    def close(self) -> None:
        """Stop the loaders' worker processes, close TensorBoard and the run's text log, and
        release the run folder's lock (every exit path; safe to call twice)."""
        for loader in (getattr(self, "train_loader", None), getattr(self, "test_loader", None)):
            shutdown_workers(loader)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.log_file is not None:
            logging.getLogger().removeHandler(self.log_file)
            self.log_file.close()
            self.log_file = None
        if getattr(self, "run_dir", None) is not None:
            self.run_dir.release()

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch, then let the hooks evaluate, analyse, record and save."""
        for h in self.hooks:
            h.before_epoch()
        lr = self.set_lr(epoch)
        stats = self.train_one_epoch(epoch)
        comm.broadcast_buffers(self.net)  # evaluate and save rank 0's BatchNorm statistics
        self.state.epoch = epoch + 1
        record = EpochRecord(self.state.epoch, {"epoch": self.state.epoch, "lr": lr, **stats},
                             last=self.state.epoch == self.cfg.num_epochs)
        for h in self.hooks:
            h.after_epoch(record)
        self.epoch_metrics = record.metrics  # what a checkpoint saved mid-next-epoch carries

    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the training loader (from ``state.iteration`` when resuming inside
        the epoch), one :meth:`run_step` a batch; returns the mean train loss and top-1
        accuracy (percent) over all ranks.

        Per-step losses stay on the device and are checked for NaN / Inf every
        ``print_freq`` steps, so there is no host-device synchronisation per step.
        """
        loader = self.train_loader
        loader.sampler.set_epoch(epoch)
        # before the first step of every epoch, also the first after a resume (DRW switches on
        # by epoch)
        self.criterion.set_epoch(epoch)
        start = self.state.iteration
        loader.sampler.start = start * loader.batch_size
        self.train_mode()
        tally = _EpochTally(start + len(loader), start, self.cut, self.device)
        progress = _Progress(self, epoch, tally.n_steps, start)
        i, checked = start - 1, start
        for i, (x, y) in enumerate(loader, start=start):
            progress.got_batch(y.shape[0])
            step = self.run_step(x, y, epoch, i, epoch * tally.n_steps + i)
            tally.add(i, step.loss, y.shape[0], step.logits, step.y_true)
            for h in self.hooks:
                h.after_step(step)
            if (i + 1) % self.cfg.print_freq == 0 or i == tally.n_steps - 1:
                _check_finite(tally.losses, checked, i + 1, epoch)
                checked = i + 1
                progress.log(i, tally.losses[i])
            if self.stop.any_rank():
                _check_finite(tally.losses, checked, i + 1, epoch)
                tally.cut_at(i + 1, self.cut)
                self.state.iteration = i + 1
                raise Interrupted()
            progress.step_done()
        _check_finite(tally.losses, checked, i + 1, epoch)
        self.cut.clear()
        self.state.iteration = 0
        return tally.reduce()

    def run_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, iteration: int,
                 global_step: int) -> Step:
        """One optimiser step on the batch (x, y): batch mixing, the loss's class counts,
        forward (the classifier's input too when the loss or a hook wants it), loss, backward,
        update. Returns what the step saw (detached) for the hooks."""
        cfg, device, criterion = self.cfg, self.device, self.criterion
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if cfg.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mix is not None:
            x, y_a, y_b, lam = self.mix(x, y, self.streams.numpy, self.streams.torch)
        else:
            y_a, y_b, lam = y, y, 1.0
        cnt = criterion.counts_for(y_a, cfg.num_classes)
        want_features = (criterion.needs_features
                         or any(h.wants_features(global_step) for h in self.hooks))
        # compiled: this batch's mixing weight is an input of the graph, not a constant in it
        lam_in = (torch.full((), lam, dtype=torch.float32, device=device)
                  if lam != 1.0 and cfg.compile_mode != "none" else lam)
        loss, out, feats = self.forward_loss(x, y_a, y_b, lam_in, cnt, want_features)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer_step()
        return Step(epoch, iteration, global_step, out.detach(),
                    None if feats is None else feats.detach(), y_a,
                    y_b if lam != 1.0 else None, lam, cnt, loss=loss.detach(), y_true=y)

    def evaluate(self) -> dict:
        """Metrics of the current network on the test set (every rank gets them)."""
        return evaluate(self.net, self.test_loader, self.device, self.ranges, self.autocast,
                        posthoc=self.posthoc)

    def save(self, best: bool, metrics: Optional[dict] = None) -> None:
        """Write ``current.pth.tar`` (and ``model_best.pth.tar`` when ``best``), with the
        epoch's test ``metrics`` when it was evaluated; every rank must call it."""
        paths = [self.run_dir.current] + ([self.run_dir.best] if best else [])
        metrics = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self.checkpointer.save(paths, {"config": cfg_to_yaml(self.cfg), "metrics": metrics,
                                       "num_classes": self.cfg.num_classes,
                                       "stage": self.STAGE,
                                       "backbone": self.cfg.backbone,
                                       "classifier": self.net.classifier.kind})


class _Position(HookBase):
    """Where the training loop is (1-based epoch and step, as in the progress lines), for the
    log line of an error that stops a run. Registered first."""

    def __init__(self) -> None:
        self.epoch, self.step, self.phase = 0, 0, "start"

    def before_epoch(self) -> None:
        t = self.trainer
        self.epoch, self.step, self.phase = t.state.epoch + 1, t.state.iteration + 1, "steps"

    def after_step(self, step: Step) -> None:
        self.step = step.iteration + 2  # the next step (its batch is loaded next)

    def after_epoch(self, record: EpochRecord) -> None:
        self.phase = "end"

    def after_train(self) -> None:
        self.phase = "done"

    def describe(self) -> str:
        if self.phase == "steps":
            return f"at epoch {self.epoch}, step {self.step}"
        if self.phase == "end":
            return f"at the end of epoch {self.epoch} (evaluation, metrics or checkpoint)"
        return "before the first epoch" if self.phase == "start" else "after the last epoch"




class _EpochTally:
    """The per-step losses, batch sizes and correct predictions of one epoch, on the device
    (with the steps an interrupted epoch already took, from ``cut``)."""

    def __init__(self, n_steps: int, start: int, cut: CutEpoch, device: torch.device):
        self.n_steps = n_steps
        self.losses = torch.zeros(n_steps, device=device)
        self.sizes = torch.zeros(n_steps, device=device)
        if start and cut.losses:  # resuming inside this epoch: the steps already taken
            self.losses[:start] = torch.tensor(cut.losses, device=device)
            self.sizes[:start] = torch.tensor(cut.counts, device=device)
        self.correct = torch.full((), float(cut.correct if start else 0.0), device=device)

    def add(self, i: int, loss: torch.Tensor, size: int, logits: torch.Tensor,
            y: torch.Tensor) -> None:
        self.losses[i] = loss
        self.sizes[i] = size
        self.correct += (logits.argmax(1) == y).sum()

    def cut_at(self, steps: int, cut: CutEpoch) -> None:
        """Keep the first ``steps`` steps in ``cut`` (saved with an interrupted epoch)."""
        cut.losses = self.losses[:steps].tolist()
        cut.counts = self.sizes[:steps].tolist()
        cut.correct = float(self.correct)

    def reduce(self) -> Dict[str, float]:
        """Mean loss and top-1 accuracy (percent) over every rank's samples."""
        stats = torch.tensor([float(self.sizes.double().sum()),
                              float((self.losses.double() * self.sizes.double()).sum()),
                              float(self.correct)], dtype=torch.float64,
                             device=self.losses.device)
        seen, loss_sum, corr = comm.all_reduce_sum(stats).tolist()
        return {"train_loss": loss_sum / max(seen, 1), "train_acc1": 100.0 * corr / max(seen, 1)}


class _Progress:
    """The progress line of the training loop, every ``print_freq`` steps on rank 0: loss, lr,
    images/s and the time spent waiting for the loader since the last line, peak GPU memory,
    and the epoch's ETA (as torchvision's ``MetricLogger.log_every``)."""

    def __init__(self, trainer: Trainer, epoch: int, n_steps: int, start: int):
        self.t, self.epoch, self.n_steps, self.start = trainer, epoch, n_steps, start
        self.t0 = self.window_t0 = self.step_end = time.time()
        self.images = 0
        self.waiting = 0.0

    def got_batch(self, size: int) -> None:
        self.waiting += time.time() - self.step_end
        self.images += size

    def step_done(self) -> None:
        self.step_end = time.time()

    def log(self, i: int, loss: torch.Tensor) -> None:
        t, now = self.t, time.time()
        if comm.is_main_process():
            eta = (now - self.t0) / max(i + 1 - self.start, 1) * (self.n_steps - i - 1)
            mem = ""
            if t.device.type == "cuda":
                mem = f" mem {torch.cuda.max_memory_allocated(t.device) / 2**20:.0f}MB"
            log.info("Epoch [%d/%d][%d/%d] loss %.4f lr %.5f %.0f img/s data %.3fs%s eta %s",
                     self.epoch + 1, t.cfg.num_epochs, i + 1, self.n_steps, float(loss),
                     float(t.optimizer.param_groups[0]["lr"]),
                     self.images / max(now - self.window_t0, 1e-9), self.waiting, mem,
                     format_seconds(eta))
        self.window_t0, self.images, self.waiting = now, 0, 0.0


def _check_finite(losses: torch.Tensor, a: int, b: int, epoch: int) -> None:
    window = losses[a:b]
    bad = ~torch.isfinite(window)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise NonFiniteLoss(epoch, a + first, float(window[first]))


def log_error_to_run(message: str, log_file: Optional[logging.Handler], rank: int,
                     run_dir: Optional[RunDir]) -> None:
    """An ERROR record in the run's text log only (the script prints the error itself on
    stderr). Another rank appends it there too, marked with its rank: an error of rank 1 (a
    corrupt image in its share) would otherwise be only in that rank's stderr, and the log
    would show rank 0 stopped by the launcher's SIGTERM without a reason."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
    if log_file is not None:
        log_file.handle(record)
    elif rank > 0 and run_dir is not None:
        record.msg = f"rank {rank}: {message}"
        try:
            handler = file_handler(run_dir.log_file)  # appends one short line
        except OSError:
            return  # the error itself still reaches stderr
        handler.handle(record)
        handler.close()
