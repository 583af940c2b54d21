"""Which validation images every run gets wrong: how much of a split no setting has moved.

Reads the finished runs' valid_probs.csv (each validation image's TTA probabilities), counts for
every image how many runs validated it and how many of them got it wrong (top class with TTA),
and prints how the images spread over that error rate, the images wrong in at least --threshold
of the runs that validated them (at least --min-seen runs) by true and predicted class, and the
share of a split they make. Runs of different split seeds validate different images, so the more
seeds, the more of the training folder is covered. Nothing is trained; it takes seconds.

    python benchmarks/bench_hard_images.py                              # runs/bench-accuracy/* and runs/bench-deadline/*
    python benchmarks/bench_hard_images.py runs/bench-accuracy/default-seed3* --list
    python benchmarks/bench_hard_images.py --montage hard.png            # the images, with their classes
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from germinate.finish import read_valid_probs

ROOT = Path(__file__).resolve().parents[1]
# the error-rate bands printed, as [lo, hi)
BANDS = [("never", 0.0, 1e-9), ("under 20%", 1e-9, 0.2), ("20-50%", 0.2, 0.5), ("50-80%", 0.5, 0.8),
         ("80% or more, not always", 0.8, 1.0), ("always", 1.0, 2.0)]


@dataclass
class ImageRecord:
    """One validation image over the runs that validated it."""

    true: str
    seen: int = 0
    wrong: int = 0
    predicted: Counter = field(default_factory=Counter)  # the wrong classes, how often

    @property
    def rate(self) -> float:
        return self.wrong / self.seen


def tally(runs: list[tuple[list[dict[str, str]], list[str], np.ndarray]]) -> dict[str, ImageRecord]:
    """Each image (its path as in split.csv) over the runs' valid_probs.csv: each run's rows, the
    classes of its probability columns and its TTA probabilities (read_valid_probs)."""
    images: dict[str, ImageRecord] = {}
    for rows, classes, tta in runs:
        for r, top in zip(rows, tta.argmax(1)):
            pred = classes[int(top)]
            rec = images.setdefault(r["file"], ImageRecord(r["class"]))
            rec.seen += 1
            if pred != rec.true:
                rec.wrong += 1
                rec.predicted[pred] += 1
    return images


def hard(images: dict[str, ImageRecord], min_seen: int, threshold: float) -> dict[str, ImageRecord]:
    """The images validated by at least min_seen runs and wrong in at least threshold of them."""
    return {f: r for f, r in images.items() if r.seen >= min_seen and r.rate >= threshold}


def montage(items: list[tuple[str, str]], root: Path, out: Path, per_row: int = 12) -> None:
    """The images (paths under `root`) in a grid, each with its caption."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = max(1, -(-len(items) // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (f, caption) in zip(axes.flat, items):
        ax.imshow(Image.open(root / f).convert("RGB"))
        ax.set_title(caption, fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="finished run folders (default: the benchmarks' runs)")
    p.add_argument("--min-seen", type=int, default=3, help="only images validated by at least this many runs")
    p.add_argument("--threshold", type=float, default=0.8, help="wrong in at least this share of those runs")
    p.add_argument("--list", action="store_true", help="print each hard image")
    p.add_argument("--montage", type=Path, help="draw the hard images into this PNG")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/plant-seedlings/train",
                   help="the training folder the runs' paths are relative to (for --montage)")
    a = p.parse_args()
    runs = a.runs or sorted(d for sub in ("bench-accuracy", "bench-deadline")
                            for d in (ROOT / "runs" / sub).glob("*") if (d / "valid_probs.csv").exists())
    tables = [(rows, classes, tta) for rows, classes, _, tta in map(read_valid_probs, runs) if rows]
    if not tables:
        sys.exit("no valid_probs.csv in the runs given: pass finished run folders")
    images = tally(tables)
    counted = {f: r for f, r in images.items() if r.seen >= a.min_seen}
    found = hard(images, a.min_seen, a.threshold)
    per_split = np.mean([len(rows) for rows, _, _ in tables])
    print(f"{len(tables)} runs; {len(images)} images validated at least once, "
          f"{len(counted)} at least {a.min_seen} times")
    print("\n| share of its runs that got it wrong | images |\n| --- | --- |")
    for label, lo, hi in BANDS:
        print(f"| {label} | {sum(1 for r in counted.values() if lo <= r.rate < hi)} |")
    share = len(found) / max(len(counted), 1)
    print(f"\n{len(found)} images wrong in at least {a.threshold:.0%} of their runs: {share:.1%} of the images "
          f"counted, about {share * per_split:.0f} of a {per_split:.0f}-image validation split "
          f"({share * 100:.1f} points of micro-F1 that nearly every run loses)")
    pairs = Counter((r.true, r.predicted.most_common(1)[0][0]) for r in found.values())
    print("\n| true class | taken for | images |\n| --- | --- | --- |")
    for (t, q), n in pairs.most_common():
        print(f"| {t} | {q} | {n} |")
    ordered = sorted(found.items(), key=lambda kv: (-kv[1].rate, kv[0]))
    if a.list:
        for f, r in ordered:
            print(f"{f}\twrong {r.wrong}/{r.seen}\ttaken for {r.predicted.most_common(1)[0][0]}")
    if a.montage:
        montage([(f, f"{r.true[:14]} -> {r.predicted.most_common(1)[0][0][:14]}") for f, r in ordered], a.data, a.montage)
        print(f"\nwrote {a.montage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
