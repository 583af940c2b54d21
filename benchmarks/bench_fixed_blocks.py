"""Training speed with the body's first blocks fixed (--fixed-blocks N), side by side in one run.

A fixed block gets no gradients, so the backward pass stops above it; the first blocks work at the
highest resolution, so they cost more of a step than their share of the weights. For each N this
times one training epoch (the whole network otherwise unfrozen, real images from the cache, the
run's augmentation), in rounds that alternate the settings so that a machine getting busier or
quieter affects all of them alike, and prints the best round of each and its speed-up over N = 0.

    python benchmarks/bench_fixed_blocks.py [--blocks 0,1,3,5] [--size 128] [--per-class 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DATA, train_epoch_seconds  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="0,1,3,5", help="values of --fixed-blocks to compare (0 first)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--per-class", type=int, default=40, help="training images per class (x 12 classes)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    from germinate import TrainConfig, create_learner

    seconds: dict[int, list[float]] = {n: [] for n in blocks}
    with tempfile.TemporaryDirectory() as cache:
        learners = {}
        for n in blocks:
            cfg = TrainConfig(train_dir=str(DATA / "train"), size=args.size, bs=args.bs, arch=args.arch, quiet=True,
                              cache_dir=cache, limit_per_class=args.per_class, fixed_blocks=n)
            learners[n] = create_learner(cfg)
        train_epoch_seconds(learners[blocks[0]])  # warm-up: first-touch allocations, oneDNN kernels
        for _ in range(args.rounds):
            for n in blocks:
                seconds[n].append(train_epoch_seconds(learners[n]))
        images = learners[blocks[0]].steps_per_epoch() * args.bs
    print(f"\n{args.arch}, {args.size} px, batch {args.bs}, {torch.get_num_threads()} threads, "
          f"{images} training images an epoch, best of {args.rounds} rounds")
    print("| --fixed-blocks | fixed blocks | epoch (s) | img/s | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    base = min(seconds[blocks[0]])
    for n in blocks:
        s = min(seconds[n])
        print(f"| {n} | {learners[n].fixed_blocks} of {len(learners[n].net.blocks) - 1} | {s:.1f} | "
              f"{images / s:.1f} | {base / s:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
