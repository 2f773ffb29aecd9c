"""CIFAR backbones, classifier heads and LTNet: parameter counts, released key names,
initialisation per model family, checkpoint compatibility."""
import math

import pytest
import torch

from config import get_cfg_defaults
from models import BACKBONES, LTNet, build_network, count_parameters
from models.heads import Classifier, LearnableWeightScaling, PooledClassifier
from models.resnet_cifar import resnet32_fe
from utils.checkpoint import load_network_state, network_state


def test_resnet32_parameter_count_and_output():
    m = resnet32_fe()
    assert count_parameters(m) == 463_504
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_cifar_depths():
    sizes = {name: count_parameters(BACKBONES[name](3))
             for name in ("resnet20_fe", "resnet32_fe", "resnet44_fe", "resnet56_fe")}
    assert (sizes["resnet20_fe"] < sizes["resnet32_fe"] < sizes["resnet44_fe"]
            < sizes["resnet56_fe"])
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


# ------------------------------------------------------------------ classifier initialisation
def test_classifier_inits_equal_the_references_for_the_same_random_state():
    torch.manual_seed(0)
    linear = Classifier(2048, 1000)  # MiSLAS resnet.Classifier: nn.Linear as it comes
    torch.manual_seed(0)
    ref = torch.nn.Linear(2048, 1000)
    torch.testing.assert_close(linear.fc.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(linear.fc.bias, ref.bias, rtol=0, atol=0)

    torch.manual_seed(1)
    kaiming = Classifier(64, 100, init="kaiming")  # MiSLAS resnet_cifar.Classifier
    torch.manual_seed(1)
    ref = torch.nn.Linear(64, 100)
    torch.nn.init.kaiming_normal_(ref.weight)  # its _weights_init; the bias is left alone
    torch.testing.assert_close(kaiming.fc.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(kaiming.fc.bias, ref.bias, rtol=0, atol=0)
    with pytest.raises(ValueError, match="accepted: linear, kaiming"):
        Classifier(8, 2, init="xavier")


def _cfg(dataset: str, backbone: str):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.backbone = dataset, backbone
    return cfg


@pytest.mark.parametrize("dataset, backbone, feat, std", [
    # kaiming_normal_: std sqrt(2 / fan_in); nn.Linear: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
    ("cifar100", "resnet32_fe", 64, math.sqrt(2 / 64)),
    ("imagenet", "resnet10_fe", 512, 1 / math.sqrt(3 * 512)),
])
def test_build_network_classifier_init_per_family(dataset, backbone, feat, std):
    torch.manual_seed(2)
    net = build_network(_cfg(dataset, backbone), 100)
    w = net.classifier.fc.weight.detach()
    assert w.shape == (100, feat)
    assert abs(w.std().item() / std - 1) < 0.05
    # bit for bit: MiSLAS builds the backbone, then the classifier, from one random stream
    torch.manual_seed(2)
    BACKBONES[backbone](3)
    ref = torch.nn.Linear(feat, 100)
    if dataset == "cifar100":
        torch.nn.init.kaiming_normal_(ref.weight)
    torch.testing.assert_close(w, ref.weight.detach(), rtol=0, atol=0)


# ------------------------------------------------------------------ heads and LWS
def test_pooled_classifier_pools_then_fc():
    head = PooledClassifier(6, 3)
    x = torch.randn(2, 6, 4, 5)
    assert set(head.state_dict()) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(head(x), head.fc(x.mean((2, 3))))


def test_learnable_weight_scaling():
    lws = LearnableWeightScaling(5)
    assert set(lws.state_dict()) == {"learned_norm"}
    assert lws.learned_norm.shape == (1, 5) and bool((lws.learned_norm == 1).all())
    logits = torch.randn(3, 5)
    torch.testing.assert_close(lws(logits), logits)
    with torch.no_grad():
        lws.learned_norm.copy_(torch.arange(1.0, 6.0))
    torch.testing.assert_close(lws(logits), logits * torch.arange(1.0, 6.0))


def test_ltnet_with_lws_scales_logits_and_saves_state_dict_lws_model():
    torch.manual_seed(3)
    cfg = get_cfg_defaults()
    base = build_network(cfg, 10)
    lws = LearnableWeightScaling(10)
    with torch.no_grad():
        lws.learned_norm.uniform_(0.5, 2.0)
    net = LTNet(base.model, base.classifier, lws=lws).eval()
    assert set(net.parts()) == {"model", "classifier", "lws_model"}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, h = net(x, return_features=True)
        torch.testing.assert_close(h, base.model(x))
        torch.testing.assert_close(logits, base.classifier(h) * lws.learned_norm)
    # a MiSLAS stage-2 checkpoint (DataParallel "module." keys) loads strictly
    ckpt = {k: {"module." + n: t for n, t in v.items()} for k, v in network_state(net).items()}
    assert set(ckpt) == {"state_dict_model", "state_dict_classifier", "state_dict_lws_model"}
    assert set(ckpt["state_dict_lws_model"]) == {"module.learned_norm"}
    other = LTNet(build_network(cfg, 10).model, build_network(cfg, 10).classifier,
                  lws=LearnableWeightScaling(10)).eval()
    load_network_state(other, ckpt)
    with torch.no_grad():
        torch.testing.assert_close(other(x), logits)


def test_lws_attached_after_loading_a_stage1_checkpoint():
    # MiSLAS stage 2: load the stage-1 parts, then add a fresh LWS (ones: logits unchanged)
    cfg = get_cfg_defaults()
    stage1 = build_network(cfg, 10).eval()
    net = build_network(cfg, 10)
    load_network_state(net, network_state(stage1))
    net.lws = LearnableWeightScaling(10)
    assert net.parts()["lws_model"] is net.lws
    assert "lws.learned_norm" in dict(net.named_parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), stage1(x))
