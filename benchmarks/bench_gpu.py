"""GPU throughput (run on a CUDA machine): model-only training against germinate's end-to-end
training epoch, for the cases the README's GPU table lists, with the CUDA defaults (bf16 autocast,
channels_last, augmentation on the GPU, the images resident there when they fit, --workers auto).

    python benchmarks/bench_gpu.py [TRAIN_DIR] [--bs 64] [--compile] [--epochs 3]

"model only": forward, backward and step on one uint8 batch kept on the GPU (the ceiling).
"end to end": whole training epochs from the cache: gather, augmentation, step.
ResNet-50 runs from random weights (speed only), so it needs no download.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from germinate.errors import GerminateError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DATA, ceiling, learner, train_epoch_seconds

CASES = [("efficientnet_lite0", 128, True), ("efficientnet_lite0", 224, True), ("resnet50", 224, False)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_dir", nargs="?", default=str(DATA / "train"))
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per case (after one warm-up epoch)")
    p.add_argument("--compile", action="store_true", help="also measure each case with --compile")
    p.add_argument("--only", help="one case, ARCH:PX (e.g. efficientnet_lite0:128)")
    p.add_argument("--amp", default="auto", choices=("auto", "on", "off"),
                   help="off: float32; on: bf16; auto: germinate's choice (bf16 on CUDA, float32 compiled)")
    p.add_argument("--compiled-only", action="store_true", help="with --compile, skip the cases without it")
    args = p.parse_args()
    args.limit = None
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 1
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, batch {args.bs}, "
          f"{dict(off='float32', on='bf16').get(args.amp, 'bf16 (float32 compiled)')}, channels_last")
    cache = Path(tempfile.mkdtemp(prefix="germinate-gpu-"))
    header = f"{'backbone':<20}{'px':>5}{'compile':>9}{'model only':>13}{'end to end':>13}{'ratio':>7}  notes"
    print(header)
    cases = [c for c in CASES if not args.only or f"{c[0]}:{c[1]}" == args.only]
    for arch, size, pretrained in cases:
        for compiled in ((True,) if args.compiled_only else (False, True)) if args.compile else (False,):
            args.arch, args.size = arch, size
            learn = learner(Path(args.train_dir), cache, args, pretrained=pretrained, compile=compiled, amp=args.amp)
            start = time.perf_counter()
            try:
                train_epoch_seconds(learn)  # warm-up: cuDNN autotuning, compilation, images to the GPU
            except GerminateError as e:  # a diverging case (--compile on torch 2.11) leaves the others their turn
                print(f"{arch:<20}{size:>5}{'on' if compiled else 'off':>9}  {e}", flush=True)
                continue
            warm_up = time.perf_counter() - start
            torch.cuda.synchronize()
            e2e = len(learn.data.train) / train_epoch_seconds(learn, epochs=args.epochs)
            ceil = ceiling(learn, 100)
            feeder = learn._feeder("train")
            notes = f"resident {feeder.resident}, workers {feeder.workers}, first epoch {warm_up:.1f} s"
            print(f"{arch:<20}{size:>5}{'on' if compiled else 'off':>9}{ceil:>9.0f} img/s{e2e:>9.0f} img/s"
                  f"{e2e / ceil:>7.2f}  {notes}", flush=True)
            del learn
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
