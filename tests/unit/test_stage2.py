"""Stage 2 (train_stage2.py, engine/stage2.py): MiSLAS's recipe and the decoupled baselines.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_stage2.py."""
import glob
import math
import os

import torch
import torch.nn.functional as F

from config import load_config
from methods import LabelAwareSmoothing, las_epsilons
from models.heads import LearnableWeightScaling
from tests.fixtures import ROOT


def test_lws_and_las_against_their_formulas():
    torch.manual_seed(0)
    lws = LearnableWeightScaling(5)
    with torch.no_grad():
        lws.learned_norm.copy_(torch.tensor([[0.5, 1.0, 2.0, 1.5, 0.1]]))
    z = torch.randn(7, 5)
    torch.testing.assert_close(lws(z), z * torch.tensor([0.5, 1.0, 2.0, 1.5, 0.1]))
    counts = [50, 20, 10, 4, 2]
    las = LabelAwareSmoothing(counts, 0.4, 0.1)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 3])
    # MiSLAS methods.py: eps_c = tail + (head - tail) sin((n_c - n_K) pi / (2 (n_1 - n_K)))
    eps = torch.tensor([0.1 + 0.3 * math.sin((n - 2) * math.pi / (2 * 48)) for n in counts])
    torch.testing.assert_close(las_epsilons(counts, 0.4, 0.1), eps.float())
    logp = F.log_softmax(z.double(), dim=1)
    want = ((1 - eps.double()[y]) * -logp[torch.arange(7), y]
            + eps.double()[y] * -logp.mean(dim=1)).mean()
    torch.testing.assert_close(las(z.double(), y).double(), want, rtol=1e-6, atol=1e-7)


def test_our_stage2_configs_carry_mislas_recipes():
    """Each stage-2 config of ours uses MiSLAS's recipe of the same data set / ratio."""
    pub = os.path.join(ROOT, "tests", "data", "published_configs", "mislas")
    recipe = ("smooth_head", "smooth_tail", "shift_bn", "lr_factor", "lr", "batch_size",
              "weight_decay", "num_epochs", "momentum", "mixup", "alpha")
    ours = sorted(glob.glob(os.path.join(ROOT, "config", "*", "*_stage2_mislas.yaml")))
    assert len(ours) == 10
    for path in ours:
        cfg = load_config(path, stage=2)
        assert cfg.mode == "stage2" and cfg.stage2_method == "mislas"
        stem = os.path.basename(path)
        if stem.startswith("digits"):
            continue
        ds = cfg.dataset
        name = (stem if ds.startswith("cifar") else
                {"imagenet": "imagenet_resnet50", "ina2018": "ina2018_resnet50",
                 "places": "places_resnet152"}[ds] + "_stage2_mislas.yaml")
        published = load_config(os.path.join(pub, ds, name), stage=2)
        assert {k: cfg[k] for k in recipe} == {k: published[k] for k in recipe}, stem
