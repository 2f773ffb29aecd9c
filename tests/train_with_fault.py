"""``train_stage1.py`` with a fault injected through a training hook, for tests that need a
real (launched) process.

    ARB_TEST_FAULT=die_on_rank1  rank 1 exits at once (status 17, as if OOM-killed) when its
                                 first epoch starts, while rank 0 goes on into a collective
    ARB_TEST_FAULT=slow          every training step takes 0.2 s longer (results unchanged), so
                                 a test can signal a digits run surely before it ends
    ARB_TEST_FAULT=pause         at the end of the first epoch trained (checkpoint saved, loader
                                 workers running) write ``$ARB_TEST_SYNC/paused.<rank>`` (the
                                 pid) and wait until ``$ARB_TEST_SYNC/go`` exists: a test
                                 collects the process tree, sends a signal or changes files
                                 meanwhile
    ARB_TEST_FAULT=nan           from the second step of the second epoch the classifier's
                                 weights are NaN (the loss follows)
    ARB_TEST_FAULT=enospc        from the second epoch on, writing a checkpoint file fails after a
                                 few bytes with OSError(ENOSPC), as on a full disk
    ARB_TEST_FAULT=block_in_build  start-up blocks while building the data: writes
                                 ``$ARB_TEST_SYNC/paused.<rank>`` and waits for ``go`` (for
                                 SIGINT)
    ARB_TEST_FAULT unset         no fault

Several faults combine with '+' (``pause+nan``). Arguments as for ``train_stage1.py``.
"""
import argparse
import errno
import io
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import load_config  # noqa: E402
from datasets import build_data  # noqa: E402
from engine import HookBase, Trainer, distributed_session  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


class DieOnRank1(HookBase):
    def before_epoch(self):
        if self.trainer.dist.rank == 1:
            os._exit(17)


class Slow(HookBase):
    def after_step(self, step):
        time.sleep(0.2)


def wait_for_go() -> None:
    """Tell the test we are paused (``paused.<rank>`` holds the pid), then wait for ``go``.
    The wait is bounded only as a guard against a test that died."""
    sync = os.environ["ARB_TEST_SYNC"]
    paused = os.path.join(sync, f"paused.{os.environ.get('RANK', '0')}")
    with open(paused + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(paused + ".tmp", paused)
    t0 = time.time()
    while not os.path.exists(os.path.join(sync, "go")) and time.time() - t0 < 600:
        time.sleep(0.02)


class Pause(HookBase):
    def after_epoch(self, record):
        if not getattr(self, "done", False):
            self.done = True
            wait_for_go()


class Nan(HookBase):
    def after_step(self, step):
        if step.epoch == 1 and step.iteration == 0:
            with torch.no_grad():
                self.trainer.net.classifier.fc.weight.fill_(float("nan"))


class DiskFull(HookBase):
    def before_epoch(self):
        if self.trainer.state.epoch >= 1:
            real = torch.save

            def full(obj, f, *a, **k):
                if isinstance(f, io.BytesIO):  # torch pickling objects for a collective
                    return real(obj, f, *a, **k)
                f.write(b"\x00" * 64)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            torch.save = full


FAULTS = {"": None, "die_on_rank1": DieOnRank1, "slow": Slow, "pause": Pause, "nan": Nan,
          "enospc": DiskFull, "block_in_build": None}


def main() -> int:
    faults = [f for f in os.environ.get("ARB_TEST_FAULT", "").split("+") if f]
    if any(f not in FAULTS for f in faults):
        sys.exit(f"unknown ARB_TEST_FAULT {faults!r}; accepted: "
                 f"{', '.join(k for k in FAULTS if k)} or none")
    p = argparse.ArgumentParser()
    p.add_argument("--cfg", required=True)
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, dest="local_rank")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    with exit_on_user_error("train_with_fault.py"):
        cfg = load_config(args.cfg, args.opts)
        with distributed_session(cfg, args.local_rank) as dist:
            hooks = [FAULTS[f]() for f in faults if FAULTS[f]]
            data = None
            if "block_in_build" in faults:
                wait_for_go()
                data = build_data(cfg)
            return Trainer(cfg, dist, hooks, data=data).train()


if __name__ == "__main__":
    sys.exit(main())
