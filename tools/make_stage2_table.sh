#!/usr/bin/env bash
# The README's stage-2 table on the offline digits demo: stage 1 (cross-entropy, ARB-Loss),
# MiSLAS's stage 2 on each, cRT and LWS on cross-entropy, and the post-hoc tau-normalisation of
# the cross-entropy classifier, over several seeds; mean +- std of the final-epoch metrics.
#
#   tools/make_stage2_table.sh [WORK_DIR] [SEEDS...]     # default: /tmp/stage2_table, 0 1 2 3 4
#
# Every stage-2 run starts from the last checkpoint (current.pth.tar) of the stage-1 run with the
# same seed, so no test-set selection enters stage 2; tau-normalisation (tau 1.0) is eval.py on
# that checkpoint. About 2.5 minutes on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/stage2_table}
shift || true
SEEDS=${*:-0 1 2 3 4}
D=config/digits
mkdir -p "$WORK"
run() {  # run SCRIPT CFG NAME [KEY VALUE ...]: one run folder WORK/NAME_<stamp>
    local script=$1 cfg=$2 name=$3
    shift 3
    if ! ls -d "$WORK/${name}"_2* >/dev/null 2>&1; then
        python "$script" --cfg "$cfg" name "$name" output_dir "$WORK" "$@" > "$WORK/$name.log" 2>&1
    fi
}
last_ckpt() { ls -td "$WORK/$1"_2*/ | head -n 1 | sed 's,/$,/ckps/current.pth.tar,'; }
for s in $SEEDS; do
    run train_stage1.py "$D/digits_imb005_ce.yaml" "ce_s$s" seed "$s"
    run train_stage1.py "$D/digits_imb005_arbloss.yaml" "arb_s$s" seed "$s"
    run train_stage2.py "$D/digits_imb005_stage2_mislas.yaml" "ce_mislas_s$s" seed "$s" resume "$(last_ckpt "ce_s$s")"
    run train_stage2.py "$D/digits_imb005_stage2_mislas.yaml" "arb_mislas_s$s" seed "$s" resume "$(last_ckpt "arb_s$s")"
    run train_stage2.py "$D/digits_imb005_stage2_crt.yaml" "ce_crt_s$s" seed "$s" resume "$(last_ckpt "ce_s$s")"
    run train_stage2.py "$D/digits_imb005_stage2_lws.yaml" "ce_lws_s$s" seed "$s" resume "$(last_ckpt "ce_s$s")"
    python eval.py --cfg "$D/digits_imb005_ce.yaml" --json --no-report --no-nc eval_tau_norm 1.0 \
        resume "$(last_ckpt "ce_s$s")" 2>/dev/null | tail -n 1 > "$WORK/ce_taunorm_s$s.json"
done
python - "$WORK" $SEEDS <<'EOF'
import glob, json, os, statistics, sys
from utils.rundir import read_metrics
work, seeds = sys.argv[1], sys.argv[2:]
rows = [("stage 1: cross-entropy", "ce"), ("cross-entropy -> MiSLAS stage 2", "ce_mislas"),
        ("cross-entropy -> cRT", "ce_crt"), ("cross-entropy -> LWS", "ce_lws"),
        ("cross-entropy -> tau-norm (tau 1.0)", "ce_taunorm"),
        ("stage 1: ARB-Loss (batch counts)", "arb"), ("ARB-Loss -> MiSLAS stage 2", "arb_mislas")]
keys = ("acc1", "many", "medium", "few", "ece")
print("| method | " + " | ".join(["Acc@1", "many", "medium", "few", "ECE"]) + " |")
print("|---|" + "---|" * len(keys))
for label, name in rows:
    vals = {k: [] for k in keys}
    for s in seeds:
        if name == "ce_taunorm":
            m = json.load(open(os.path.join(work, f"{name}_s{s}.json")))
        else:
            run = sorted(glob.glob(os.path.join(work, f"{name}_s{s}_2*")))[-1]
            m = read_metrics(run).rows[-1]
        for k in keys:
            vals[k].append(m[k])
    cells = [f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
             for v in vals.values()]
    print(f"| {label} | " + " | ".join(cells) + " |")
print(f"\nfinal epoch, mean ± sample std over seeds {' '.join(seeds)}")
EOF
