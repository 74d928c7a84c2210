#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one go, most important first, each with its own time limit so
# that one stuck step cannot eat the rest. Results (JSON) and one log go to $OUT (default runs/gpu).
#
#   bash benchmarks/gpu_session.sh                     # everything (about 11 minutes on an H200)
#   bash benchmarks/gpu_session.sh check paper loop    # or in parts: check paper loop teaching attention fastpath
# on a machine with one CUDA GPU; maelib need not be installed. On 2026-11-26 (H200) the parts took: check 23 s
# (plus ~25 s of first compilation), paper 183 s, loop 86-126 s, teaching ~220 s, attention 15 s, fastpath ~165 s.
#
# Needs torch, timm, transformers, lightning, safetensors, pytest (a stock PyTorch GPU image has them).
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log="$OUT/gpu_session.log"
step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit} s) ===" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -e "Tip:" -e "LeafSpec" | tee -a "$log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s ===" | tee -a "$log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$log"
$PY -c "import torch, timm, transformers, lightning; print('torch', torch.__version__, 'timm', timm.__version__,
'transformers', transformers.__version__, 'lightning', lightning.__version__, 'cpus', __import__('os').cpu_count())" \
  | tee -a "$log"
parts=" ${*:-check paper loop teaching attention} "
want() { [[ $parts == *" $1 "* ]]; }
want check && step 90 "compiled = eager on CUDA" $PY -m pytest -q -p no:cacheprovider tests/test_fast_path.py -k cuda
want paper && step 240 "bench paper" $PY benchmarks/bench.py --device cuda --preset paper --warmup 3 --steps 15 --out "$OUT/paper.json"
want loop && step 180 "loop vs bare step" $PY benchmarks/loop_throughput.py --device cuda --out "$OUT/loop.json" --normalize both
want teaching && step 300 "bench teaching" $PY benchmarks/bench.py --device cuda --preset teaching --warmup 3 --steps 15 \
  --out "$OUT/teaching.json"
want fastpath && step 330 "fast-path candidates at ViT-B" $PY benchmarks/bench.py --device cuda --preset fastpath --warmup 3 \
  --steps 15 --out "$OUT/fastpath.json"
want fastpath && step 90 "profile of the compiled ViT-B step" $PY benchmarks/profile_step.py --out "$OUT/profile.json"
want attention && step 60 "attention capture" $PY benchmarks/attention_overhead.py --device cuda --arch mae_vit_base_patch16 --batch 64
exit 0  # each step's exit status is in the log
