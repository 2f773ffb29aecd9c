"""Choosing the tau of a post-hoc correction on held-out data (eval.py ``--tau-sweep``).

Kang et al. ("Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR
2020) pick the tau of the tau-normalised classifier on a validation set; Menon et al.
("Long-Tail Learning via Logit Adjustment", ICLR 2021) treat the tau of post-hoc logit
adjustment the same way. Choosing tau on the test set reports an optimistic number, so the
sweep selects on one split and reports on another:

* ``val``: the data set's validation list (ImageNet-LT's ``ImageNet_LT_val.txt`` and Places-LT's
  ``Places_LT_val.txt``, 20 images per class each); the report is on the whole test set;
* ``test-half``: for data sets without a validation split (CIFAR-LT, iNaturalist 2018, whose
  published "val" list is its test set, digits) a class-stratified random half of the test
  set (seeded with ``seed``); the report is on the other half only.

The network runs once per split: the tau-normalised logits are recomputed from the
classifier's inputs, the adjusted logits from the logits, for every tau of the grid. At every
tau they are the logits eval.py evaluates with that tau in ``eval_tau_norm`` /
``eval_logit_adjust``, so the chosen tau can be given to those keys as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from analysis.metrics import ClassRanges, classification_report
from engine.evaluation import PostHoc, check_tau_norm
from utils.errors import ConfigError

METHODS = ("tau_norm", "logit_adjust")
SELECT_ON = ("auto", "val", "test-half")
DEFAULT_GRID = "0:2:0.1"  # 0, 0.1, ..., 2.0 (Kang et al. plot tau over [0, 2])
MAX_GRID_POINTS = 10_001  # each tau is one pass over the logits: a bound on a typo's cost
COLUMNS = ("acc1", "many", "medium", "few", "ece")  # the metrics of each tau, in percent


def parse_grid(text: str) -> List[float]:
    """``'0:2:0.1'`` (start:stop:step, stop included) or ``'0,0.5,1'`` -> sorted distinct taus;
    one ConfigError line otherwise."""
    bad = ConfigError(f"--tau-grid {text!r}: accepted: comma-separated numbers ('0,0.5,1') or "
                      "start:stop:step with step > 0 ('0:2:0.1'), taus >= 0, at most "
                      f"{MAX_GRID_POINTS:,} points")
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not step > 0 or stop < start:
                raise bad
            span = np.floor((stop - start) / step + 1e-9)
            if not np.isfinite(span) or span + 1 > MAX_GRID_POINTS:
                shown = f"{int(span) + 1:,}" if np.isfinite(span) else "too many"
                raise ConfigError(f"--tau-grid {text!r} has {shown} points; accepted: at most "
                                  f"{MAX_GRID_POINTS:,} (a larger step or a shorter range)")
            n = int(span) + 1
            taus = [round(start + i * step, 10) for i in range(n)]
        else:
            taus = [float(p) for p in text.split(",")]
    except ValueError:
        raise bad from None
    if len(taus) > MAX_GRID_POINTS:
        raise bad
    if not taus or not all(np.isfinite(t) and t >= 0 for t in taus):
        raise bad
    return sorted(set(taus))


def corrected_logits(method: str, tau: float, logits: torch.Tensor, feats: torch.Tensor,
                     net: nn.Module, counts: Sequence[int]) -> torch.Tensor:
    """The logits of ``method`` at ``tau``, from a network's outputs on a split, exactly what
    eval.py computes with ``eval_tau_norm tau`` / ``eval_logit_adjust tau``
    (:class:`engine.evaluation.PostHoc`): ``tau_norm`` recomputes them from the classifier
    inputs ``feats`` with the rows w_j / ||w_j||^tau (no bias; LWS kept); ``logit_adjust``
    subtracts tau * log(training prior) from ``logits``. tau 0 is the network as it is (the
    keys' 'off'; for tau_norm that keeps the bias, which Kang et al.'s tau = 0 drops)."""
    if method == "logit_adjust":
        return PostHoc(0.0, tau, counts).logits(logits)
    if tau == 0:
        return logits
    w = net.classifier.fc.weight.detach().float().cpu()
    out = feats.float() @ (w / w.norm(dim=1, keepdim=True).pow(tau)).t()
    if getattr(net, "lws", None) is not None:
        out = out * net.lws.learned_norm.detach().float().cpu()
    return out


def stratified_halves(targets: torch.Tensor, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices of a selection half and a report half of a labelled set: within each class a
    random half (rounded down) selects, the rest reports; the same ``seed`` gives the same
    halves."""
    y = targets.cpu().numpy()
    key = np.random.default_rng(seed).random(y.size)
    order = np.lexsort((key, y))  # by class, randomly within a class
    sorted_y = y[order]
    first = np.searchsorted(sorted_y, sorted_y, side="left")  # where each one's class starts
    size = np.bincount(y)[sorted_y]
    rank = np.arange(y.size) - first
    select = rank < size // 2
    return (torch.from_numpy(np.sort(order[select])), torch.from_numpy(np.sort(order[~select])))


@dataclass
class Outputs:
    """A network's logits, classifier inputs and targets on one split."""

    logits: torch.Tensor
    feats: torch.Tensor
    target: torch.Tensor

    def subset(self, idx: torch.Tensor) -> "Outputs":
        return Outputs(self.logits[idx], self.feats[idx], self.target[idx])


@dataclass
class SweepResult:
    """What a sweep found: one row of selection metrics per tau, the chosen tau (the best
    selection Acc@1; ties go to the smaller tau) and the report split's metrics with it and
    without any correction."""

    method: str
    select_on: str  # 'val' | 'test-half'
    n_select: int
    n_report: int
    rows: List[Dict[str, float]] = field(default_factory=list)
    tau: float = 0.0
    report: dict = field(default_factory=dict)  # metrics at the chosen tau
    uncorrected: dict = field(default_factory=dict)  # metrics of the network as it is


def run_sweep(method: str, grid: Sequence[float], select: Outputs, report: Outputs,
              net: nn.Module, counts: Sequence[int], ranges: ClassRanges, select_on: str
              ) -> SweepResult:
    """Scores every tau of ``grid`` on ``select`` and reports the best one on ``report``."""
    if method not in METHODS:
        raise ConfigError(f"--tau-sweep {method!r}: accepted: {' | '.join(METHODS)}")
    if method == "tau_norm":
        check_tau_norm(net)
    res = SweepResult(method, select_on, int(select.target.numel()),
                      int(report.target.numel()))
    for tau in grid:
        z = corrected_logits(method, tau, select.logits, select.feats, net, counts)
        m = classification_report(z, select.target, ranges)
        res.rows.append({"tau": float(tau), **{k: float(m[k]) for k in COLUMNS}})
    best = max(res.rows, key=lambda r: (r["acc1"], -r["tau"]))
    res.tau = best["tau"]
    z = corrected_logits(method, res.tau, report.logits, report.feats, net, counts)
    res.report = classification_report(z, report.target, ranges)
    res.uncorrected = classification_report(report.logits, report.target, ranges)
    return res


def resolve_select_on(select_on: str, has_val: bool, dataset: str) -> str:
    """``auto`` -> ``val`` when the data set has a validation split, else ``test-half``;
    ``val`` without one is a ConfigError line."""
    if select_on not in SELECT_ON:
        raise ConfigError(f"--select-on {select_on!r}: accepted: {' | '.join(SELECT_ON)}")
    if select_on == "auto":
        return "val" if has_val else "test-half"
    if select_on == "val" and not has_val:
        raise ConfigError(f"--select-on val: data set {dataset!r} has no validation split "
                          "(ImageNet-LT and Places-LT have one: key 'val_list'); use "
                          "--select-on test-half")
    return select_on


def format_table(res: SweepResult) -> str:
    """A markdown table of the sweep, the chosen row marked."""
    lines = [f"| tau | {' | '.join(COLUMNS)} |", "|" + "---:|" * (len(COLUMNS) + 1)]
    for r in res.rows:
        mark = " (chosen)" if r["tau"] == res.tau else ""
        lines.append(f"| {r['tau']:g}{mark} | "
                     + " | ".join(f"{r[k]:.2f}" for k in COLUMNS) + " |")
    return "\n".join(lines)


def as_json(res: SweepResult, extra: Optional[dict] = None) -> dict:
    """The result as plain JSON values (the report folder's ``tau_sweep_<method>.json``)."""
    keep = ("acc1", "acc5", "many", "medium", "few", "ece", "mce", "num_samples")
    return {"method": res.method, "select_on": res.select_on, "n_select": res.n_select,
            "n_report": res.n_report, "tau": res.tau, "rows": res.rows,
            "report": {k: res.report[k] for k in keep if k in res.report},
            "uncorrected": {k: res.uncorrected[k] for k in keep if k in res.uncorrected},
            **(extra or {})}
