"""Stage 2 (train_stage2.py, engine/stage2.py): MiSLAS's recipe and the decoupled baselines.

Here: the in-process training and evaluation runs; the rest in tests/unit/test_stage2.py."""
import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from config import load_config
from engine import commands
from engine.evaluation import PostHoc, TauNormalised
from engine.stage2 import Stage2Trainer
from tests.fixtures import DIGITS_CE, ROOT, only_run_dir, read_metrics, signal_after_step
from utils.checkpoint import load_checkpoint
from utils.comm import DistInfo

S2_MISLAS = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_mislas.yaml")
S2_CRT = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_crt.yaml")
S2_LWS = os.path.join(ROOT, "config", "digits", "digits_imb005_stage2_lws.yaml")
FAST = ["num_epochs", "2", "print_freq", "3"]
CPU = DistInfo(False, 0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A 2-epoch cross-entropy digits run: its checkpoint is the stage-2 start."""
    out = tmp_path_factory.mktemp("stage1")
    assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(out), *FAST]) == 0
    return os.path.join(only_run_dir(str(out)), "ckps", "current.pth.tar")


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def weights(path):
    ckpt = load_checkpoint(path)
    return {part: ckpt[f"state_dict_{part}"] for part in ("model", "classifier", "lws_model")
            if f"state_dict_{part}" in ckpt}


def run_stage2(cfg, out, stage1, *opts):
    assert commands.train_stage2(["--cfg", cfg, "output_dir", str(out), "resume", stage1, *FAST,
                              *opts]) == 0
    return only_run_dir(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("shift_bn", [True, False])
def test_frozen_backbone_is_bit_identical_and_bn_moves_only_with_shift_bn(stage1, tmp_path,
                                                                           shift_bn):
    run = run_stage2(S2_MISLAS, tmp_path, stage1, "shift_bn", str(shift_bn))
    before, after = weights(stage1), weights(os.path.join(run, "ckps", "current.pth.tar"))
    for k, v in before["model"].items():
        if "running_" in k or "num_batches_tracked" in k:
            moved = not torch.equal(v, after["model"][k])
            assert moved == shift_bn, k
        else:  # conv and BatchNorm weights: frozen
            assert torch.equal(v, after["model"][k]), k
    assert not torch.equal(before["classifier"]["fc.weight"], after["classifier"]["fc.weight"])
    assert not torch.equal(after["lws_model"]["learned_norm"], torch.ones(1, 10))


def bn_statistics_moved(before, after):
    """Per state key of the backbone: True where a BatchNorm running statistic changed; every
    other entry (conv and BatchNorm weights) must be bit-identical."""
    moved = {}
    for k, v in before.items():
        if "running_" in k or "num_batches_tracked" in k:
            moved[k] = not torch.equal(v, after[k])
        else:
            assert torch.equal(v, after[k]), k
    return moved


@pytest.mark.slow
@pytest.mark.parametrize("cfg,method,shift_bn,moves", [
    (S2_CRT, "crt", "True", True), (S2_LWS, "lws", "True", True),
    (S2_CRT, "crt", "False", False), (S2_LWS, "lws", "False", False),
])
def test_crt_and_lws_move_the_frozen_backbones_statistics_as_kang_et_al(
        stage1, tmp_path, cfg, method, shift_bn, moves):
    """classifier-balancing run_networks.py: every network in train mode each epoch, the fixed
    feature model only loses requires_grad; its weights stay bit-identical."""
    run = run_stage2(cfg, tmp_path, stage1, "shift_bn", shift_bn)
    before, after = weights(stage1), weights(os.path.join(run, "ckps", "current.pth.tar"))
    moved = bn_statistics_moved(before["model"], after["model"])
    assert moved and all(v == moves for v in moved.values()), moved
    if method == "lws":
        for k, v in before["classifier"].items():
            assert torch.equal(v, after["classifier"][k]), k


def test_tau_normalisation_updates_nothing(stage1):
    from analysis.metrics import class_ranges
    from datasets import build_data
    from datasets.loader import eval_loader
    from engine.evaluation import evaluate
    from models import build_network
    from utils.checkpoint import load_network_state
    cfg = load_config(DIGITS_CE, ["eval_tau_norm", "1.0"])
    data = build_data(cfg)
    net = build_network(cfg, 10, 1)
    load_network_state(net, load_checkpoint(stage1), stage1)
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    loader = eval_loader(cfg, data, "test", torch.device("cpu"), 0, 1)
    evaluate(net, loader, torch.device("cpu"), class_ranges(cfg, data.cls_num_list),
             posthoc=PostHoc.from_config(cfg, data.cls_num_list))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


@pytest.mark.slow
def test_lws_method_trains_only_the_weight_scaling(stage1, tmp_path):
    run = run_stage2(S2_MISLAS, tmp_path, stage1, "stage2_method", "lws", "shift_bn", "False")
    before, after = weights(stage1), weights(os.path.join(run, "ckps", "current.pth.tar"))
    for part in ("model", "classifier"):
        for k, v in before[part].items():
            assert torch.equal(v, after[part][k]), (part, k)
    assert not torch.equal(after["lws_model"]["learned_norm"], torch.ones(1, 10))


def test_crt_starts_from_a_reinitialised_classifier(stage1):
    cfg = load_config(S2_CRT, ["resume", stage1], stage=2)
    trainer = Stage2Trainer(cfg, CPU)
    assert trainer.resolve_resume() == ""  # a stage-1 checkpoint: start, not resume
    trainer.prepare()
    net = trainer.net
    before = weights(stage1)
    assert torch.equal(net.model.conv1.weight, before["model"]["conv1.weight"])
    assert not torch.equal(net.classifier.fc.weight, before["classifier"]["fc.weight"])
    # Kang et al.'s cRT: the backbone's BatchNorm statistics move (shipped config shift_bn True)
    assert net.lws is None and net.frozen == ("model",) and net.shift_bn == ("model",)
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["classifier"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.classifier.parameters()}


def test_optimizer_groups_and_schedule_are_mislas(stage1):
    cfg = load_config(S2_MISLAS, ["resume", stage1], stage=2)
    trainer = Stage2Trainer(cfg, CPU)
    trainer.resolve_resume()
    trainer.prepare()
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["classifier", "lws"]
    for epoch in range(cfg.num_epochs):
        lr = trainer.set_lr(epoch)
        # MiSLAS train_stage2.py adjust_learning_rate: cosine, classifier x lr_factor
        want = 0.5 * cfg.lr * (1 + math.cos(epoch / cfg.num_epochs * math.pi))
        assert lr == pytest.approx(want, rel=1e-12)
        assert groups[0]["lr"] == pytest.approx(cfg.lr_factor * want, rel=1e-12)
        assert groups[1]["lr"] == pytest.approx(want, rel=1e-12)
        assert all(g["weight_decay"] == cfg.weight_decay for g in groups)


def test_class_aware_epoch_is_mislas_length_balanced_and_disjoint_across_ranks(stage1):
    cfg = load_config(S2_MISLAS, ["resume", stage1, "batch_size", "32"], stage=2)
    shares = []
    for rank in range(2):
        trainer = Stage2Trainer(cfg, DistInfo(False, rank, 2, 0, torch.device("cpu")))
        loader = trainer.build_train_loader()
        n = len(trainer.data.train)
        # MiSLAS: ceil(N / batch) + 1 steps (the loop breaks once i > ceil(N / batch))
        assert len(loader) == math.ceil(n / 32) + 1
        loader.sampler.set_epoch(3)
        shares.append(list(loader.sampler.positions()))
        targets = trainer.data.train.targets
    assert set(shares[0]).isdisjoint(shares[1]) and len(shares[0]) == len(shares[1])
    # class frequencies over many epochs: balanced although the data are long-tailed
    trainer = Stage2Trainer(cfg, CPU)
    loader = trainer.build_train_loader()
    seen = []
    for epoch in range(30):
        loader.sampler.set_epoch(epoch)
        seen += [int(targets[i]) for i in loader.sampler.indices()]
    freq = np.bincount(seen, minlength=10) / len(seen)
    assert np.abs(freq - 0.1).max() < 0.02, freq
    assert np.bincount(targets, minlength=10).max() / len(targets) > 0.25  # the data are not


@pytest.mark.slow
def test_stage2_run_logs_and_eval_reproduces_them(stage1, tmp_path, capsys):
    run = run_stage2(S2_MISLAS, tmp_path, stage1)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    assert ckpt["stage"] == 2 and "state_dict_lws_model" in ckpt
    capsys.readouterr()
    assert commands.evaluate(["--json", "--no-report", "--no-nc", "--cfg", S2_MISLAS, "resume",
                             os.path.join(run, "ckps", "current.pth.tar")]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("acc1", "acc5", "many", "medium", "few", "ece"):
        assert m[k] == pytest.approx(rows[-1][k], abs=1e-9), k


@pytest.mark.slow
def test_resume_inside_stage2_is_exact(stage1, tmp_path, monkeypatch):
    base = tmp_path / "base"
    opts = ["num_epochs", "3"]
    run_stage2(S2_MISLAS, base, stage1, *opts)
    signal_after_step(monkeypatch, 12)  # SIGTERM during step 3 of epoch 2
    cut = tmp_path / "cut"
    args = ["--cfg", S2_MISLAS, "output_dir", str(cut), "resume", stage1, *FAST, *opts]
    assert commands.train_stage2(args) == 128 + signal.SIGTERM
    monkeypatch.undo()
    run = only_run_dir(str(cut))
    ckpt = load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))
    assert (ckpt["stage"], ckpt["epoch"]) == (2, 1) and ckpt["iteration"] > 0
    assert commands.train_stage2(args[:-len(opts) - len(FAST) - 2] + ["resume", "auto", *FAST,
                                                                     *opts]) == 0
    assert only_run_dir(str(cut)) == run  # continued in its own folder
    assert strip(read_metrics(run)) == strip(read_metrics(only_run_dir(str(base))))
    a = weights(os.path.join(run, "ckps", "current.pth.tar"))
    b = weights(os.path.join(only_run_dir(str(base)), "ckps", "current.pth.tar"))
    for part in a:
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


@pytest.mark.slow
def test_mislas_format_stage1_checkpoint_starts_stage2(stage1, tmp_path):
    """A checkpoint as MiSLAS / the ARB-Loss code saves it: DataParallel 'module.' prefixes,
    only the reference keys (no config, no stage)."""
    ck = load_checkpoint(stage1)
    mislas = {"epoch": ck["epoch"], "best_acc1": torch.tensor(ck["best_acc1"]),
              "its_ece": ck["its_ece"],
              **{f"state_dict_{p}": {f"module.{k}": v for k, v in ck[f"state_dict_{p}"].items()}
                 for p in ("model", "classifier")}}
    path = str(tmp_path / "mislas_stage1.pth.tar")
    torch.save(mislas, path)
    run = run_stage2(S2_MISLAS, tmp_path / "out", path, "num_epochs", "1")
    assert len(read_metrics(run)) == 1


@pytest.mark.slow
def test_missing_stage1_checkpoint_and_stage_mismatch_are_one_line(tmp_path, capsys):
    cases = [([S2_MISLAS], "key 'resume' is empty: train_stage2.py starts from a stage-1 "
              "checkpoint"),
             ([S2_MISLAS, "resume", str(tmp_path / "no.pth.tar")], "checkpoint not found"),
             ([S2_MISLAS, "resume", "auto"], "resume auto: no earlier stage-2 run"),
             ([DIGITS_CE], "train_stage2.py needs a stage-2 config")]
    for args, match in cases:
        with pytest.raises(SystemExit) as e:
            commands.train_stage2(["--cfg", *args, "output_dir", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and match in err[0], err
    with pytest.raises(SystemExit) as e:
        commands.train_stage1(["--cfg", S2_MISLAS, "--dry-run"])
    assert e.value.code == 2 and "run it with train_stage2.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_posthoc_tau_norm_and_logit_adjustment_against_their_formulas(stage1):
    from datasets import build_data
    from models import build_network
    from utils.checkpoint import load_network_state
    cfg = load_config(DIGITS_CE)
    data = build_data(cfg)
    net = build_network(cfg, 10, 1)
    load_network_state(net, load_checkpoint(stage1), stage1)
    net.eval()
    x = torch.stack([data.test[i][0] for i in range(20)])
    w = net.classifier.fc.weight.detach()
    with torch.no_grad():
        h = net.classifier.embed(net.features(x))
        for tau in (0.5, 1.0):
            # Kang et al. 2020: rows w_j / ||w_j||^tau, no bias
            want = h @ (w / w.norm(dim=1, keepdim=True) ** tau).t()
            torch.testing.assert_close(TauNormalised(net, tau)(x), want)
    counts = data.cls_num_list
    z = torch.randn(6, 10)
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    got = PostHoc(0.0, 0.7, counts).logits(z)
    torch.testing.assert_close(got, (z.double() - 0.7 * prior.log()).float())


@pytest.fixture(scope="module")
def stage1_heads(tmp_path_factory):
    """2-epoch digits runs with a cosine head (LDAM) and an ETF head (dot regression)."""
    out = {}
    for loss in ("ldam", "dr"):
        folder = tmp_path_factory.mktemp(f"stage1_{loss}")
        assert commands.train_stage1(["--cfg", DIGITS_CE, "output_dir", str(folder), "loss", loss,
                                  *FAST]) == 0
        out[loss] = os.path.join(only_run_dir(str(folder)), "ckps", "current.pth.tar")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("loss,kind", [("ldam", "cosine"), ("dr", "etf")])
def test_cosine_and_etf_checkpoints_through_eval_and_stage2(stage1_heads, loss, kind,
                                                            tmp_path, capsys):
    path = stage1_heads[loss]
    ckpt = load_checkpoint(path)
    assert ckpt["classifier"] == kind
    run_rows = read_metrics(os.path.dirname(os.path.dirname(path)))
    # eval.py with the plain cross-entropy yaml (classifier auto): the checkpoint's head
    capsys.readouterr()
    assert commands.evaluate(["--json", "--cfg", DIGITS_CE, "resume", path,
                             "--out", str(tmp_path / "report")]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("acc1", "many", "medium", "few", "ece"):
        assert m[k] == pytest.approx(run_rows[-1][k], abs=1e-9), k
    rep = json.load(open(tmp_path / "report" / "report.json"))
    assert [c["weight_norm"] for c in rep["classes"]] == pytest.approx([1.0] * 10, abs=1e-5)
    assert rep["neural_collapse"] is not None
    # tau-normalisation is refused with one line; logit adjustment works
    for extra in (["eval_tau_norm", "1.0"], ["--tau-sweep", "tau_norm"],
                  ["classifier", "linear"]):
        with pytest.raises(SystemExit) as e:
            commands.evaluate(["--no-report", "--cfg", DIGITS_CE, "resume", path, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1, err
    assert commands.evaluate(["--no-report", "--cfg", DIGITS_CE, "resume", path,
                             "--tau-sweep", "logit_adjust", "--tau-grid", "0,1"]) == 0
    # cRT re-initialises a head of the same kind (an ETF keeps its fixed ETF)
    cfg = load_config(S2_CRT, ["resume", path], stage=2)
    trainer = Stage2Trainer(cfg, CPU)
    trainer.resolve_resume()
    trainer.prepare()
    head = trainer.net.classifier
    assert head.kind == kind
    stage1_head = ckpt["state_dict_classifier"]
    if kind == "etf":
        assert torch.equal(head.fc.weight, stage1_head["fc.weight"])
        assert torch.equal(head.BN_H.running_mean, torch.zeros(64))  # a fresh BatchNorm
    else:
        assert not torch.equal(head.fc.weight.detach(), stage1_head["fc.weight"])
    run = run_stage2(S2_CRT, tmp_path / "crt", path, "num_epochs", "1")
    assert load_checkpoint(os.path.join(run, "ckps", "current.pth.tar"))["classifier"] == kind
