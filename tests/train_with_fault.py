"""``train_stage1.py`` with a fault injected through a training hook, for tests that need a
real (launched) process.

    ARB_TEST_FAULT=die_on_rank1  rank 1 exits at once (status 17, as if OOM-killed) when its
                                 first epoch starts, while rank 0 goes on into a collective
    ARB_TEST_FAULT=slow          every training step takes 0.2 s longer (results unchanged), so
                                 a test can signal a digits run surely before it ends
    ARB_TEST_FAULT unset         no fault

Arguments as for ``train_stage1.py``.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import load_config  # noqa: E402
from engine import HookBase, Trainer, distributed_session  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


class DieOnRank1(HookBase):
    def before_epoch(self):
        if self.trainer.dist.rank == 1:
            os._exit(17)


class Slow(HookBase):
    def after_step(self, step):
        time.sleep(0.2)


FAULTS = {"": None, "die_on_rank1": DieOnRank1, "slow": Slow}


def main() -> int:
    fault = os.environ.get("ARB_TEST_FAULT", "")
    if fault not in FAULTS:
        sys.exit(f"unknown ARB_TEST_FAULT {fault!r}; accepted: die_on_rank1, slow or none")
    p = argparse.ArgumentParser()
    p.add_argument("--cfg", required=True)
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, dest="local_rank")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    with exit_on_user_error("train_with_fault.py"):
        cfg = load_config(args.cfg, args.opts)
        with distributed_session(cfg, args.local_rank) as dist:
            hooks = [FAULTS[fault]()] if FAULTS[fault] else []
            return Trainer(cfg, dist, hooks).train()


if __name__ == "__main__":
    sys.exit(main())
