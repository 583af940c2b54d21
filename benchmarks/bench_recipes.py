"""Side by side on the shared data, same seed, same number of epochs: the default recipe (SGDR,
differential LRs) against a single flat LR and against plain cosine without restarts; and the
top-down flip policy against side-on. Prints validation micro-F1 (plain and with TTA) and time.

    python benchmarks/bench_recipes.py [--cycles 3] [--size 128] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def variants(epochs: int, cycles: int) -> dict[str, list[str]]:
    return {
        "default (SGDR, differential LRs)": [],
        "single flat LR": ["--schedule", "flat", "--epochs", str(epochs), "--lr-ratio", "1"],
        "cosine, no restarts": ["--schedule", "cosine", "--epochs", str(epochs)],
        "side-on flips": ["--flip", "side-on"],
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--only", nargs="*")
    args = p.parse_args()
    from germinate.cli import main as germinate
    from germinate.training.schedule import sgdr_epochs

    epochs = int(sgdr_epochs(args.cycles, 1, 2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in variants(epochs, args.cycles).items():
            if args.only and not any(o in name for o in args.only):
                continue
            run = Path(tmp) / name.split()[0]
            start = time.perf_counter()
            code = germinate(["train", str(DATA / "train"), "--out", str(run), "--preset", "recipe",
                              "--size", str(args.size), "--cycles", str(args.cycles), "--quiet", *extra])
            if code:
                return code
            final = json.loads((run / "final.json").read_text())
            plan = json.loads((run / "config.json").read_text())["plan"][-1]
            rows.append((name, final["plain"]["f1_micro"], final["tta"]["f1_micro"], final["tta"]["loss"],
                         time.perf_counter() - start, plan["lrs"]))
            print(rows[-1], flush=True)
    print(f"\n{epochs} unfrozen epochs after 2 head epochs, {args.size} px, seed 42, LRs from the range test")
    print(f"{'variant':<34}{'micro-F1':>9}{'with TTA':>10}{'loss':>8}{'minutes':>9}  unfrozen peak LRs")
    for name, f1, tta, loss, sec, lrs in rows:
        print(f"{name:<34}{f1:>9.4f}{tta:>10.4f}{loss:>8.4f}{sec / 60:>9.1f}  {', '.join(f'{x:.1e}' for x in lrs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
