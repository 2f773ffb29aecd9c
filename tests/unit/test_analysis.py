"""Neural-collapse metrics, the eval.py report folder and the trainer's epoch_analysis hook.

Here: the checks without a training loop or a process; the rest in
tests/integration/test_analysis.py."""
import math
import os

import numpy as np
import pytest
import torch

from analysis.neural_collapse import NC_KEYS, nc_analysis, nc_keys, nc_metrics
from engine import eval_cli
from tests.fixtures import DIGITS_CE

GROUPS = {"many": (0, 2), "medium": (2, 4), "few": (4, 5)}


def simplex_etf(c, d, scale, seed=0):
    """c x d rows forming a simplex ETF (centred, equal norms, cosines -1/(c-1))."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, c, generator=g, dtype=torch.float64)).Q
    return scale * (torch.eye(c, dtype=torch.float64) - 1.0 / c) @ u.T


# ----------------------------------------------------------------------------- NC metrics
def test_nc_perfect_simplex_etf_is_zero():
    etf = simplex_etf(5, 8, 3.0)
    counts = [7, 5, 3, 2, 1]  # imbalanced: the global mean must be the mean of class means
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    h = etf[y] + 1.5  # any common offset is removed by centring
    m = nc_metrics(h, y, 0.7 * etf, GROUPS)
    assert set(m) == set(nc_keys(tuple(GROUPS)))
    for k, v in m.items():
        if k.endswith("_few") and k.split("_")[0] in ("equinorm", "equiangular"):
            assert math.isnan(v), k  # one class: undefined
        else:
            assert v == pytest.approx(0.0, abs=1e-9), k


def test_nc_hand_computed_case():
    # Means (1,0), (0,1), (0,0): centred by (1/3, 1/3). Two samples per class at mu +- delta
    # with delta (e,0), (0,e), 0. Sigma_W = e^2/3 I, Sigma_B = [[2,-1],[-1,2]]/9, so
    # NC1 = tr(Sigma_W Sigma_B^-1) / 3 = (e^2/3 * 3 * 4) / 3 = 4 e^2 / 3.
    e = 0.1
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    delta = torch.tensor([[e, 0.0], [0.0, e], [0.0, 0.0]], dtype=torch.float64)
    h = torch.cat([mu + delta, mu - delta])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    m, mean_norms = nc_analysis(h, y, w, {"many": (0, 2), "few": (2, 3)})
    assert m["nc1"] == pytest.approx(4 * e * e / 3)
    norms = np.array([math.sqrt(5), math.sqrt(5), math.sqrt(2)]) / 3
    assert mean_norms.numpy() == pytest.approx(norms)
    assert m["equinorm_means"] == pytest.approx(norms.std() / norms.mean())
    wn = np.array([2.0, 1.0, math.sqrt(2)])
    assert m["equinorm_w"] == pytest.approx(wn.std() / wn.mean())
    # cos(m0, m1) = -4/5, cos(m0, m2) = cos(m1, m2) = -1/sqrt(10); target -1/2.
    assert m["equiangular_means"] == pytest.approx((2 * 0.3 + 4 * (0.5 - 10 ** -0.5)) / 6)
    # cos(w0, w1) = 0, cos(w0, w2) = cos(w1, w2) = -1/sqrt(2).
    assert m["equiangular_w"] == pytest.approx((2 * 0.5 + 4 * (0.5 ** 0.5 - 0.5)) / 6)
    cm = (mu - mu.mean(0)).numpy()
    assert m["nc3"] == pytest.approx(
        float(((w.numpy() / np.linalg.norm(w.numpy()) - cm / np.linalg.norm(cm)) ** 2).sum()))
    # Group "many" = classes 0, 1: Sigma_W = e^2/2 I, Sigma_B = [[5,-4],[-4,5]]/18,
    # NC1 = (e^2/2 * 2 * 10) / 2 = 5 e^2; the pair's cosine -4/5 against the 3-class -1/2.
    assert m["nc1_many"] == pytest.approx(5 * e * e)
    assert m["equinorm_means_many"] == pytest.approx(0.0, abs=1e-12)
    assert m["equiangular_means_many"] == pytest.approx(0.3)
    assert m["equiangular_w_many"] == pytest.approx(0.5)
    # Group "few" = class 2 alone: no within-class scatter, no pairs.
    assert m["nc1_few"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(m["equiangular_means_few"]) and math.isnan(m["equinorm_w_few"])


def direct_nc(h, y, w, classes, present):
    """Loop-based NC metrics of the class subset ``classes`` (numpy, float64)."""
    means = {c: h[y == c].mean(0) for c in present}
    mu_g = np.mean([means[c] for c in present], axis=0)
    k, d = len(classes), h.shape[1]
    sw, n = np.zeros((d, d)), 0
    for c in classes:
        for x in h[y == c]:
            v = x - means[c]
            sw += np.outer(v, v)
            n += 1
    sw /= n
    sb = sum(np.outer(means[c] - mu_g, means[c] - mu_g) for c in classes) / k
    out = {"nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / k}
    cm = np.array([means[c] - mu_g for c in classes])
    wg = w[classes]
    for name, x in (("means", cm), ("w", wg)):
        norms = np.linalg.norm(x, axis=1)
        out[f"equinorm_{name}"] = norms.std() / norms.mean()
        devs = [abs(x[i] @ x[j] / (norms[i] * norms[j]) + 1 / (len(present) - 1))
                for i in range(k) for j in range(k) if i != j]
        out[f"equiangular_{name}"] = float(np.mean(devs))
    out["nc3"] = ((wg / np.linalg.norm(wg) - cm / np.linalg.norm(cm)) ** 2).sum()
    return out


@pytest.mark.parametrize("c,d", [(9, 16), (12, 5)])  # Gram path (C <= d) and d x d pinv path
def test_nc_matches_direct_computation(c, d):
    rng = np.random.RandomState(c)
    y = np.concatenate([np.full(n, i) for i, n in enumerate(np.linspace(30, 3, c).astype(int))])
    y = y[y != c - 2]  # class c-2 has no training sample: left out everywhere
    h = rng.randn(c, d)[y] * 2 + rng.randn(len(y), d)
    w = rng.randn(c, d)
    ranges = {"many": (0, 3), "medium": (3, c - 4), "few": (c - 4, c)}
    got = nc_metrics(torch.from_numpy(h).float(), torch.from_numpy(y), torch.from_numpy(w),
                     ranges, chunk_size=7)  # chunks that cut across classes
    present = [i for i in range(c) if (y == i).any()]
    groups = {"all": present, **{g: [i for i in range(a, b) if i in present]
                                 for g, (a, b) in ranges.items()}}
    h32 = torch.from_numpy(h).float().double().numpy()  # the same float32 inputs
    for g, classes in groups.items():
        want = direct_nc(h32, y, w, classes, present)
        sfx = "" if g == "all" else f"_{g}"
        for k in NC_KEYS:
            assert got[k + sfx] == pytest.approx(want[k], rel=1e-7, abs=1e-10), (g, k)


def test_nc_empty_group_is_nan_and_shapes_are_checked():
    h, y, w = torch.randn(20, 4), torch.arange(20) % 4, torch.randn(4, 4)
    m = nc_metrics(h, y, w, {"many": (0, 4), "few": (4, 4)})
    assert all(math.isnan(m[k + "_few"]) for k in NC_KEYS)
    assert m["nc1_many"] == pytest.approx(m["nc1"])
    with pytest.raises(ValueError):
        nc_metrics(h, y, torch.randn(4, 5))


def test_eval_report_dir_rules(tmp_path):
    from config import get_cfg_defaults
    cfg = get_cfg_defaults()
    assert (eval_cli.default_report_dir("/r/run_1/ckps/model_best.pth.tar", cfg) ==
        "/r/run_1/eval_model_best")
    assert (eval_cli.default_report_dir("/d/cifar10_imb001.pth", cfg) ==
        "/d/eval_cifar10_imb001")
    # a corrected report gets a folder of its own (it replaced the plain one before)
    cfg.eval_tau_norm = 1.0
    assert (eval_cli.default_report_dir("/r/run_1/ckps/model_best.pth.tar", cfg) ==
        "/r/run_1/eval_model_best_tau_norm1")
    cfg.eval_tau_norm, cfg.eval_logit_adjust = 0.5, 1.25
    assert (eval_cli.default_report_dir("/d/x.pth.tar", cfg) ==
        "/d/eval_x_tau_norm0.5_logit_adjust1.25")


# ----------------------------------------------------------------------------- trainer hook
class _FakeTrainer:
    """What AnalysisHook reads from a trainer."""

    def __init__(self, cfg, writer):
        from analysis.metrics import class_ranges
        from datasets import build_data
        from datasets.loader import eval_loader
        from engine.evaluation import evaluate
        from models import build_network
        from utils.comm import DistInfo

        torch.manual_seed(0)
        self.cfg, self.writer = cfg, writer
        self.device = torch.device("cpu")
        self.dist = DistInfo(False, 0, 1, 0, self.device)
        self.data = build_data(cfg)
        self.ranges = class_ranges(cfg, self.data.cls_num_list)
        self.net = build_network(cfg, cfg.num_classes, self.data.in_channels)
        self.autocast = None
        self.metrics = evaluate(self.net, eval_loader(cfg, self.data, "test", self.device, 0, 1),
                                self.device, self.ranges)

    def run(self, hook, epoch, last=False):
        from engine.hooks import EpochRecord
        from engine.state import TrainState
        self.state = TrainState(epoch=epoch)
        record = EpochRecord(epoch, {}, last, metrics=self.metrics)
        hook.after_epoch(record)
        return record.row


def test_analysis_hook_logs_tensorboard_and_returns_nc(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from config import load_config
    from engine.hooks import AnalysisHook

    cfg = load_config(DIGITS_CE, ["nc_freq", "2", "plot_freq", "2"])
    writer = SummaryWriter(log_dir=str(tmp_path))
    fake = _FakeTrainer(cfg, writer)
    hook = AnalysisHook()
    hook.trainer = fake
    try:
        first = fake.run(hook, 1)
        second = fake.run(hook, 2)
        fake.writer = None
        third = fake.run(hook, 3, last=True)
    finally:
        writer.close()
    assert first == {}  # neither NC nor figures due at epoch 1, only the histogram
    assert set(second) == set(nc_keys()) and second == third  # same net, same features
    assert all(isinstance(v, float) for v in second.values()) and second["nc1"] > 0
    events = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert len(events) == 1 and os.path.getsize(tmp_path / events[0]) > 10_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    assert [e.step for e in acc.Histograms("classifier/row_norm")] == [1, 2]
    tags = set(acc.Tags()["images"])
    assert {"figures/reliability", "figures/per_class_accuracy", "figures/weight_norm"} <= tags
    assert [e.step for e in acc.Images("figures/reliability")] == [2]
