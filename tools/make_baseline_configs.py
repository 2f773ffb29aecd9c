"""Write the shipped CIFAR-LT baseline configs, each as its authors' code runs it.

    python tools/make_baseline_configs.py [--out DIR]      # default: config/ (the shipped files)

For CIFAR-10-LT and CIFAR-100-LT at imbalance factors 100, 50 and 10 (``imb001``, ``imb002``,
``imb01``) it writes ``config/<data set>/<data set>_<imb>_<baseline>.yaml`` for the baselines
of :data:`BASELINES`. Every file starts with a header naming the paper and repository whose
recipe it follows and every value that differs from the ARB-Loss config of the same data set
and imbalance (``<data set>_<imb>_arbloss.yaml``, the published one), whose data keys (data set,
path, class ranges, workers) it copies. tests/test_baseline_configs.py checks that the shipped
files are what this script writes, and the recipes value by value against the published code.
Then ``python tools/sweep.py --cfg config/cifar100/cifar100_imb001_*.yaml --seeds 0 1 2`` is the
comparison table (the sweep skips the stage-2 file the pattern also matches).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATASETS = ("cifar10", "cifar100")
IMBALANCES = ("imb001", "imb002", "imb01")

# LDAM-DRW's CIFAR recipe (github.com/kaidic/LDAM-DRW, cifar_train.py): 200 epochs, batch 128,
# SGD lr 0.1 momentum 0.9 weight decay 2e-4, linear warm-up over 5 epochs, lr x0.01 after epoch
# 160 and x0.0001 after 180 (adjust_learning_rate, 1-based epochs), no mixup. Cui et al.'s
# class-balanced loss uses the same schedule (CVPR 2019, Sec. 5.2).
LDAM_DRW_RECIPE = {"lr": 0.1, "batch_size": 128, "weight_decay": 2e-4, "num_epochs": 200,
                   "momentum": 0.9, "cos": False, "mixup": False, "alpha": 1.0,
                   "warmup_epochs": 5, "lr_steps": [160, 180], "lr_factors": [0.01, 0.0001]}
LDAM_DRW = "Cao et al., NeurIPS 2019, github.com/kaidic/LDAM-DRW (cifar_train.py)"

# Yang et al.'s CIFAR recipe (github.com/NeuralCollapseApplications/ImbalancedLearning,
# config/cifar*/Res_cifar*_imb*_ETF_DR.yaml, train.py adjust_learning_rate): as MiSLAS's stage 1,
# mixup alpha 1, x0.1 after epoch 160 and x0.01 after 180.
ETF_DR_RECIPE = {"lr": 0.1, "batch_size": 128, "weight_decay": 2e-4, "num_epochs": 200,
                 "momentum": 0.9, "cos": False, "mixup": True, "alpha": 1.0,
                 "warmup_epochs": 5, "lr_steps": [160, 180]}
ETF_DR = ("Yang et al., NeurIPS 2022, github.com/NeuralCollapseApplications/ImbalancedLearning "
          "(train.py, config/cifar*/Res_cifar*_imb*_ETF_DR.yaml)")


def _ldam_drw_note(paper: str, own: str) -> str:
    return (f"{paper}. Their own code's CIFAR recipe is not the one used here: {own}; this "
            "code base runs every re-weighting baseline on LDAM-DRW's common CIFAR-LT protocol "
            "instead, so that the loss is the only difference between them.")


# baseline -> (title, recipe source, recipe, loss keys, note). The note says where the recipe
# comes from when the loss's own authors trained differently.
BASELINES: Dict[str, Tuple[str, str, dict, dict, str]] = {
    "ce": ("cross-entropy", LDAM_DRW, LDAM_DRW_RECIPE, {"loss": "ce"},
           "LDAM-DRW's CE baseline: --loss_type CE --train_rule None."),
    "focal": ("focal loss (Lin et al., ICCV 2017)", LDAM_DRW, LDAM_DRW_RECIPE,
              {"loss": "focal", "focal_gamma": 1.0},
              "LDAM-DRW's focal baseline: --loss_type Focal, FocalLoss(gamma=1)."),
    "cb": ("class-balanced softmax cross-entropy (Cui et al., CVPR 2019)", LDAM_DRW,
           LDAM_DRW_RECIPE, {"loss": "cb", "cb_beta": 0.9999, "cb_base": "softmax"},
           "LDAM-DRW's re-weighting baseline: --loss_type CE --train_rule Reweight (weights "
           "(1 - beta) / (1 - beta^n_j), beta 0.9999, summing to C, from the first epoch)."),
    "ldam_drw": ("LDAM-DRW (Cao et al., NeurIPS 2019)", LDAM_DRW, LDAM_DRW_RECIPE,
                 {"loss": "ldam", "classifier": "cosine", "ldam_max_m": 0.5, "ldam_s": 30.0,
                  "drw_epoch": 160, "cb_beta": 0.9999},
                 "--loss_type LDAM --train_rule DRW: margins 0.5 / n_j^(1/4) scaled to a "
                 "largest of 0.5, scale 30, on the cosine classifier (NormedLinear, use_norm "
                 "for LDAM), class-balanced weights (beta 0.9999) from 0-based epoch 160 "
                 "(idx = epoch // 160)."),
    "balanced_softmax": (
        "Balanced Softmax (Ren et al., NeurIPS 2020)", LDAM_DRW, LDAM_DRW_RECIPE,
        {"loss": "balanced_softmax"},
        _ldam_drw_note("Cross-entropy on z + log n_j (training-set counts)",
                       "github.com/jiawei-ren/BalancedMetaSoftmax-Classification "
                       "config/CIFAR*_LT/balanced_softmax_imba200.yaml trains for 13,000 "
                       "iterations at batch 512, lr 0.05, weight decay 5e-4, cosine after an "
                       "800-iteration warm-up, at imbalance 200")),
    "logit_adjust": (
        "logit-adjusted loss (Menon et al., ICLR 2021)", LDAM_DRW, LDAM_DRW_RECIPE,
        {"loss": "logit_adjust", "la_tau": 1.0},
        _ldam_drw_note("Cross-entropy on z + tau log pi_j, tau 1",
                       "github.com/google-research/google-research logit_adjustment (main.py, "
                       "utils.py) trains 1,241 (CIFAR-10-LT) / 1,419 (CIFAR-100-LT) epochs at "
                       "batch 128 with Nesterov SGD, lr 0.1 warmed up per step to epoch 20 / "
                       "22, x0.1, x0.01, x0.001 at epochs 604 / 926 / 1,128 (691 / 1,059 / "
                       "1,290)")),
    "etf_dr": ("fixed simplex-ETF classifier + dot regression (Yang et al., NeurIPS 2022)",
               ETF_DR, ETF_DR_RECIPE,
               {"loss": "dr", "classifier": "etf", "dr_given_ew": True, "dr_reg_lambda": 0.0},
               "ETF_classifier True, reg_dot_loss True with their defaults GivenEw True, "
               "reg_lam 0, fix_bn False; CIFAR-100 on their resnet32_fe_c100 (128-d features, "
               "d >= K for the ETF)."),
}

# keys written, in this order, after the header
_DATA_KEYS = ("print_freq", "workers", "log_dir", "model_dir", "dataset", "data_path",
              "num_classes", "imb_factor", "backbone", "resume", "head_class_idx",
              "med_class_idx", "tail_class_idx", "deterministic", "mode")
_RECIPE_KEYS = ("lr", "batch_size", "weight_decay", "num_epochs", "momentum", "cos", "mixup",
                "alpha", "warmup_epochs", "lr_steps", "lr_factors")


def reference_config(dataset: str, imb: str, root: str = ROOT) -> dict:
    """The published ARB-Loss config of the same data set and imbalance, as raw yaml."""
    path = os.path.join(root, "config", dataset, f"{dataset}_{imb}_arbloss.yaml")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    # yaml 1.1 reads '2e-4' as a string (yacs decodes it): decode numbers the same way
    return {k: _number(v) for k, v in raw.items()}


def _number(v):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def baseline_values(dataset: str, imb: str, baseline: str, root: str = ROOT) -> dict:
    """Every key of the baseline config, in file order."""
    ref = reference_config(dataset, imb, root)
    _, _, recipe, loss_keys, _ = BASELINES[baseline]
    values = {"name": f"{dataset}_{imb}_{baseline}"}
    values.update({k: ref[k] for k in _DATA_KEYS})
    if baseline == "etf_dr" and dataset == "cifar100":
        values["backbone"] = "resnet32_fe_c100"
    values.update({k: recipe[k] for k in _RECIPE_KEYS if k in recipe})
    values.update(loss_keys)
    return values


def _effective_schedule(values: dict) -> Tuple[List[int], List[float]]:
    steps = list(values.get("lr_steps", [160, 240]))  # the default of config/defaults.py
    factors = list(values.get("lr_factors", []))
    return steps, factors or [float(f"1e-{k + 1}") for k in range(len(steps))]


def differences(values: dict, ref: dict) -> List[str]:
    """'key value (ARB-Loss: value)' for each key whose value differs from the ARB-Loss config
    (the loss flags and the schedule compared by what they mean)."""
    out = []
    ref_loss = "ARB-Loss, batch counts (arbloss True)"
    out.append(f"loss {values['loss']} (ARB-Loss config: {ref_loss})")
    for key in ("classifier", "backbone", "lr", "batch_size", "weight_decay", "num_epochs",
                "momentum", "cos", "mixup", "alpha", "warmup_epochs"):
        if key not in values:
            continue
        mine = values[key]
        # the ARB-Loss config leaves these at their defaults (a linear head, 5 warm-up epochs)
        theirs = {"classifier": "linear", "warmup_epochs": 5}.get(key, ref.get(key))
        if mine != theirs and not (key == "alpha" and not values.get("mixup")):
            out.append(f"{key} {mine} (ARB-Loss config: {theirs})")
    mine, theirs = _effective_schedule(values), _effective_schedule(ref)
    if mine != theirs:
        out.append("lr after " + ", ".join(f"epoch {s} x{f:g}" for s, f in zip(*mine))
                   + " (ARB-Loss config: " + ", ".join(f"epoch {s} x{f:g}"
                                                     for s, f in zip(*theirs)) + ")")
    return out


def _wrap(text: str, width: int = 98) -> List[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width - 2:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return lines + ([line] if line else [])


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, float):
        return repr(v) if "e" not in repr(v) else f"{v:g}"
    return str(v)


def render(dataset: str, imb: str, baseline: str, root: str = ROOT) -> str:
    """The text of one baseline config."""
    title, source, _, _, note = BASELINES[baseline]
    values = baseline_values(dataset, imb, baseline, root)
    ref = reference_config(dataset, imb, root)
    ratio = round(1 / ref["imb_factor"])
    name = {"cifar10": "CIFAR-10-LT", "cifar100": "CIFAR-100-LT"}[dataset]
    head = [f"Ours: {name}, imbalance factor {ratio} (imb_factor {ref['imb_factor']}): {title}.",
            f"Recipe of {source}. {note}",
            f"Generated by tools/make_baseline_configs.py; differs from {dataset}_{imb}_"
            "arbloss.yaml (the published ARB-Loss config, whose data keys it copies) in: "
            + "; ".join(differences(values, ref)) + "."]
    lines = [f"# {line}" for part in head for line in _wrap(part)]
    for key, v in values.items():
        if isinstance(v, list):
            lines.append(f"{key}: [{', '.join(_scalar(x) for x in v)}]")
        else:
            lines.append(f"{key}: {_scalar(v)}")
    return "\n".join(lines) + "\n"


def write_all(root: str = ROOT, out: Optional[str] = None) -> List[str]:
    """Write every baseline config under ``out`` (default: ``root``/config); their paths."""
    out = out or os.path.join(root, "config")
    paths = []
    for dataset in DATASETS:
        os.makedirs(os.path.join(out, dataset), exist_ok=True)
        for imb in IMBALANCES:
            for baseline in BASELINES:
                path = os.path.join(out, dataset, f"{dataset}_{imb}_{baseline}.yaml")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(render(dataset, imb, baseline, root))
                paths.append(path)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="make_baseline_configs.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="folder for <data set>/*.yaml (default: config/)")
    args = p.parse_args(argv)
    paths = write_all(out=args.out)
    print(f"wrote {len(paths)} configs under {args.out or os.path.join(ROOT, 'config')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
