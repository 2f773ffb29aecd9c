"""What a compiled training step (compile_mode) needs from the code it compiles: batch class
counts of a fixed size without a host synchronisation, the mixing weight as a tensor input,
and the config key."""
import re

import pytest
import torch

from config import load_config
from methods import ARBLoss, mixup_criterion
from methods.losses import batch_class_counts
from tests.fixtures import DIGITS_CE
from utils.errors import ConfigError


def test_batch_counts_are_a_fixed_size_scatter_equal_to_bincount():
    y = torch.tensor([3, 0, 3, 3, 1])
    cnt = batch_class_counts(y, 6)
    assert cnt.dtype == torch.float32 and cnt.shape == (6,)
    assert torch.equal(cnt, torch.bincount(y, minlength=6).float())
    # the size is num_classes whatever the labels: no data-dependent shape
    assert batch_class_counts(torch.tensor([0]), 6).shape == (6,)


def test_a_tensor_mixing_weight_gives_the_float_ones_loss():
    torch.manual_seed(0)
    z = torch.randn(8, 5, dtype=torch.float64)
    y_a = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    y_b = y_a.flip(0)
    crit = ARBLoss(cls_num_list=[8, 6, 4, 2, 1])
    cnt = crit.counts_for(y_a, 5)
    as_float = mixup_criterion(crit, z, y_a, y_b, 0.3, cnt)
    as_tensor = mixup_criterion(crit, z, y_a, y_b, torch.tensor(0.3, dtype=torch.float64), cnt)
    assert torch.allclose(as_float, as_tensor, rtol=0, atol=1e-12)
    # a tensor weight of one still mixes (no data-dependent branch): the same value
    one = mixup_criterion(crit, z, y_a, y_a, torch.tensor(1.0, dtype=torch.float64), cnt)
    assert torch.allclose(one, mixup_criterion(crit, z, y_a, y_a, 1.0, cnt))


def test_the_compile_mode_key():
    assert load_config(DIGITS_CE).compile_mode == "none"
    assert load_config(DIGITS_CE, ["compile_mode", "reduce-overhead"]).compile_mode == (
        "reduce-overhead")
    with pytest.raises(ConfigError, match=re.escape(
            "key 'compile_mode' is 'graphs'; accepted: none, default, reduce-overhead, "
            "max-autotune")):
        load_config(DIGITS_CE, ["compile_mode", "graphs"])
    with pytest.raises(ConfigError, match=r"keys 'compile' \(the network\) and 'compile_mode'"):
        load_config(DIGITS_CE, ["compile", "True", "compile_mode", "default"])


def test_group_learning_rates_become_tensors_updated_in_place_under_a_compiled_step():
    from engine.parts import set_group_lr
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    g = opt.param_groups[0]
    set_group_lr(g, 0.05)  # eager: a float
    assert g["lr"] == 0.05 and not isinstance(g["lr"], torch.Tensor)
    set_group_lr(g, 0.05, torch.device("cpu"))  # compiled: a tensor from now on ...
    lr = g["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(0.05)
    set_group_lr(g, 0.01, torch.device("cpu"))  # ... the same one, filled in place
    assert g["lr"] is lr and lr.item() == pytest.approx(0.01)
    # SGD steps with a tensor learning rate as with the float
    p.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), -0.01))
