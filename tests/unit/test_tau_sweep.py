"""eval.py --tau-sweep (engine/tau_sweep.py): choosing a post-hoc tau on held-out data.

Here: the checks without a training loop or a process; the rest in
tests/processes/test_tau_sweep.py."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from analysis.metrics import class_ranges, classification_report
from config import get_cfg_defaults, load_config
from datasets import build_data
from engine import commands
from engine.evaluation import PostHoc, TauNormalised
from engine.tau_sweep import (
    Outputs,
    corrected_logits,
    parse_grid,
    resolve_select_on,
    run_sweep,
    stratified_halves,
)
from tests.fixtures import (
    DIGITS_CE,
    RANGES,
    ROOT,
    SMALL,
    random_net,
    save_network,
    write_image_tree,
)
from utils.errors import ConfigError, DataError

IMAGENET_CFG = os.path.join(ROOT, "config", "imagenet", "imagenet_resnet50.yaml")


# ------------------------------------------------------------------ parts, against definitions
def test_parse_grid():
    grid = parse_grid("0:2:0.1")
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 2.0
    assert np.allclose(grid, np.arange(21) / 10)
    assert parse_grid("1,0.5,0,0.5") == [0.0, 0.5, 1.0]
    assert parse_grid("0.3:0.3:1") == [0.3]
    for bad in ("a", "", "1:0:0.1", "0:1:0", "0:1", "-1,1", "nan", "0,inf"):
        with pytest.raises(ConfigError, match="accepted: comma-separated numbers.*at most "
                                              "10,001 points"):
            parse_grid(bad)
    # the cap is stated with the grid's own size
    assert len(parse_grid("0:1000:0.1")) == 10_001
    for big, n in (("0:1000:0.0001", "10,000,001"), ("0:1e9:1e-9", "1,000,000,000,000,000,001"),
                   ("0:1e300:1e-300", "too many")):
        with pytest.raises(ConfigError, match=f"has {n} points; accepted: at most 10,001"):
            parse_grid(big)
    with pytest.raises(ConfigError, match="at most 10,001 points"):
        parse_grid(",".join(str(i) for i in range(10_002)))


@pytest.mark.parametrize("lws", [False, True])
def test_corrected_logits_are_the_evaluation_corrections(lws):
    """The sweep's logits at tau equal eval's at that tau (eval_tau_norm / eval_logit_adjust,
    0 = off), and TauNormalised's (Kang et al.'s rows w_j / ||w_j||^tau, no bias) for tau > 0."""
    cfg = load_config(DIGITS_CE)
    net = random_net(cfg, 1, lws=lws)
    x = torch.randn(12, 1, 8, 8)
    counts = [50, 30, 20, 12, 8, 5, 4, 3, 3, 2]
    with torch.no_grad():
        logits, feats = net(x, return_features=True)
        for tau in (0.0, 0.5, 1.0, 1.7):
            got = corrected_logits("tau_norm", tau, logits, feats, net, counts)
            torch.testing.assert_close(got, PostHoc(tau, 0.0, counts).network(net)(x))
            if tau:
                w = net.classifier.fc.weight
                want = feats @ (w / w.norm(dim=1, keepdim=True) ** tau).t()
                if lws:
                    want = want * net.lws.learned_norm
                torch.testing.assert_close(got, want)
                torch.testing.assert_close(got, TauNormalised(net, tau)(x))
            else:
                assert torch.equal(got, logits)
            torch.testing.assert_close(
                corrected_logits("logit_adjust", tau, logits, feats, net, counts),
                PostHoc(0.0, tau, counts).logits(logits))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_halves_split_each_class_in_two(seed):
    rng = np.random.default_rng(seed)
    y = torch.from_numpy(rng.integers(0, 7, size=301))
    a, b = stratified_halves(y, seed)
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert sorted(a.tolist() + b.tolist()) == list(range(301))
    na, nb = (np.bincount(y[i].numpy(), minlength=7) for i in (a, b))
    n = np.bincount(y.numpy(), minlength=7)
    assert (na == n // 2).all() and (nb == n - n // 2).all()
    a2, _ = stratified_halves(y, seed)
    a3, _ = stratified_halves(y, seed + 10)
    assert torch.equal(a, a2) and not torch.equal(a, a3)


def test_run_sweep_picks_the_best_selection_accuracy_and_reports_it():
    """Logit adjustment on outputs made so that a known tau is best: the winner is the
    argmax of selection Acc@1 (ties: the smaller tau) and the report is that tau's metrics."""
    counts = [100, 40, 10, 4]
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    g = torch.Generator().manual_seed(0)
    target = torch.arange(4).repeat(50)
    # logits biased by exactly 1.0 x log prior: tau 1 undoes the bias
    clean = torch.randn(200, 4, generator=g) + 3.0 * torch.nn.functional.one_hot(target, 4)
    logits = (clean.double() + prior.log()).float()
    out = Outputs(logits, torch.zeros(200, 1), target)
    cfg = get_cfg_defaults()
    cfg.num_classes = 4
    ranges = class_ranges(cfg, counts)
    grid = [0.0, 0.5, 1.0, 1.5, 2.0]
    res = run_sweep("logit_adjust", grid, out, out, None, counts, ranges, "val")
    accs = [r["acc1"] for r in res.rows]
    best = max(accs)
    assert res.tau == grid[accs.index(best)] and best > accs[0]
    want = classification_report(PostHoc(0.0, res.tau, counts).logits(logits), target, ranges)
    assert res.report["acc1"] == want["acc1"] and res.report["few"] == want["few"]
    assert res.uncorrected["acc1"] == classification_report(logits, target, ranges)["acc1"]
    assert res.n_select == res.n_report == 200
    with pytest.raises(ConfigError, match="accepted: tau_norm | logit_adjust"):
        run_sweep("tau", grid, out, out, None, counts, ranges, "val")


def test_select_on():
    assert resolve_select_on("auto", True, "imagenet") == "val"
    assert resolve_select_on("auto", False, "cifar10") == "test-half"
    assert resolve_select_on("test-half", True, "imagenet") == "test-half"
    with pytest.raises(ConfigError, match="data set 'cifar10' has no validation split"):
        resolve_select_on("val", False, "cifar10")


# ------------------------------------------------------------------ the validation list
def write_val_list(root, per_class=3):
    """ImageNet_LT_val.txt naming some of the training images (labels as in the lists)."""
    lines = [f"train/{c}/{i}.jpg {c}" for c in (0, 1, 2, 3) for i in range(per_class)
             if not (c == 0 and i >= 2)] + ["train/4/0.jpg 4"]
    with open(os.path.join(root, "ImageNet_LT_val.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def imagelist_cfg(root, **kw):
    cfg = get_cfg_defaults()
    cfg.dataset, cfg.data_path, cfg.num_classes = "imagenet", root, 5
    cfg.image_size, cfg.resize_size = 32, 36
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_validation_list_is_optional_and_remapped(tmp_path):
    root = write_image_tree(str(tmp_path / "tree"))
    assert build_data(imagelist_cfg(root)).val is None  # no val list: none, no error
    lines = write_val_list(root)
    data = build_data(imagelist_cfg(root))
    order = data.extra["class_ids"]  # original id of each remapped class
    assert len(data.val) == len(lines)
    assert [order[t] for t in data.val.targets] == [int(ln.split()[1]) for ln in lines]
    assert data.val[0][0].shape == data.test[0][0].shape  # test transforms
    with pytest.raises(DataError, match="validation list \\(key 'val_list'\\) 'nope.txt' "
                                        "not found"):
        build_data(imagelist_cfg(root, val_list="nope.txt"))


# ------------------------------------------------------------------ eval.py end to end
@pytest.fixture(scope="module")
def imagelist_run(tmp_path_factory):
    """An image tree with a validation list, and a random-weight checkpoint for it."""
    tmp = tmp_path_factory.mktemp("sweep")
    root = write_image_tree(str(tmp / "tree"), train_counts={0: 2, 1: 9, 2: 5, 3: 4, 4: 1},
                            test_per_class=6)
    write_val_list(root)
    cfg = imagelist_cfg(root, backbone="resnet10_fe")
    return root, save_network(random_net(cfg, 3), tmp / "rand.pth.tar")


def common_args(root):
    return ["--cfg", IMAGENET_CFG, "data_path", root, "num_classes", "5", *RANGES, "backbone",
            "resnet10_fe", *SMALL, "workers", "0", "batch_size", "8"]


@pytest.mark.parametrize("method,key", [("tau_norm", "eval_tau_norm"),
                                        ("logit_adjust", "eval_logit_adjust")])
def test_sweep_on_the_validation_list_reports_what_eval_reports_at_that_tau(
        imagelist_run, method, key, tmp_path, capsys):
    root, ckpt = imagelist_run
    args = common_args(root)
    out = tmp_path / "rep"
    assert commands.evaluate([*args, "resume", ckpt, "--tau-sweep", method, "--tau-grid",
                             "0:2:0.25", "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["select_on"] == "val" and r["n_select"] == 12 and r["n_report"] == 30
    assert [row["tau"] for row in r["rows"]] == [i / 4 for i in range(9)]
    best = max(row["acc1"] for row in r["rows"])
    assert r["tau"] == min(row["tau"] for row in r["rows"] if row["acc1"] == best)
    assert r["checkpoint_epoch"] == 7
    # the report is the whole test set at the chosen tau: what eval.py reports with that key
    # (also with a one-tau grid, so that a tau > 0 is compared whatever wins above)
    assert commands.evaluate([*args, "resume", ckpt, "--tau-sweep", method, "--tau-grid",
                             "0.75", "--no-report", "--json"]) == 0
    r075 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r075["tau"] == 0.75
    for got in (r, r075):
        assert commands.evaluate([*args, "resume", ckpt, key, str(got["tau"]), "--json",
                                 "--no-report", "--no-nc"]) == 0
        m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for k in ("acc1", "many", "medium", "few", "ece"):
            assert got["report"][k] == pytest.approx(m[k], abs=1e-6), k
    assert r075["report"]["ece"] != pytest.approx(r075["uncorrected"]["ece"], abs=1e-3)
    assert commands.evaluate([*args, "resume", ckpt, "--json", "--no-report", "--no-nc"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["uncorrected"]["acc1"] == pytest.approx(plain["acc1"], abs=1e-6)
    saved = json.loads((out / f"tau_sweep_{method}.json").read_text())
    assert saved["tau"] == r["tau"] and saved["rows"] == r["rows"]
    with open(out / f"tau_sweep_{method}.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["tau"]) for row in rows] == [i / 4 for i in range(9)]
    assert [float(row["tau"]) for row in rows if row["chosen"] == "1"] == [r["tau"]]


def test_sweep_without_a_validation_split_uses_half_of_the_test_set(tmp_path, capsys):
    cfg = load_config(DIGITS_CE)
    ckpt = save_network(random_net(cfg, 1), tmp_path / "r.pth.tar")
    assert commands.evaluate(["--cfg", DIGITS_CE, "resume", ckpt, "--tau-sweep", "logit_adjust",
                             "--tau-grid", "0,1"]) == 0
    text = capsys.readouterr().out
    assert "logit_adjust sweep, selected on half of the test set (250 images)" in text
    assert "on the other half (250 images)" in text and "| 1" in text
    assert (tmp_path / "eval_r" / "tau_sweep_logit_adjust.csv").is_file()


@pytest.mark.parametrize("extra,match", [
    (["--tau-grid", "0:x:1"], "--tau-grid '0:x:1': accepted: comma-separated numbers"),
    (["--select-on", "val"], "data set 'digits' has no validation split"),
    (["eval_tau_norm", "1.0"], "--tau-sweep chooses tau itself: set keys 'eval_tau_norm'"),
])
def test_sweep_user_errors_are_one_line(tmp_path, capsys, extra, match):
    cfg = load_config(DIGITS_CE)
    ckpt = save_network(random_net(cfg, 1), tmp_path / "r.pth.tar")
    with pytest.raises(SystemExit) as e:
        commands.evaluate(["--cfg", DIGITS_CE, "resume", ckpt, "--tau-sweep", "tau_norm", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and match in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["r.pth.tar"]
