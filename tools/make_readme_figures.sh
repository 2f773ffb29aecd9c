#!/usr/bin/env bash
# Regenerate the README's analysis figures (docs/figures/digits_*.png) from the offline
# digits demo: train cross-entropy and ARB-Loss, evaluate both best checkpoints, compare.
#
#   tools/make_readme_figures.sh [WORK_DIR]      # default WORK_DIR: /tmp/readme_runs
#
# Takes a few minutes on a CPU. Run folders go under WORK_DIR (the newest run of each name is
# used); the numbers to quote in the README are printed by eval.py and compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/readme_runs}
CE_CFG=config/digits/digits_imb005_ce.yaml
ARB_CFG=config/digits/digits_imb005_arbloss.yaml

python train_stage1.py --cfg "$CE_CFG" output_dir "$WORK"
python train_stage1.py --cfg "$ARB_CFG" output_dir "$WORK"
CE=$(ls -td "$WORK"/digits_imb005_ce_*/ | head -n 1)
ARB=$(ls -td "$WORK"/digits_imb005_arbloss_*/ | head -n 1)
CE=${CE%/}
ARB=${ARB%/}

python eval.py --cfg "$CE_CFG" resume "$CE/ckps/model_best.pth.tar"
python eval.py --cfg "$ARB_CFG" resume "$ARB/ckps/model_best.pth.tar"

mkdir -p docs/figures
python tools/compare.py "$CE" "$ARB" --labels CE,ARB-Loss \
    --out docs/figures/digits_acc1_curves.png --per-class-out docs/figures/digits_per_class.png
cp "$CE/eval_model_best/reliability.png" docs/figures/digits_ce_reliability.png
cp "$ARB/eval_model_best/reliability.png" docs/figures/digits_arbloss_reliability.png
ls -l docs/figures/digits_*.png
