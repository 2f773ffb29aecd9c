"""ImageNet ResNet backbones and the Places-LT recipe (frozen backbone + block + classifier)."""
import types
import urllib.error

import pytest
import torch
import torchvision
from torchvision.models import resnet as tv_resnet

from config import get_cfg_defaults
from engine.parts import build_optimizer
from models import BACKBONES, LTNet, build_network, count_parameters, resnet_places
from models.heads import PooledClassifier
from models.resnet import ResNetFE, build_resnet
from utils.checkpoint import load_network_state, network_state
from utils.errors import CheckpointError, ConfigError

PARAMS = {"resnet10_fe": (4_905_792, 512), "resnet50_fe": (23_508_032, 2048),
          "resnet101_fe": (42_500_160, 2048), "resnet152_fe": (58_143_808, 2048)}
LAYERS = {"resnet10_fe": [1, 1, 1, 1], "resnet50_fe": [3, 4, 6, 3],
          "resnet101_fe": [3, 4, 23, 3], "resnet152_fe": [3, 8, 36, 3]}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def expected_keys(name: str, layers=None) -> set:
    """torchvision's key names, written out from the architecture description."""
    bottleneck = name != "resnet10_fe"
    convs = (1, 2, 3) if bottleneck else (1, 2)
    keys = {"conv1.weight"} | {f"bn1.{s}" for s in BN}
    for layer, blocks in enumerate(layers or LAYERS[name], start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}"
            keys |= {f"{pre}.conv{i}.weight" for i in convs}
            keys |= {f"{pre}.bn{i}.{s}" for i in convs for s in BN}
        if bottleneck or layer > 1:  # block 0 changes width or stride
            keys |= {f"layer{layer}.0.downsample.0.weight"}
            keys |= {f"layer{layer}.0.downsample.1.{s}" for s in BN}
    return keys


def places_cfg(**kw):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.backbone, cfg.num_classes = "places", "resnet10_fe", 7
    cfg.not_pretrained = True
    for k, v in kw.items():
        cfg[k] = v
    return cfg


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_keys_and_dims(name):
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation
        m = BACKBONES[name](3)
    assert isinstance(m, ResNetFE)
    assert count_parameters(m) == PARAMS[name][0]
    assert m.out_dim == PARAMS[name][1]
    assert set(m.state_dict()) == expected_keys(name)


def test_forward_shapes_on_tiny_inputs():
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert BACKBONES["resnet10_fe"](3).eval()(x[:, :, :32, :32]).shape == (2, 512)
        assert build_resnet("resnet10_fe", pool=False).eval()(x).shape == (2, 512, 2, 2)
        assert BACKBONES["resnet10_fe"](1).eval()(x[:, :1]).shape == (2, 512)
        r50 = build_resnet("resnet50_fe").eval()
        pooled = r50(x)
        r50.pool = False  # the Places-LT form: 2048-channel map (7 x 7 for 224 inputs)
        fmap = r50(x)
    assert pooled.shape == (2, 2048) and fmap.shape == (2, 2048, 2, 2)
    torch.testing.assert_close(fmap.mean((2, 3)), pooled)


@pytest.fixture(scope="module")
def tv_resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


@pytest.mark.parametrize("dataset, classes, prefix", [("imagenet", 1000, "module."),
                                                      ("ina2018", 8142, "")])
@pytest.mark.slow
def test_mislas_checkpoint_loads_and_matches_torchvision(tv_resnet50, dataset, classes,
                                                         prefix):
    ref = tv_resnet50
    fc = torch.nn.Linear(2048, classes)
    ckpt = {"epoch": 200, "best_acc1": 50.0, "its_ece": 3.0,
            "state_dict_model": {prefix + k: v for k, v in ref.state_dict().items()
                                 if not k.startswith("fc.")},
            "state_dict_classifier": {prefix + "fc." + k: v
                                      for k, v in fc.state_dict().items()}}
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.backbone, cfg.num_classes = dataset, "resnet50_fe", classes
    net = build_network(cfg, classes).eval()
    load_network_state(net, ckpt, "synthetic.pth.tar")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feat = torch.flatten(ref.avgpool(ref.layer4(ref.layer3(ref.layer2(ref.layer1(
            ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))), 1)
        torch.testing.assert_close(net(x), fc(feat))


# ------------------------------------------------------------------ Places-LT recipe
def test_places_network_structure():
    net = build_network(places_cfg(), 7)
    assert isinstance(net, LTNet) and net.frozen_backbone
    assert isinstance(net.model, ResNetFE) and not net.model.pool
    assert isinstance(net.block, tv_resnet.Bottleneck) and net.block.downsample is None
    assert isinstance(net.classifier, PooledClassifier)
    assert set(net.classifier.state_dict()) == {"fc.weight", "fc.bias"}
    assert set(net.block.state_dict()) == {f"{p}{i}.{s}" for i in (1, 2, 3) for p, s in
                                           [("conv", "weight")] + [("bn", s) for s in BN]}
    assert net.block.conv1.in_channels == 512 and net.block.conv1.out_channels == 128
    assert net.block.conv3.out_channels == 512
    assert not any(p.requires_grad for p in net.model.parameters())
    logits, h = net(torch.randn(2, 3, 64, 64), return_features=True)
    assert logits.shape == (2, 7) and h.shape == (2, 512)


# Places backbones as in MiSLAS models/resnet_places.py: the ImageNet ResNet less its last
# layer4 bottleneck (ResNet-152: [3, 8, 36, 2]); the block is Bottleneck(2048, 512).
PLACES = {"resnet50_fe": ([3, 4, 6, 2], 19_045_440), "resnet101_fe": ([3, 4, 23, 2], 38_037_568),
          "resnet152_fe": ([3, 8, 36, 2], 53_681_216)}
BLOCK_PARAMS = 2048 * 512 + 9 * 512 * 512 + 512 * 2048 + 2 * (512 + 512 + 2048)


@pytest.mark.parametrize("name", sorted(PLACES))
def test_places_backbone_lacks_the_last_bottleneck(name):
    layers, frozen = PLACES[name]
    with torch.device("meta"):
        net = build_network(places_cfg(backbone=name), 365)
    assert count_parameters(net.model) == frozen and not net.model.pool
    assert set(net.model.state_dict()) == expected_keys(name, layers)
    assert count_parameters(net.block) == BLOCK_PARAMS == 4_462_592
    # the block takes exactly the place (and size) of the removed layer4.2
    assert frozen + BLOCK_PARAMS == PARAMS[name][0]
    assert (net.block.conv1.in_channels, net.block.conv1.out_channels,
            net.block.conv3.out_channels, net.block.stride) == (2048, 512, 2048, 1)
    assert net.classifier.fc.in_features == 2048


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine terms, so that loading them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


@pytest.fixture(scope="module")
def tv_resnet152_state():
    """A full torchvision ResNet-152 state dict (random weights, no download)."""
    torch.manual_seed(2)
    ref = torchvision.models.resnet152()
    _randomise_bn(ref, 3)
    return ref.state_dict()


def _mislas_logits(model, block, fc, x):
    """MiSLAS train_stage1.py / validate for Places, written out: ``model`` (ResNet_FE, no
    pooling) under no_grad, then ``block``, then resnet_places.Classifier (avgpool, flatten,
    fc)."""
    with torch.no_grad():
        feat = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        feat = model.layer4(model.layer3(model.layer2(model.layer1(feat))))
    feat = block(feat)
    return fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(feat, 1), 1))


@pytest.mark.slow
def test_mislas_places_checkpoint_loads_and_matches_mislas_forward(tv_resnet152_state):
    # MiSLAS's Places model: torchvision's ResNet-152 with layer4 cut to two blocks, plus a
    # Bottleneck(2048, 512) block and a 2048 -> 365 fc, saved from DataParallel ("module.").
    ref = torchvision.models.resnet152()
    ref.layer4 = ref.layer4[:2]
    del ref.fc
    ref.load_state_dict({k: v for k, v in tv_resnet152_state.items()
                         if not k.startswith(("fc.", "layer4.2."))})
    torch.manual_seed(4)
    block = tv_resnet.Bottleneck(2048, 512)
    _randomise_bn(block, 5)
    fc = torch.nn.Linear(2048, 365)
    ckpt = {"epoch": 30, "best_acc1": 40.0, "its_ece": 9.0,
            "state_dict_model": {"module." + k: v for k, v in ref.state_dict().items()},
            "state_dict_block": {"module." + k: v for k, v in block.state_dict().items()},
            "state_dict_classifier": {"module.fc." + k: v for k, v in fc.state_dict().items()}}
    net = build_network(places_cfg(backbone="resnet152_fe", resume="best.pth.tar"), 365)
    load_network_state(net, ckpt, "mislas_places.pth.tar")
    x = torch.randn(2, 3, 64, 64)
    ref.eval(), block.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), _mislas_logits(ref, block, fc, x))
    # training mode: frozen backbone in eval mode, the block's BN on batch statistics
    block.train(), net.train()
    assert not net.model.training and net.block.training
    torch.testing.assert_close(net(x), _mislas_logits(ref, block, fc, x))
    torch.testing.assert_close(net.block.bn3.running_mean, block.bn3.running_mean)


@pytest.mark.slow
def test_places_torchvision_weights_lose_last_bottleneck_and_fc(tv_resnet152_state,
                                                                 monkeypatch):
    fake = types.SimpleNamespace(url="https://example.invalid/resnet152.pth",
                                 get_state_dict=lambda **kw: dict(tv_resnet152_state))
    monkeypatch.setattr(resnet_places, "torchvision_weights", lambda name: fake)
    net = build_network(places_cfg(backbone="resnet152_fe", not_pretrained=False), 365)
    want = {k: v for k, v in tv_resnet152_state.items()
            if not k.startswith(("fc.", "layer4.2."))}
    got = net.model.state_dict()
    assert set(got) == set(want)
    for k, v in got.items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_places_resnet50_pretrained_path_loads_strictly_without_layer4_2(tmp_path):
    # The published resnet50_fe for Places ([3, 4, 6, 3]) cannot take these weights strictly
    # once layer4.2 is deleted; ours ([3, 4, 6, 2]) takes every remaining tensor.
    torch.manual_seed(6)
    full = torchvision.models.resnet50().state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(full, path)
    net = build_network(places_cfg(backbone="resnet50_fe", not_pretrained=False,
                                   pretrained_path=str(path)), 365)
    got = net.model.state_dict()
    assert set(got) == {k for k in full if not k.startswith(("fc.", "layer4.2."))}
    for k, v in got.items():
        torch.testing.assert_close(v, full[k], rtol=0, atol=0, msg=k)
    published = ResNetFE(tv_resnet.Bottleneck, [3, 4, 6, 3], pool=False)
    with pytest.raises(RuntimeError, match="Missing key.*layer4.2"):
        published.load_state_dict(got)


def test_places_init_follows_mislas_build_order():
    # MiSLAS builds model, classifier (nn.Linear's init), block (PyTorch's default init)
    torch.manual_seed(7)
    net = build_network(places_cfg(), 7)
    torch.manual_seed(7)
    resnet_places.build_frozen_backbone("resnet10_fe")
    fc = torch.nn.Linear(512, 7)
    block = tv_resnet.Bottleneck(512, 128)
    torch.testing.assert_close(net.classifier.fc.weight, fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(net.classifier.fc.bias, fc.bias, rtol=0, atol=0)
    for k, v in block.state_dict().items():
        torch.testing.assert_close(net.block.state_dict()[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_places_training_updates_only_block_and_classifier():
    torch.manual_seed(0)
    cfg = places_cfg(lr=0.5)
    net = build_network(cfg, 7)
    opt = build_optimizer(cfg, net)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for m in (net.block, net.classifier) for p in m.parameters()}
    assert in_opt == trainable
    frozen = {k: v.clone() for k, v in net.model.state_dict().items()}
    block = {k: v.clone() for k, v in net.block.state_dict().items()}
    fc = net.classifier.fc.weight.detach().clone()
    net.train()
    assert not net.model.training and net.block.training
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in net.model.state_dict().items():  # weights and BN running stats
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(net.block.bn1.running_mean, block["bn1.running_mean"])
    assert not torch.equal(net.block.conv2.weight, block["conv2.weight"])
    assert not torch.equal(net.classifier.fc.weight, fc)

    ckpt = network_state(net)
    assert set(ckpt) == {"state_dict_model", "state_dict_block", "state_dict_classifier"}
    other = build_network(cfg, 7).eval()
    load_network_state(other, {k: {"module." + n: t for n, t in v.items()}
                               for k, v in ckpt.items()})
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x), net(x))


def _tv_resnet10(**kw):
    return tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], **kw)


@pytest.mark.parametrize("wrap", ["plain", "module", "no_fc"])
def test_places_pretrained_path_loads_weights(tmp_path, wrap):
    torch.manual_seed(1)
    state = _tv_resnet10().state_dict()
    saved = dict(state)
    if wrap == "module":
        saved = {"module." + k: v for k, v in state.items()}
    elif wrap == "no_fc":
        saved = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    net = build_network(places_cfg(not_pretrained=False, pretrained_path=str(path)), 7)
    for k, v in net.model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_places_pretrained_path_errors(tmp_path):
    wrong = tmp_path / "r11.pth"
    torch.save(tv_resnet.ResNet(tv_resnet.BasicBlock, [2, 1, 1, 1]).state_dict(), wrong)
    with pytest.raises(CheckpointError, match=r"r11.pth: weights do not fit backbone "
                                              r"resnet10_fe .*unexpected keys: layer1.1"):
        build_network(places_cfg(not_pretrained=False, pretrained_path=str(wrong)), 7)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk.pth: not a readable weights file"):
        build_network(places_cfg(not_pretrained=False, pretrained_path=str(junk)), 7)
    with pytest.raises(CheckpointError, match=r"'pretrained_path': file not found: .*nope.pth"):
        build_network(places_cfg(not_pretrained=False,
                                 pretrained_path=str(tmp_path / "nope.pth")), 7)


def test_places_offline_gives_config_error(tmp_path, monkeypatch):
    def offline(url, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # no cached weights
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as e:
        build_network(places_cfg(backbone="resnet50_fe", not_pretrained=False), 365)
    msg = str(e.value)
    assert "resnet50_fe" in msg and "resnet50-0676ba61.pth" in msg
    assert "set pretrained_path to a local weights file or not_pretrained True" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="torchvision has no ImageNet weights"):
        build_network(places_cfg(not_pretrained=False), 7)
    # a checkpoint to resume from replaces the backbone weights: nothing is fetched
    net = build_network(places_cfg(not_pretrained=False,
                                   resume=str(tmp_path / "ckpt.pth.tar")), 7)
    assert net.frozen_backbone


def test_places_needs_an_imagenet_resnet():
    from config import PLACES_BACKBONES, validate
    from models.resnet import RESNET_SPECS
    assert set(PLACES_BACKBONES) == set(RESNET_SPECS)
    validate(places_cfg(backbone="resnet152_fe"))
    with pytest.raises(ConfigError, match=r"dataset 'places' needs an ImageNet ResNet"):
        validate(places_cfg(backbone="resnet8_fe"))  # at load time, before any building
