#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine (no network there): the wheels prov4torch needs beyond that
# machine's image travel in .whl/ (see docs/design-notes.md, "GPU checks"). Writes logs and the run's
# document under $OUT. OLD_TREE: a directory holding an earlier prov4torch/ to compare step overhead with.
#   bash benchmarks/gpu_check.sh [OLD_TREE]
set -u
REPO=$PWD
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
ln -sfn "$REPO/cli" /tmp/site/prov4torch_cli
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, pynvml; print('torch', torch.__version__, torch.cuda.get_device_name(), 'nvml', pynvml.__version__ if hasattr(pynvml, '__version__') else '?')"

echo "== 1. metric and sampler tests, the gpu-marked ones included"
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/test_log_metric.py tests/test_samplers.py 2>&1 \
  | tee "$OUT/pytest.log" | tail -25

echo "== 2. a real CUDA training run under prov4torch run, every sampler on"
mkdir -p /tmp/w && cd /tmp/w
export PROV4TORCH_DIR=/tmp/w/runs
/usr/bin/time -v timeout 120 python3 -m prov4torch_cli.app run "$REPO/benchmarks/gpu_train.py" -- --seconds 12 \
  2> "$OUT/run.stderr"; echo "exit $?"; grep -E "Elapsed|Maximum resident" "$OUT/run.stderr"; grep -iE "warn|error" "$OUT/run.stderr" | head
doc=$(find runs -name 'run.prov.json' -o -name 'rank-0.prov.json' | head -1); echo "doc: $doc"
cp "$doc" "$OUT/gpu_run.prov.json"
python3 -m prov4torch_cli.app validate "$doc"; echo "validate exit $?"
python3 - "$doc" "$REPO/tests" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
from provcheck import problems
doc = json.load(open(sys.argv[1]))
print("independent checks:", problems(doc) or "none")
for section in ("activity", "entity", "agent"):
    for key, attrs in doc.get(section, {}).items():
        hits = {k: v for k, v in attrs.items() if any(w in k.lower() for w in ("gpu", "energy", "emission", "cuda"))}
        if hits:
            print(section, key, json.dumps(hits)[:1500])
PY
find runs -name '*.metrics.csv' | head -3 | while read f; do echo "$f: $(wc -l < "$f") rows"; grep -c "gpu/0/" "$f"; done
cd "$REPO"

echo "== 3. the CUDA hot path, and step overhead on the GPU (every sampler on, then off)"
bench() {
  timeout 60 python3 benchmarks/cuda_hot_path.py 2>&1 | tail -2
  timeout 100 python3 benchmarks/bench_step_overhead.py --device cuda --samplers --blocks 200 --steps 20 2>&1 | tail -3
  echo "-- the same, the loss read by reference (PROV4TORCH_METRIC_BY_REFERENCE=1: issue 28's target, <= 2%)"
  PROV4TORCH_METRIC_BY_REFERENCE=1 timeout 100 python3 benchmarks/bench_step_overhead.py --device cuda --samplers \
    --blocks 200 --steps 20 2>&1 | tail -3
  timeout 100 python3 benchmarks/bench_step_overhead.py --device cuda --blocks 200 --steps 20 2>&1 | tail -3
}
bench
if [ -n "${1:-}" ]; then
  echo "== 3b. the same with the earlier prov4torch in $1"
  PYTHONPATH=/tmp/site:$REPO/$1 bench
fi
