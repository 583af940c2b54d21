"""GPU check (run on a CUDA machine): the CUDA path end to end and its throughput.

Model-only training throughput (the ceiling) against germinate's warm-cache epoch, for several
loader worker counts, bf16 autocast and channels_last on (the CUDA defaults).

    python benchmarks/bench_gpu.py TRAIN_DIR [--size 224] [--bs 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ceiling, learner, train_epoch_seconds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("train_dir")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--arch", default="efficientnet_lite0")
    args = p.parse_args()
    args.limit = None
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(torch.cuda.get_device_name(0), f"torch {torch.__version__}")
    cache = Path(tempfile.mkdtemp())
    for workers in (0, 4, 8):
        learn = learner(Path(args.train_dir), cache, args, workers=workers)
        train_epoch_seconds(learn)  # warm-up: cuDNN autotuning, worker start
        sec = train_epoch_seconds(learn, epochs=3)
        n = len(learn.data.train)
        print(f"workers {workers}: {n / sec:8.1f} img/s end to end (amp {learn.amp}, channels_last {learn.net.channels_last})")
    ceil = ceiling(learn, 50)
    print(f"model only:  {ceil:8.1f} img/s at {args.size} px, batch {args.bs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
