#!/usr/bin/env bash
# Device check on a lent CUDA machine (run from the repo root, with .whl/ and .devdata/ carried):
# germinate's --device cuda path end to end, then GPU throughput. Writes logs under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GERMINATE_CACHE=/tmp/gcache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
python3 -m germinate train .devdata/train --out /tmp/run --device cuda --size 224 --bs 32 --workers 4 --cycles 2 2>&1 | tee "$OUT/train.log"
python3 -m germinate predict /tmp/run .devdata/test --submission "$OUT/submission.csv" --device cuda 2>&1 | tail -2
python3 -m germinate evaluate /tmp/run .devdata/train --device cuda --json "$OUT/eval.json" 2>&1 | tail -4
cp /tmp/run/report.html /tmp/run/final.json "$OUT/" 2>/dev/null
python3 benchmarks/bench_gpu.py .devdata/train --size 224 --bs 64 2>&1 | tee "$OUT/bench.log"
