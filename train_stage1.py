"""Stage-1 training of a long-tailed classifier with ARB-Loss (or cross-entropy), MiSLAS style.

    python train_stage1.py --cfg config/cifar100/cifar100_imb001_stage1_mixup.yaml [KEY VALUE ...]
    torchrun --nproc_per_node 4 train_stage1.py --cfg config/imagenet/...yaml
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from config import cfg_to_yaml, load_config, mixup_enabled
from datasets import build_data
from datasets.device_pipeline import device_loader_for
from datasets.loader import build_loader, per_rank_workers
from methods.grad_monitor import GradBalanceMonitor
from methods import batch_class_counts, build_criterion, describe_criterion, mixup_criterion, \
    mixup_data
from models import LTNet, build_network, count_parameters
from utils import comm
from utils.checkpoint import load_checkpoint, load_network_state, network_state, \
    save_checkpoint
from utils.errors import CheckpointError, ConfigError, exit_on_user_error
from utils.evaluation import evaluate, format_seconds
from utils.logger import add_log_file, setup_logging
from utils.metrics import class_ranges
from utils.report import epoch_analysis
from utils.rundir import RunDir, find_latest_checkpoint
from utils.schedule import lr_at_epoch

log = logging.getLogger("train")

EXIT_NONFINITE = 3


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, iteration: int, value: float):
        super().__init__(f"non-finite loss ({value}) at epoch {epoch + 1}, iteration "
                         f"{iteration + 1}; the last good checkpoint is left untouched")


class Interrupted(Exception):
    """SIGTERM / SIGINT received: stop after the current step."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Stage-1 long-tailed training (ARB-Loss / CE).")
    p.add_argument("--cfg", required=True, help="yaml config file")
    p.add_argument("--dry-run", action="store_true",
                   help="build data, model and loss, print a summary and exit")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, dest="local_rank",
                   help="set by python -m torch.distributed.launch")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the config")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- set-up
def seed_everything(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed python, numpy and torch; on CUDA also pick deterministic kernels (or cudnn's
    autotuner when not deterministic). CPU kernels used here are deterministic already."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type != "cuda":
        return
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def autocast_factory(cfg, device: torch.device):
    """A no-argument callable returning the autocast context of the ``amp`` key (CUDA only)."""
    if cfg.amp == "none" or device.type != "cuda":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)


@dataclass
class TrainState:
    """Everything that changes during training and must survive a resume."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # steps completed inside ``epoch`` (non-zero only after an interrupt)
    best_acc1: float = 0.0
    its_ece: float = 0.0  # ECE of the best model
    best_epoch: int = 0
    # per-step losses and sizes of a cut epoch, so the resumed epoch's statistics are the
    # same floating-point sums as an uninterrupted one
    partial: Dict[str, Any] = field(default_factory=dict)


class RandomStreams:
    """The random streams used in the main process during training (mixup's lam and
    permutation), seeded per rank; their state goes into checkpoints for exact resume."""

    def __init__(self, seed: int, rank: int):
        self.numpy = np.random.default_rng(seed + 7919 * rank)
        self.torch = torch.Generator().manual_seed(seed + 7919 * rank)

    def state(self) -> Dict[str, Any]:
        return {"numpy": self.numpy.bit_generator.state, "torch": self.torch.get_state(),
                "torch_global": torch.get_rng_state(), "python": list_state(random.getstate())}

    def load(self, st: Dict[str, Any]) -> None:
        self.numpy.bit_generator.state = st["numpy"]
        self.torch.set_state(st["torch"])
        torch.set_rng_state(st["torch_global"])
        v, s, g = st["python"]
        random.setstate((v, tuple(s), g))


def list_state(st):
    v, s, g = st
    return [v, list(s), g]


class StopFlag:
    """Set by SIGTERM / SIGINT; the training loop stops after the current step.

    ``group``: the process group the ranks agree through (``comm.host_group()``)."""

    def __init__(self, group=None) -> None:
        self.signum = 0
        self.group = group
        self._old = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under a test runner thread)
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def any_rank(self) -> bool:
        """True on every rank if any rank was signalled, so all ranks stop at the same step;
        every rank then reports the (highest) signal number received."""
        if comm.get_world_size() > 1:
            t = torch.tensor([self.signum], dtype=torch.int64)  # host tensor: no device sync
            self.signum = int(comm.all_reduce_max(t, self.group).item())
        return bool(self.signum)


# ----------------------------------------------------------------------------- training
def train_one_epoch(net: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    loader, epoch: int, cfg, device: torch.device, streams: RandomStreams,
                    state: TrainState, stop: Optional[StopFlag] = None, autocast=None,
                    scaler=None, monitor: Optional[GradBalanceMonitor] = None
                    ) -> Dict[str, float]:
    """One pass over ``loader``; returns mean train loss and top-1 accuracy (percent).

    Host-device synchronisation happens only every ``print_freq`` steps: per-step losses
    are kept on the device and checked for NaN / Inf there.
    """
    net.train()
    ctx = autocast or contextlib.nullcontext
    num_classes = cfg.num_classes
    start = state.iteration
    n_steps = start + len(loader)
    losses = torch.zeros(n_steps, device=device)
    counts = torch.zeros(n_steps, device=device)
    prev = state.partial or {}
    if start and "losses" in prev:  # resuming inside this epoch: the steps already taken
        losses[:start] = torch.tensor(prev["losses"], device=device)
        counts[:start] = torch.tensor(prev["counts"], device=device)
    correct = torch.full((), float(prev.get("correct", 0.0)), device=device)
    t0 = time.time()
    i = start - 1
    checked = start
    use_mixup = mixup_enabled(cfg)
    for i, (x, y) in enumerate(loader, start=start):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if cfg.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if use_mixup:
            x, y_a, y_b, lam = mixup_data(x, y, cfg.alpha, streams.numpy, streams.torch)
        else:
            y_a, y_b, lam = y, y, 1.0
        cnt = None
        if getattr(criterion, "count_mode", None) == "batch":
            cnt = batch_class_counts(y_a, num_classes)
            if cfg.arb_global_batch_counts:
                cnt = comm.all_reduce_sum(cnt)
        monitored = monitor is not None and monitor.due(epoch * n_steps + i)
        with ctx():
            if monitored:
                out, h = net(x, return_features=True)
            else:
                out = net(x)
        loss = mixup_criterion(criterion, out.float(), y_a, y_b, lam, cnt)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        losses[i] = loss.detach()
        counts[i] = y.shape[0]
        correct += (out.detach().argmax(1) == y).sum()
        if monitored:
            monitor.update(out.detach().float(), h.detach().float(), criterion, y_a,
                           y_b if lam != 1.0 else None, lam, cnt)
        last = i == n_steps - 1
        if (i + 1) % cfg.print_freq == 0 or last:
            _check_finite(losses, checked, i + 1, epoch)
            checked = i + 1
            done = i + 1 - start
            rate = (time.time() - t0) / max(done, 1)
            comm.on_main(log.info, "Epoch [%d/%d][%d/%d] loss %.4f lr %.5f eta %s", epoch + 1,
                         cfg.num_epochs, i + 1, n_steps, float(losses[i]),
                         optimizer.param_groups[0]["lr"], format_seconds(rate * (n_steps - i - 1)))
        if stop is not None and stop.any_rank():
            _check_finite(losses, checked, i + 1, epoch)
            state.partial = {"losses": losses[:i + 1].tolist(),
                             "counts": counts[:i + 1].tolist(), "correct": float(correct)}
            state.iteration = i + 1
            raise Interrupted()
    _check_finite(losses, checked, i + 1, epoch)
    seen = float(counts.double().sum())
    loss_sum = float((losses.double() * counts.double()).sum())
    corr = float(correct)
    stats = torch.tensor([seen, loss_sum, corr], dtype=torch.float64, device=device)
    seen, loss_sum, corr = comm.all_reduce_sum(stats).tolist()
    state.partial = {}
    state.iteration = 0
    return {"train_loss": loss_sum / max(seen, 1), "train_acc1": 100.0 * corr / max(seen, 1)}


def _check_finite(losses: torch.Tensor, a: int, b: int, epoch: int) -> None:
    window = losses[a:b]
    bad = ~torch.isfinite(window)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise NonFiniteLoss(epoch, a + first, float(window[first]))


# ----------------------------------------------------------------------------- main
def dry_run_summary(cfg, data, ranges, net: LTNet) -> str:
    counts = data.cls_num_list
    parts = [f"dataset: {cfg.dataset} ({data.name}), {cfg.num_classes} classes, "
             f"data_path {cfg.data_path}",
             f"training images: {sum(counts)} (largest class {max(counts)}, smallest "
             f"{min(counts)}, imbalance ratio {max(counts) / max(min(counts), 1):.1f})",
             f"test images: {len(data.test)}",
             "classes many / medium / few: " + " / ".join(
                 f"{b - a} [{a}, {b})" for a, b in ranges.values()),
             f"backbone: {cfg.backbone}, {count_parameters(net.model):,} parameters"]
    if net.block is not None:
        parts.append(f"block: {count_parameters(net.block):,} parameters")
    parts.append(f"classifier: {count_parameters(net.classifier):,} parameters")
    parts.append(f"loss: {describe_criterion(cfg)}")
    return "\n".join(parts)


def build_optimizer(cfg, net: LTNet) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in m.parameters() if p.requires_grad]}
              for m in net.parts().values()]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def checkpoint_state(cfg, net: LTNet, optimizer, state: TrainState, rng_states: List[dict],
                     metrics: Optional[dict], scaler=None,
                     partials: Optional[List[dict]] = None) -> Dict[str, Any]:
    """The checkpoint dict: reference keys + what an exact resume needs (``rng_states`` and
    ``partials`` hold every rank's random streams and cut-epoch statistics, in rank order)."""
    ckpt = network_state(net)
    ckpt.update({
        "epoch": state.epoch, "iteration": state.iteration, "best_acc1": state.best_acc1,
        "its_ece": state.its_ece, "best_epoch": state.best_epoch,
        "partial": partials if partials is not None else [state.partial],
        "optimizer": optimizer.state_dict(), "config": cfg_to_yaml(cfg),
        "metrics": {k: v for k, v in (metrics or {}).items()
                    if isinstance(v, (int, float))},
        "rng": rng_states, "num_classes": cfg.num_classes, "backbone": cfg.backbone,
        "world_size": comm.get_world_size(),
    })
    if scaler is not None:
        ckpt["scaler"] = scaler.state_dict()
    return ckpt


def resume_from(path: str, cfg, net: LTNet, optimizer, streams: RandomStreams,
                scaler=None) -> TrainState:
    ckpt = load_checkpoint(path, legacy=cfg.legacy_checkpoint)
    load_network_state(net, ckpt, path)
    state = TrainState(epoch=int(ckpt.get("epoch", 0)), iteration=int(ckpt.get("iteration", 0)),
                       best_acc1=float(ckpt.get("best_acc1", 0.0)),
                       its_ece=float(ckpt.get("its_ece", 0.0)),
                       best_epoch=int(ckpt.get("best_epoch", 0)),
                       partial=_own_rank_entry(ckpt.get("partial")))
    if "optimizer" in ckpt:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit this model ({e})") \
                from None
    rng = ckpt.get("rng")
    if isinstance(rng, list) and len(rng) == comm.get_world_size():
        streams.load(rng[comm.get_rank()])
    elif rng is not None:
        log.warning("resuming with a different number of processes: random streams restart")
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    log.info("resumed from %s at epoch %d%s", path, state.epoch,
             f", iteration {state.iteration}" if state.iteration else "")
    return state


def _own_rank_entry(partials: Any) -> Dict[str, Any]:
    """This rank's cut-epoch statistics from a checkpoint's per-rank list ({} when the number
    of processes changed: the resumed epoch's train loss then covers the remaining steps)."""
    if isinstance(partials, list) and len(partials) == comm.get_world_size():
        return dict(partials[comm.get_rank()] or {})
    return {}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    with exit_on_user_error("train_stage1.py"):
        args = parse_args(argv)
        cfg = load_config(args.cfg, args.opts)
        return run(cfg, dry_run=args.dry_run, local_rank=args.local_rank)


def run(cfg, dry_run: bool = False, local_rank: Optional[int] = None) -> int:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    setup_logging(int(os.environ.get("RANK", "0")))
    info = comm.init_distributed(cfg, local_rank)
    setup_logging(info.rank)
    try:
        return _run(cfg, info, dry_run)
    finally:
        comm.cleanup_distributed()


def _run(cfg, info: comm.DistInfo, dry_run: bool) -> int:
    device = info.device
    seed_everything(cfg.seed, cfg.deterministic, device)
    data = build_data(cfg)
    if len(data.cls_num_list) != cfg.num_classes:
        raise ConfigError(f"key 'num_classes' is {cfg.num_classes} but the data has "
                          f"{len(data.cls_num_list)} classes")
    ranges = class_ranges(cfg, data.cls_num_list)
    net = build_network(cfg, cfg.num_classes, data.in_channels)
    criterion = build_criterion(cfg, data.cls_num_list)
    if dry_run:
        comm.on_main(print, dry_run_summary(cfg, data, ranges, net))
        return 0

    # Resolve the resume target before creating anything on disk.
    resume = cfg.resume
    if resume == "auto":
        resume = comm.broadcast_object(find_latest_checkpoint(cfg))
        if not resume:
            log.info("resume auto: no earlier run of '%s' under %s; starting fresh", cfg.name,
                     cfg.output_dir)
    elif resume and not os.path.isfile(resume):
        raise CheckpointError(f"key 'resume': checkpoint not found: {resume}")

    net.to(device)
    if cfg.channels_last and device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    criterion.to(device)
    optimizer = build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler("cuda") if (cfg.amp == "fp16" and device.type == "cuda") \
        else None
    streams = RandomStreams(cfg.seed, info.rank)
    state = TrainState()
    if resume:
        state = resume_from(resume, cfg, net, optimizer, streams, scaler)

    run_dir = RunDir.for_training(cfg, resume, state.epoch)  # rank 0 creates it, all agree
    if comm.is_main_process():
        add_log_file(run_dir.log_file)
        log.info("run folder: %s", run_dir.path)
        log.info("config:\n%s", cfg_to_yaml(cfg))
        log.info("%s", dry_run_summary(cfg, data, ranges, net).replace("\n", "; "))
    writer = run_dir.tensorboard() if comm.is_main_process() else None

    train_net: nn.Module = net
    if info.distributed:
        if cfg.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_net = torch.compile(train_net)

    world = info.world_size
    if cfg.batch_size % world:
        log.warning("batch_size %d is not divisible by %d processes; each uses %d",
                    cfg.batch_size, world, cfg.batch_size // world)
    per_rank_batch = max(cfg.batch_size // world, 1)
    workers = per_rank_workers(cfg.workers, world)
    pin = device.type == "cuda"
    train_loader = None
    if cfg.device_pipeline:
        train_loader = device_loader_for(data, per_rank_batch, device, cfg.seed, info.rank,
                                         world)
        if train_loader is None:
            log.warning("device_pipeline: %s is not an in-memory data set; using the "
                        "per-sample loader", cfg.dataset)
    if train_loader is None:
        train_loader = build_loader(data.train, per_rank_batch, train=True, seed=cfg.seed,
                                    rank=info.rank, world_size=world, workers=workers,
                                    pin_memory=pin)
    test_loader = build_loader(data.test, max((cfg.test_batch_size or cfg.batch_size) // world,
                                              1), train=False, seed=cfg.seed, rank=info.rank,
                               world_size=world, workers=workers, pin_memory=pin)
    autocast = autocast_factory(cfg, device)
    monitor = GradBalanceMonitor(cfg.num_classes, cfg.grad_stats_freq, ranges) \
        if cfg.grad_stats_freq > 0 else None
    stop = StopFlag(comm.host_group())
    stop.install()
    metrics: Dict[str, Any] = {}
    try:
        for epoch in range(state.epoch, cfg.num_epochs):
            t_epoch = time.time()
            lr = lr_at_epoch(cfg, epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            train_loader.sampler.set_epoch(epoch)
            train_loader.sampler.start = state.iteration * per_rank_batch
            train_stats = train_one_epoch(train_net, criterion, optimizer, train_loader, epoch,
                                          cfg, device, streams, state, stop, autocast, scaler,
                                          monitor)
            comm.broadcast_buffers(net)  # evaluate and save rank 0's BatchNorm statistics
            if monitor is not None:
                monitor.log(writer, epoch + 1)
                train_stats.update(monitor.summary())
            state.epoch = epoch + 1
            last = state.epoch == cfg.num_epochs
            if state.epoch % cfg.eval_freq and not last:
                run_dir.record({"epoch": state.epoch, "lr": lr, **train_stats,
                                "seconds": time.time() - t_epoch}, writer)
                _save(run_dir, cfg, net, optimizer, state, streams, {}, scaler, False)
                continue
            metrics = evaluate(net, test_loader, device, ranges, autocast)
            is_best = metrics["acc1"] > state.best_acc1
            if is_best:
                state.best_acc1, state.its_ece = metrics["acc1"], metrics["ece"]
                state.best_epoch = state.epoch
            row = {"epoch": state.epoch, "lr": lr, **train_stats,
                   **{k: metrics[k] for k in ("acc1", "acc5", "many", "medium", "few", "ece",
                                              "mce")},
                   "best_acc1": state.best_acc1}
            row.update(epoch_analysis(cfg, state.epoch, net, data, ranges, metrics, writer,
                                      device, autocast, last=last))
            row["seconds"] = time.time() - t_epoch
            run_dir.record(row, writer)
            comm.on_main(log.info, "Epoch %d: Acc@1 %.2f Acc@5 %.2f many %.2f medium %.2f few "
                         "%.2f ECE %.2f (best Acc@1 %.2f at epoch %d)", state.epoch,
                         metrics["acc1"], metrics["acc5"], metrics["many"], metrics["medium"],
                         metrics["few"], metrics["ece"], state.best_acc1, state.best_epoch)
            _save(run_dir, cfg, net, optimizer, state, streams, metrics, scaler, is_best)
    except Interrupted:
        _save(run_dir, cfg, net, optimizer, state, streams, {}, scaler, False)
        comm.on_main(log.warning, "interrupted by signal %d at epoch %d, iteration %d; resume "
                     "with: python train_stage1.py --cfg <cfg> resume %s", stop.signum,
                     state.epoch + 1, state.iteration, run_dir.current)
        return 128 + stop.signum
    except NonFiniteLoss as e:
        comm.on_main(log.error, "%s", e)
        return EXIT_NONFINITE
    finally:
        stop.restore()
        if writer is not None:
            writer.close()
    comm.on_main(log.info, "done: best Acc@1 %.2f (ECE %.2f) at epoch %d; run folder %s",
                 state.best_acc1, state.its_ece, state.best_epoch, run_dir.path)
    return 0


def _save(run_dir: "RunDir", cfg, net, optimizer, state, streams, metrics, scaler,
          is_best: bool) -> None:
    """Rank 0 writes current (and best) atomically; every rank's random streams and cut-epoch
    statistics go in."""
    gathered = comm.all_gather_object((streams.state(), state.partial))  # one collective
    rng_states, partials = [g[0] for g in gathered], [g[1] for g in gathered]
    if not comm.is_main_process():
        comm.synchronize()
        return
    ckpt = checkpoint_state(cfg, net, optimizer, state, rng_states, metrics, scaler, partials)
    save_checkpoint(ckpt, run_dir.current)
    if is_best:
        save_checkpoint(ckpt, run_dir.best)
    comm.synchronize()


if __name__ == "__main__":
    sys.exit(main())
