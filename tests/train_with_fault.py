"""``train_stage1.py`` with a fault injected, for tests that need a real (launched) process.

    ARB_TEST_FAULT=die_on_rank1  rank 1 exits at once (status 17, as if OOM-killed) when its
                                 first epoch starts, while rank 0 goes on into a collective
    ARB_TEST_FAULT=slow          every training step takes 0.2 s longer (results unchanged), so
                                 a test can signal a digits run surely before it ends
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train_stage1  # noqa: E402


def _die(*args, **kwargs):
    os._exit(17)


def _slowed(criterion):
    def slow(*args, **kwargs):
        time.sleep(0.2)
        return criterion(*args, **kwargs)
    return slow


if __name__ == "__main__":
    fault = os.environ.get("ARB_TEST_FAULT", "")
    if fault == "die_on_rank1" and os.environ.get("RANK") == "1":
        train_stage1.train_one_epoch = _die
    elif fault == "slow":
        train_stage1.mixup_criterion = _slowed(train_stage1.mixup_criterion)
    elif fault not in ("", "die_on_rank1"):
        sys.exit(f"unknown ARB_TEST_FAULT {fault!r}")
    sys.exit(train_stage1.main())
