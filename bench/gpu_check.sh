#!/usr/bin/env bash
# One command that runs every CUDA code path and prints a table; under 10 minutes on one GPU.
#
#     bash bench/gpu_check.sh            # on a machine with a CUDA GPU
#
# 1. the tests marked `cuda` (AMP bf16 / fp16 with the loss scaler, channels_last,
#    torch.compile, the CIFAR and image-list device pipelines on CUDA, deterministic mode,
#    exact resume, a 1-process NCCL group, GPU JPEG decoding);
# 2. bench/bench_gpu.py: ResNet-32 CIFAR-100-LT images/s with and without the device pipeline
#    and bf16 autocast, the projected 200-epoch time; ResNet-50 images/s at batch 256 with and
#    without bf16 autocast and channels_last; the ResNet-32 recipe eager vs the compiled step
#    (compile_mode default, reduce-overhead = CUDA graphs) and its projected 200 epochs;
# 3. bench/bench_imagelist_pipeline.py: the image-list input paths per CPU core, and whole
#    loaders (reference, fast path with CPU decoding, fast path with GPU decoding).
# Without CUDA it says so in one line and exits 0. With $OUT set, the logs are written there.
# PYTHON picks the interpreter (default: python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device on this machine: nothing to check (run it on a GPU machine)"
    exit 0
fi
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
CORES=$(nproc)
WORKERS=$(( CORES > 10 ? 8 : CORES - 2 > 1 ? CORES - 2 : 1 ))
export PYTHONUNBUFFERED=1
# the packages importable by the bench scripts without `pip install -e .` (a bare device machine)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
declare -a NAMES STATUS SECS

section() {  # section NAME LIMIT_SECONDS LOG COMMAND...
    local name=$1 limit=$2 log=$3
    shift 3
    echo
    echo "=== $name"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$log"
    local rc=${PIPESTATUS[0]}
    NAMES+=("$name")
    SECS+=($(( SECONDS - t0 )))
    if [ "$rc" -eq 0 ]; then STATUS+=("ok"); elif [ "$rc" -eq 124 ]; then STATUS+=("TIMEOUT after ${limit}s"); else STATUS+=("FAILED (exit $rc)"); fi
}

echo "gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'device', torch.cuda.get_device_name(0))"
echo "$CORES CPU cores; loader workers in the benches: $WORKERS"

section "tests marked cuda" 180 cuda_tests.log \
    "$PY" -m pytest -q -m cuda -p no:cacheprovider --durations=10 tests
section "bench_gpu.py (ResNet-50 b256, ResNet-32 CIFAR-100-LT, compiled step)" 330 bench_gpu.log \
    "$PY" bench/bench_gpu.py --workers "$WORKERS"
section "bench_imagelist_pipeline.py (image-list input paths)" 90 bench_imagelist.log \
    "$PY" bench/bench_imagelist_pipeline.py --repeats 3 --workers "$WORKERS"

echo
echo "=== summary"
printf '| %-56s | %-22s | %7s |\n' "check" "result" "seconds"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..58})" "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..9})"
for i in "${!NAMES[@]}"; do
    printf '| %-56s | %-22s | %7s |\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}"
done
grep -E "^[0-9]+ (passed|failed)|passed|failed" "$LOGS/cuda_tests.log" | tail -1
echo "logs: $LOGS"
for s in "${STATUS[@]}"; do [ "$s" = "ok" ] || exit 1; done
exit 0
