#!/bin/bash
# The CPU benchmarks side by side, each pinned to two cores of its own, on a machine with at
# least 8 idle cores (the lent GPU machines' 16-core Xeon, say): four quiet 2-core machines at
# once. tests/test_gpu.py runs on the remaining cores when a GPU is present.
#   OUT=benchmarks/out bash benchmarks/pinned.sh        # JSON in $OUT, logs in $OUT/logs
set -u
export OUT=${OUT:-benchmarks/out}
PY=${PYTHON:-python}
LIMIT=${LIMIT:-450}  # seconds per benchmark
mkdir -p "$OUT/logs"
# CPUS COMMAND...: run COMMAND on those CPUs only (no taskset needed)
pin=(-c 'import os, sys
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
os.execvp(sys.argv[2], sys.argv[2:])')
timeout "$LIMIT" "$PY" "${pin[@]}" 0,1 "$PY" benchmarks/sweeps.py --epochs 4 --train_per_class 8 \
  --eval_per_class 4 > "$OUT/logs/sweeps.log" 2>&1 &
timeout "$LIMIT" "$PY" "${pin[@]}" 2,3 "$PY" benchmarks/training.py \
  --models '[forward, cae4_switch, cae4_blind]' > "$OUT/logs/training.log" 2>&1 &
timeout "$LIMIT" "$PY" "${pin[@]}" 4,5 "$PY" benchmarks/layers.py > "$OUT/logs/layers.log" 2>&1 &
timeout "$LIMIT" "$PY" "${pin[@]}" 6,7 "$PY" benchmarks/levers.py \
  --levers '[conv, global_decode, pool, optimizer, bf16, malloc]' > "$OUT/logs/levers.log" 2>&1 &
if "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  rest=$("$PY" -c 'import os; print(",".join(str(c) for c in sorted(os.sched_getaffinity(0))[8:]))')
  timeout "$LIMIT" "$PY" "${pin[@]}" "${rest:-0}" "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_gpu.py > "$OUT/logs/test_gpu.log" 2>&1 &
fi
wait
tail -n 4 "$OUT"/logs/*.log
