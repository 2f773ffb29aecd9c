"""eval.py --tau-sweep (engine/tau_sweep.py): choosing a post-hoc tau on held-out data.

Here: the launched processes; the rest in tests/unit/test_tau_sweep.py."""
import json
import os
import sys

import pytest

from config import load_config
from engine import commands
from tests.fixtures import DIGITS_CE, ROOT, random_net, save_network


@pytest.mark.distributed
def test_sweep_under_torchrun_equals_the_single_process_sweep(tmp_path, capsys):
    """Two ranks each run half of the test set; the gathered outputs give the same sweep."""
    from tests.fixtures import finish, free_port, start
    cfg = load_config(DIGITS_CE)
    ckpt = save_network(random_net(cfg, 1, seed=3), tmp_path / "r.pth.tar")
    args = ["--cfg", DIGITS_CE, "resume", ckpt, "--tau-sweep", "logit_adjust", "--tau-grid",
            "0:2:0.5", "--json", "--no-report", "workers", "0"]
    assert commands.evaluate(args) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    p = start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), os.path.join(ROOT, "eval.py"), *args],
              {"OMP_NUM_THREADS": "1"}, merge=False)
    out, err = finish(p)
    assert p.returncode == 0, err[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 prints
    ddp = json.loads(lines[0])
    assert ddp["rows"] == single["rows"] and ddp["tau"] == single["tau"]
    assert ddp["report"] == single["report"] and ddp["n_report"] == single["n_report"] == 250
