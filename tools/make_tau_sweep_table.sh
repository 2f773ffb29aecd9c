#!/usr/bin/env bash
# The README's tau-sweep table on the offline digits demo: the cross-entropy demo run per seed,
# then eval.py --tau-sweep (tau_norm and logit_adjust, grid 0:2:0.1) on its last checkpoint.
# Digits has no validation list, so tau is chosen on a class-stratified half of the test set
# (split with the seed) and the metrics are those of the other half, with and without the
# chosen correction; mean +- std over the seeds.
#
#   tools/make_tau_sweep_table.sh [WORK_DIR] [SEEDS...]  # default: /tmp/tau_sweep_table, 0 1 2 3 4
#
# About one minute on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/tau_sweep_table}
shift || true
SEEDS=${*:-0 1 2 3 4}
CFG=config/digits/digits_imb005_ce.yaml
mkdir -p "$WORK"
for s in $SEEDS; do
    if ! ls -d "$WORK/ce_s$s"_2* >/dev/null 2>&1; then
        python train_stage1.py --cfg "$CFG" name "ce_s$s" output_dir "$WORK" seed "$s" \
            > "$WORK/ce_s$s.log" 2>&1
    fi
    ckpt=$(ls -td "$WORK/ce_s$s"_2*/ | head -n 1 | sed 's,/$,/ckps/current.pth.tar,')
    for m in tau_norm logit_adjust; do
        python eval.py --cfg "$CFG" resume "$ckpt" seed "$s" --tau-sweep "$m" --json \
            --no-report 2>/dev/null | tail -n 1 > "$WORK/${m}_s$s.json"
    done
done
python - "$WORK" $SEEDS <<'PY'
import json, os, statistics, sys
work, seeds = sys.argv[1], sys.argv[2:]
keys = ("acc1", "many", "medium", "few", "ece")
print("| on the report half | chosen tau | Acc@1 | many | medium | few | ECE |")
print("|---|---|" + "---|" * len(keys))
res = {m: [json.load(open(os.path.join(work, f"{m}_s{s}.json"))) for s in seeds]
       for m in ("tau_norm", "logit_adjust")}
lines = [("cross-entropy, no correction", res["tau_norm"], "uncorrected"),
         ("cross-entropy + tau-norm", res["tau_norm"], "report"),
         ("cross-entropy + post-hoc logit adjustment", res["logit_adjust"], "report")]
for label, rs, part in lines:
    taus = "-" if part == "uncorrected" else ", ".join(f"{r['tau']:g}" for r in rs)
    cells = []
    for k in keys:
        v = [r[part][k] for r in rs]
        cells.append(f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}")
    print(f"| {label} | {taus} | " + " | ".join(cells) + " |")
print(f"\nfinal epoch, mean ± sample std over seeds {' '.join(seeds)}; "
      f"{rs[0]['n_select']} images select, {rs[0]['n_report']} report")
PY
