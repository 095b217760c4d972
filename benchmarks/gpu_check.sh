#!/usr/bin/env bash
# The GPU checks of the open issues in one command, for a session lent a GPU machine (docs/execution.md, "GPU
# checks"). Prepare here first: `bash benchmarks/gpu_prepare.sh` (wheels and caches into .device/); then run this
# there with carry [".device"] and timeout_s 600. Phases, each under its own cap and all within BUDGET_S seconds
# (default 480: the lease's device time is short, and a start costs minutes of it), each writing into $OUT
# (at most 8 files come back):
#   env.txt             GPU, driver, versions
#   tests.log           the gpu-marked tests
#   bench_unet.json     UNet training and inference maps/s at the reference sizes (UNet5 at nside 128, UNet8 at
#                       256 and 512; reference cmbNNCS code on an H100: ~1300 and 104 maps/s)
#   bench_bmodes.json   score-model training steps/s and sampler spectra x steps/s (target: 10^4 x 1000 in 0.1 s)
#   bench128.log        nilc_unet trained on bench128's 60 Train maps on the GPU, scored against NILC on Test and
#                       TestOOD (the CPU-trained model of docs/results.md: -19.3 / -14.6 % T RMSE at 20.6')
#   bench_multifield.json   the multifield CNN's images/s at 256^2 (target: >= 2 x 1477 on an H100)
#   summary.txt         each phase's exit status and seconds; stderr.log: everything the phases wrote to stderr
# A dry run in this repository's environment on a CPU checks the plumbing in three minutes:
#   OUT=/tmp/gpu_dry DEVICE=cpu B128_OPTS="preset=default" \
#     B128_SPLITS="{Train: 4, Valid: 2, Test: 2, TestOOD: 2}" B128_EPOCHS=2 \
#     UNET_ARGS="--nsides 32 --configs tiny" BMODES_ARGS="--n-steps 50 --n-spectra 1000 --repeats 1" \
#     MULTIFIELD_ARGS=--simulator-only bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
BUDGET_S=${BUDGET_S:-480}
DEVICE=${DEVICE:-cuda}
B128_OPTS=${B128_OPTS:-preset=bench128}
B128_SPLITS=${B128_SPLITS:-"{Train: 60, Valid: 30, Test: 30, TestOOD: 30}"}
B128_EPOCHS=${B128_EPOCHS:-60}
B128_ROOT=${B128_ROOT:-$(mktemp -d)}  # the dataset (about 4 GB at nside 128), kept out of $OUT
WORKERS=${WORKERS:-$(nproc)}
# extra arguments of the benchmarks, for a dry run on a CPU (sizes that no load pushes past the phases' caps)
UNET_ARGS=${UNET_ARGS:-}  # e.g. "--nsides 32 --configs tiny"
BMODES_ARGS=${BMODES_ARGS:-}  # e.g. "--n-steps 50 --n-spectra 1000"
MULTIFIELD_ARGS=${MULTIFIELD_ARGS:-}  # e.g. "--simulator-only"
mkdir -p "$OUT"
start=$SECONDS
if ! python3 -c "import camb, ducc0, healpy, hydra, pysm3" 2>/dev/null; then  # the device image lacks them
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .device/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -z "${COSMOBENCH_CACHE:-}" ] && [ -d .device/cache ]; then export COSMOBENCH_CACHE=$PWD/.device/cache; fi
exec 2>>"$OUT/stderr.log"

# phase NAME CAP_S COMMAND...: runs COMMAND for at most CAP_S seconds and never past the budget; records the outcome
phase() {
    local name=$1 cap=$2 left t0 rc
    shift 2
    left=$((BUDGET_S - (SECONDS - start)))
    ((left < cap)) && cap=$left
    if ((cap < 20)); then
        echo "$name: skipped, the budget is spent" >>"$OUT/summary.txt"
        return
    fi
    echo "== $name (at most $cap s)" >&2
    t0=$SECONDS
    timeout -k 5 "$cap" bash -c '"$@"' "$name" "$@"
    rc=$?
    echo "$name: rc $rc, $((SECONDS - t0)) s of at most $cap" >>"$OUT/summary.txt"
}

environment() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    nproc
    python3 - <<'EOF'
import sys

import camb
import ducc0
import healpy
import torch

import cosmobench

print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "cosmobench", cosmobench.__version__, "healpy", healpy.__version__, "ducc0", ducc0.__version__,
      "camb", camb.__version__)
EOF
}

bench128() {
    local o=("$B128_OPTS" "out_dir=$B128_ROOT" threads=1 executor=processes "workers=$WORKERS" "device=$DEVICE"
        "methods.nilc_unet.epochs=$B128_EPOCHS")
    local c=(python3 -m cosmobench cmb)
    "${c[@]}" simulate "${o[@]}" "simulate.splits=$B128_SPLITS" || return
    for split in Train Valid Test TestOOD; do
        "${c[@]}" separate "${o[@]}" method=nilc "separate.split=$split" || return
    done
    local t0=$SECONDS
    "${c[@]}" train "${o[@]}" executor=serial method=nilc_unet "methods.nilc_unet.workers=$WORKERS" \
        methods.nilc_unet.progress=false || return
    echo "nilc_unet trained in $((SECONDS - t0)) s"
    for split in Test TestOOD; do
        "${c[@]}" separate "${o[@]}" executor=serial method=nilc_unet "separate.split=$split" || return
        "${c[@]}" evaluate "${o[@]}" 'evaluate.methods=[nilc,nilc_unet]' "evaluate.split=$split" || return
    done
    python3 - "$B128_ROOT" <<'EOF'
import json
import sys

# at 20.6': mean over the split's maps, uK_CMB, and the change against NILC's; coverage: fraction within 1 / 2 sigma
for split in ("Test", "TestOOD"):
    methods = json.load(open(f"{sys.argv[1]}/results/{split}/summary.json"))["methods"]
    nilc = methods["nilc"]["beams"]["20.6arcmin"]
    for name, method in methods.items():
        row = method["beams"]["20.6arcmin"]
        means = {k: (row.get(k) or {}).get("mean") for k in row}
        cells = [
            f"{k} {means[k]:.4g} ({100 * (means[k] / nilc[k]['mean'] - 1):+.1f} %)"
            for k in ("rmse", "rmse_filtered_t", "rmse_filtered_e", "rmse_filtered_b")
            if means.get(k) is not None
        ]
        coverage = ("cover1_t", "cover2_t", "cover1_p", "cover2_p")
        cells += [f"{k} {means[k]:.3f}" for k in coverage if means.get(k) is not None]
        print("RESULT", split, name, "; ".join(cells))
EOF
}

export OUT DEVICE UNET_ARGS BMODES_ARGS MULTIFIELD_ARGS B128_OPTS B128_SPLITS B128_EPOCHS B128_ROOT WORKERS
export -f environment bench128  # phase runs each command in a child shell under timeout
phase environment 60 environment >"$OUT/env.txt"
phase tests 120 python3 -m pytest -q -m gpu -p no:cacheprovider --timeout 100 tests/bmodes/test_samplers.py \
    tests/cmb/test_deepsphere.py tests/cmb/test_uncertainty.py >"$OUT/tests.log"
phase bench_unet 120 python3 benchmarks/bench_unet.py --device "$DEVICE" $UNET_ARGS >"$OUT/bench_unet.json"
phase bench_bmodes 90 python3 benchmarks/bench_bmodes.py --device "$DEVICE" $BMODES_ARGS >"$OUT/bench_bmodes.json"
phase bench128 300 bench128 >"$OUT/bench128.log"
phase bench_multifield 90 python3 benchmarks/bench_multifield.py --quick --device "$DEVICE" $MULTIFIELD_ARGS \
    >"$OUT/bench_multifield.json"
echo "total: $((SECONDS - start)) s" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
grep -h "^RESULT" "$OUT/bench128.log"
