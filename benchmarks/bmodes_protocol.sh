#!/usr/bin/env bash
# The B-mode r table of docs/bmodes.md: every choice on the fixed-r validation sets, the test sets read once,
# three training seeds on one dataset. Usage:  bash benchmarks/bmodes_protocol.sh [out_folder]
#   FG=0.1 TAG=nongauss bash benchmarks/bmodes_protocol.sh   # the strong, non-Gaussian foreground residual case
# 5-15 min of one CPU core per TAG, by the machine's load (threads=1: this small network is fastest on one thread).
set -euo pipefail
D=${1:-runs/bmodes_protocol}
FG=${FG:-0.01}
TAG=${TAG:-gauss}
DATA="simulate.n_train=4000 simulate.n_val=300 simulate.n_test=100 simulate.fg_fraction=$FG"
TRAIN="train.epochs=120"
SAMPLE="sample.modes=[conditional] sample.n_prior_check=0 sample.trajectory_every=0"
P="threads=1 simulate.progress=false train.progress=false sample.progress=false infer.progress=false"
cosmobench bmodes simulate out_dir=$D/$TAG/seed0 $DATA $P
for s in 1 2; do  # the same data for every training seed
  [ -d $D/$TAG/seed$s/data ] || { mkdir -p $D/$TAG/seed$s && cp -r $D/$TAG/seed0/data $D/$TAG/seed$s/; }
done
for s in 0 1 2; do cosmobench bmodes train out_dir=$D/$TAG/seed$s $DATA $TRAIN train.seed=$s $P; done
# the choice, on the validation sets only: EM (1000 steps) vs PC (500 levels: the same 1000 score evaluations)
for sampler in em pc; do
  steps=1000; [ $sampler = pc ] && steps=500
  [ -d $D/$TAG/choice_$sampler/model ] || { mkdir -p $D/$TAG/choice_$sampler && cp -r $D/$TAG/seed0/{data,model} $D/$TAG/choice_$sampler/; }
  cosmobench bmodes sample out_dir=$D/$TAG/choice_$sampler $DATA $TRAIN $SAMPLE split=val sample.sampler=$sampler sample.n_steps=$steps $P
  cosmobench bmodes infer out_dir=$D/$TAG/choice_$sampler $DATA split=val $P > /dev/null
done
choice=$(python - "$D/$TAG" <<'PY'
import json, sys
score = {}
for s in ("em", "pc"):
    rows = json.load(open(f"{sys.argv[1]}/choice_{s}/infer/val/r_table.json"))
    bias = [abs(r["bias_over_fisher"]) for r in rows if r["estimator"] == "diffusion_ml"]
    score[s] = sum(bias) / len(bias)
print(min(score, key=score.get))
print(f"validation: mean |bias| / sigma_F of diffusion_ml {score}", file=sys.stderr)
PY
)
steps=1000; [ "$choice" = pc ] && steps=500
for s in 0 1 2; do
  cosmobench bmodes sample out_dir=$D/$TAG/seed$s $DATA $TRAIN $SAMPLE split=test sample.sampler=$choice sample.n_steps=$steps sample.seed=$s $P
  cosmobench bmodes infer out_dir=$D/$TAG/seed$s $DATA split=test infer.seed=$s $P > /dev/null
done
cosmobench bmodes compare out_dir=$D/$TAG "compare.runs=[$D/$TAG/seed0,$D/$TAG/seed1,$D/$TAG/seed2]" split=test
