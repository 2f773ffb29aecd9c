"""CIFAR backbones: parameter counts, released key names, checkpoint compatibility."""
import torch

from config import get_cfg_defaults
from models import BACKBONES, build_network, count_parameters
from models.resnet_cifar import Classifier, resnet32_fe
from utils.checkpoint import load_network_state


def test_resnet32_parameter_count_and_output():
    m = resnet32_fe()
    assert count_parameters(m) == 463_504
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_cifar_depths():
    sizes = {name: count_parameters(BACKBONES[name](3))
             for name in ("resnet20_fe", "resnet32_fe", "resnet44_fe", "resnet56_fe")}
    assert sizes["resnet20_fe"] < sizes["resnet32_fe"] < sizes["resnet44_fe"] \
        < sizes["resnet56_fe"]
    # each extra block per stage adds the same parameters (16, 32, 64-channel basic blocks)
    per_block = sum(2 * (9 * c * c + 2 * c) for c in (16, 32, 64))
    assert sizes["resnet44_fe"] - sizes["resnet32_fe"] == 2 * per_block


def test_released_key_names():
    keys = set(resnet32_fe().state_dict())
    expected = {"conv1.weight"} | {f"bn1.{s}" for s in
                                   ("weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked")}
    for layer in (1, 2, 3):
        for b in range(5):
            for part in ("conv1", "conv2"):
                expected.add(f"layer{layer}.{b}.{part}.weight")
            for part in ("bn1", "bn2"):
                expected |= {f"layer{layer}.{b}.{part}.{s}" for s in
                             ("weight", "bias", "running_mean", "running_var",
                              "num_batches_tracked")}
    assert keys == expected
    assert set(Classifier(64, 10).state_dict()) == {"fc.weight", "fc.bias"}


def test_mislas_style_checkpoint_with_module_prefix_loads():
    cfg = get_cfg_defaults()
    cfg.num_classes = 10
    src = build_network(cfg, 10)
    ckpt = {"epoch": 200, "best_acc1": 70.0, "its_ece": 5.0,
            "state_dict_model": {"module." + k: v for k, v in src.model.state_dict().items()},
            "state_dict_classifier": {"module." + k: v
                                      for k, v in src.classifier.state_dict().items()}}
    dst = build_network(cfg, 10)
    load_network_state(dst, ckpt)
    x = torch.randn(3, 3, 32, 32)
    src.eval(), dst.eval()
    torch.testing.assert_close(src(x), dst(x))
