#!/usr/bin/env bash
# Waits up to $1 seconds for the tau run (tau.sh) to finish, printing its progress, then copies
# its results to $OUT (what the GPU tool brings back).
WORK=${WORK:-/tmp/tau}
end=$(($(date +%s) + ${1:-540}))
while [ ! -f "$WORK/DONE" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
echo "--- $(date +%T) progress"; ls "$WORK/data/shards" 2>/dev/null | grep -c npz; cat "$WORK/data.done" 2>/dev/null
tail -c 3000 /tmp/tau.log | tr '\r' '\n' | tail -25
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
if [ -n "${OUT:-}" ]; then
  cp /tmp/tau.log "$OUT/tau.log" 2>/dev/null
  for f in summary.json tau.csv tau_posteriors.png tau_training.png tau.done; do cp "$WORK/$f" "$OUT/" 2>/dev/null; done
  cp -r "$WORK/tb" "$OUT/" 2>/dev/null
  cat "$WORK"/prior-*.json > "$OUT/prior.jsonl" 2>/dev/null
fi
cat "$WORK/DONE" 2>/dev/null
