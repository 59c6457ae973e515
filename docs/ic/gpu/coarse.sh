#!/usr/bin/env bash
# One device call (under 10 minutes): tau_decay_coarse end to end at a reduced scale (tau.sh:
# dataset, training on CUDA, four held-out events with IC, IS and RMH), the GPU's utilisation
# logged every 0.5 s throughout, then IC throughput over driver processes with the trained network.
# First the optimizer-step bench; OBS_NORM (e.g. group) sets the calorimeter CNN's norm, default none.
# Results go to $OUT as each phase ends.  From the repository root:  bash docs/ic/gpu/coarse.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -z "${SKIP_SETUP:-}" ]; then
  source docs/ic/gpu/setup.sh >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
fi
(nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 500 >"$OUT/gpu.csv") 2>/dev/null &
smi=$!
export WORK=${WORK:-/tmp/tau} SIM=${SIM:-tau_decay_coarse}
export TRACES=${TRACES:-200000} BATCH=${BATCH:-512} EPOCHS=${EPOCHS:-3} IN_FLIGHT=${IN_FLIGHT:-256}
export IC_PROCS=${IC_PROCS:-8} IC_DEVICE=${IC_DEVICE:-cpu} N=${N:-2000} RMH=${RMH:-2000} RMH_BURN=${RMH_BURN:-300}
# The optimizer step with a group per address against one group, on CUDA (a few seconds).
timeout 120 python3 bench/optimizer_groups.py --train-traces 0 >"$OUT/optimizer_groups.log" 2>&1
tail -3 "$OUT/optimizer_groups.log" | head -2
# The calorimeter CNN in the standard layout against channels-last, ReLU before or after pooling,
# on CUDA (a few seconds): whether `--conv-layout auto` should go channels-last there too.
timeout 60 python3 bench/conv_embedding.py --device cuda --skip-training --batch-sizes 256 512 1024 >"$OUT/conv_embedding.log" 2>&1
grep "batch" "$OUT/conv_embedding.log"
export OBS_NORM=${OBS_NORM:-}
echo "tau starts at $(date +%s)"
timeout "${TAU_LIMIT:-420}" bash docs/ic/gpu/tau.sh >"$OUT/tau.log" 2>&1
echo "tau ends at $(date +%s): $(cat "$WORK/DONE" 2>/dev/null)"
for f in summary.json tau.csv tau_posteriors.png tau_training.png tau.done data.done; do cp "$WORK/$f" "$OUT/" 2>/dev/null; done
cp -r "$WORK/tb" "$OUT/" 2>/dev/null  # TensorBoard event files of the training
cat "$WORK"/prior-*.json >"$OUT/prior.jsonl" 2>/dev/null
tail -30 "$OUT/tau.log" | tr '\r' '\n' | tail -30
# Where a training step's time goes on CUDA: CPU and GPU ms per step, launches, calls that wait
# for the GPU (torch.profiler and the sync debug mode), at the run's batch and at 2048.
if [ -f "$WORK/data.done" ]; then
  for b in ${PROFILE_BATCHES:-$BATCH 2048}; do
    timeout 60 python3 bench/train_step_profile.py --data "$WORK/data" --simulator "$SIM" --device cuda \
      --batch-size $b --steps 40 >"$OUT/train_step_$b.log" 2>&1
    grep -v '^{' "$OUT/train_step_$b.log" | tail -20
  done
fi
if [ -f "$WORK/tau.pt" ]; then
  timeout "${SWEEP_LIMIT:-110}" python3 bench/ic_processes.py --network "$WORK/tau.pt" --simulator "$SIM" \
    --processes ${SWEEP_PROCS:-4 8} --per-process ${SWEEP_K:-32} --quorum ${SWEEP_QUORUM:-1 0.75} --traces "${SWEEP_N:-3000}" >"$OUT/ic_processes.log" 2>&1
  head -8 "$OUT/ic_processes.log"
fi
kill $smi 2>/dev/null || true  # gone already where the machine has no nvidia-smi (a CPU rehearsal)
