"""DDP on CPU with gloo: torchrun, torch.distributed.launch, a 2-node rendezvous.

Here: the checks without a training loop or a process; the rest in
tests/processes/test_distributed.py."""
import pytest

from datasets.common import EpochSampler
from engine import commands
from tests.fixtures import (
    DIGITS_ARB,
)


@pytest.mark.parametrize("flag", [["--local_rank", "1"], ["--local-rank=1"]])
def test_both_local_rank_spellings_are_accepted(flag):
    # older launchers pass --local_rank, newer ones --local-rank (before the script's own args)
    args = commands.stage1_args([*flag, "--cfg", DIGITS_ARB, "num_epochs", "1"])
    assert args.local_rank == 1 and args.opts == ["num_epochs", "1"]


def test_eval_shards_cover_every_sample_once():
    for n in (7, 500, 1):
        for world in (2, 3):
            seen = []
            for rank in range(world):
                seen += EpochSampler(n, shuffle=False, rank=rank, world_size=world,
                                     pad=False).indices()
            assert sorted(seen) == list(range(n))
            # the rank-major concatenation that evaluation gathers, and how it is undone
            assert EpochSampler.gathered_order(n, world).tolist() == seen


def test_training_shards_are_padded_equally():
    shards = [EpochSampler(7, seed=1, rank=r, world_size=2).indices() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(range(7))
