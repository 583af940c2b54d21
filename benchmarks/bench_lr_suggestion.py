"""Is the range test's suggestion useful? One head-only epoch (on precomputed features, same seed,
same starting weights) at the suggestion, at 10x it and at 1/10 of it; validation loss of each.

    python benchmarks/bench_lr_suggestion.py [--size 128] [--suggest valley]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--suggest", default="valley")
    args = p.parse_args()
    from germinate import TrainConfig, create_learner

    learn = create_learner(TrainConfig(train_dir=str(DATA / "train"), size=args.size, quiet=True,
                                         fixed_blocks=0))  # as measured: every block
    learn.recalibrate_bn()
    learn.freeze()
    start = copy.deepcopy(learn.net.state_dict())
    result = learn.lr_find(suggest=args.suggest)
    s = result.suggestion
    print("suggestions: " + ", ".join(f"{k} {v:.2e}" for k, v in result.suggestions.items()))
    rows = []
    for name, lr in (("suggestion / 10", s / 10), ("suggestion", s), ("suggestion x 10", s * 10)):
        learn.net.load_state_dict(start)
        learn.opt = learn._make_optimizer()
        learn.history = []
        learn.fit(1, lr)
        h = learn.history[-1]
        rows.append((name, lr, h["valid_loss"], h["f1_micro"]))
    print(f"\none head-only epoch, {args.size} px, seed 42 ({args.suggest} rule)")
    print(f"{'LR':<18}{'value':>10}{'valid loss':>12}{'micro-F1':>10}")
    for name, lr, loss, f1 in rows:
        print(f"{name:<18}{lr:>10.2e}{loss:>12.4f}{f1:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
