"""Training epoch time with the fixed blocks' batchnorm folded and the fused AdamW step, against
neither, side by side in one run on the same learner.

The default keeps the stem and first 3 blocks of the body as pretrained (`--fixed-blocks 3`):
they only run forward, in eval mode, so germinate trains through a view of the body with their
convolution-batchnorm pairs folded (models/fold_bn.py), and steps with PyTorch's fused AdamW.
This times warm training epochs of the default (its size, batch and fixed blocks, the shared
data's training split, no validation) in four settings, alternating, `--rounds` times each: as
before (neither), each on its own, and both (germinate now). The default plans as many epochs as
14 minutes hold, so the epoch time ratio is the gain in epochs.

    python benchmarks/bench_fixed_fold.py [--rounds 2] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="epochs timed per setting")
    p.add_argument("--limit", type=int, default=None, help="images per class (default: all)")
    args = p.parse_args()
    from bench_pipeline import train_epoch_seconds

    from germinate import TrainConfig, create_learner

    learn = create_learner(TrainConfig(train_dir=str(DATA / "train"), quiet=True, limit_per_class=args.limit))
    n_images = len(learn.data.train.labels)
    fused_opt, groups = learn.opt, [{"params": g} for g in learn.net.layer_groups]
    cfg = learn.cfg
    loop_opt = torch.optim.AdamW(groups, lr=1e-3, betas=(cfg.momentum, 0.99), weight_decay=cfg.wd, fused=False)
    assert fused_opt.defaults["fused"], "the learner's optimizer is expected to be fused"
    settings = {"neither (as before)": (False, loop_opt), "folded fixed blocks": (True, loop_opt),
                "fused AdamW": (False, fused_opt), "both (germinate now)": (True, fused_opt)}
    times: dict[str, list[float]] = {name: [] for name in settings}
    print(f"{learn.fixed_blocks} fixed blocks, {cfg.arch} at {cfg.size} px, batch {cfg.bs}, {n_images} training "
          f"images, {torch.get_num_threads()} threads", file=sys.stderr)
    train_epoch_seconds(learn)  # warm-up: caches, allocator, first-use costs
    for r in range(args.rounds):
        for name, (fold, opt) in settings.items():
            learn.net.fold_fixed, learn.opt = fold, opt
            started = time.perf_counter()
            times[name].append(train_epoch_seconds(learn))
            print(f"round {r + 1}, {name}: {times[name][-1]:.1f} s ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    before = statistics.mean(times["neither (as before)"])
    print("| setting | epoch (s) | img/s | epoch time against before |")
    print("| --- | --- | --- | --- |")
    for name, t in times.items():
        mean = statistics.mean(t)
        print(f"| {name} | {mean:.1f} ({', '.join(f'{x:.1f}' for x in t)}) | {n_images / mean:.0f} | {mean / before:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
