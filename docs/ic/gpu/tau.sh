#!/usr/bin/env bash
# The tau decay end to end on a 16-core GPU machine (after `source docs/ic/gpu/setup.sh`):
# TRACES prior traces of SIM (default tau_decay_fixed_spots) from 8 `probexec prior` processes of 2 simulators
# each (one Python process cannot encode 16 simulators' images), then docs/ic/make_tau_ic.py:
# training on CUDA (OBS_NORM: the image embedding's norm, e.g. group; PRETRAIN: steps of image-embedding
# pretraining on PRETRAIN_LATENTS, default 1000 on channel,px,py, 0 for none; INIT: a network to train on
# from instead, e.g. one trained on the CPU and carried here), held-out events, IC against IS and RMH.
# Writes WORK/ and WORK/DONE at the end.
#   setsid nohup bash docs/ic/gpu/tau.sh > /tmp/tau.log 2>&1 &
set -uo pipefail
WORK=${WORK:-/tmp/tau}
TRACES=${TRACES:-1000000}
SIM=${SIM:-tau_decay_fixed_spots}
PROCS=${PROCS:-8}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK"
if [ ! -f "$WORK/data.done" ]; then
  t0=$(date +%s)
  for i in $(seq 1 "$PROCS"); do
    python3 -m probexec prior "$SIM" -n $((TRACES / PROCS)) -o "$WORK/data" --workers 2 \
      --seed $((1000 + i)) --json --quiet >"$WORK/prior-$i.json" 2>"$WORK/prior-$i.err" &
  done
  wait
  echo "dataset: $TRACES traces in $(($(date +%s) - t0)) s" | tee "$WORK/data.done"
  du -sb "$WORK/data" | tee -a "$WORK/data.done"
fi
python3 docs/ic/make_tau_ic.py --work "$WORK" --simulator "$SIM" --device "${DEVICE:-cuda}" \
  --batch-size "${BATCH:-256}" --epochs "${EPOCHS:-1}" --lr "${LR:-1e-3}" --workers "${WORKERS:-16}" \
  ${OBS_NORM:+--obs-norm "$OBS_NORM"} ${INIT:+--init "$INIT"} --pretrain-embedding "${PRETRAIN:-1000}" \
  --pretrain-latents "${PRETRAIN_LATENTS:-channel,px,py}" \
  --in-flight "${IN_FLIGHT:-64}" --ic-processes "${IC_PROCS:-1}" --ic-device "${IC_DEVICE:-${DEVICE:-cuda}}" \
  --n "${N:-1000}" --rmh-samples "${RMH:-4000}" --rmh-burn-in "${RMH_BURN:-1000}" --docs "$WORK/docs"
echo "exit $?" > "$WORK/DONE"
