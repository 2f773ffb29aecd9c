"""torchrun entry point for test_distributed: rank 1 dies hard (as if OOM-killed) when its
first training epoch starts, while rank 0 goes on into the first collective."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train_stage1  # noqa: E402


def _die(*args, **kwargs):
    os._exit(17)


if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        train_stage1.train_one_epoch = _die
    sys.exit(train_stage1.main())
