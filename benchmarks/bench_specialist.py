"""A specialist for the hard pair, measured on finished runs without changing them.

Most errors left are Black-grass and Loose Silky-bent taken for each other. For each finished run
(the generalist), a second model is trained on the pair's images of that run's own training
split only, validated on the pair's images of its validation split (`germinate train --valid`, the
run's seed); then, wherever the generalist's top class (with TTA) is one of the pair, the pair's
share of its probability is split as the specialist's TTA probabilities say. Prints, per run, the
generalist's and the combination's micro-F1 with TTA over all classes, and the errors within the
pair. Choose the specialist's flags on the tuning split's run (seed 42), report on the others.

    python benchmarks/bench_specialist.py runs/bench-accuracy/s192-e20-seed42 --flags "--size 192 --epochs 20"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from germinate.data.manifest import split_images
from germinate.finish import read_valid_probs

ROOT = Path(__file__).resolve().parents[1]
PAIR = ("Black-grass", "Loose Silky-bent")


def link_pair(run: Path, folder: Path, pair: tuple[str, ...]) -> None:
    """train/ and valid/ folders of symbolic links to the pair's images of the run's split."""
    for split in ("train", "valid"):
        for path, cls in zip(*split_images(run, split)):
            if cls in pair:
                link = folder / split / cls / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    os.symlink(path, link)


def tta_probs(run: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """A run's validation files, true classes, class order and TTA probabilities (valid_probs.csv)."""
    rows, classes, _, probs = read_valid_probs(run)
    return [r["file"] for r in rows], [r["class"] for r in rows], classes, probs


def combine(files: list[str], probs: np.ndarray, classes: list[str], special: dict[str, np.ndarray],
            pair: tuple[str, ...]) -> np.ndarray:
    """The generalist's probabilities, the pair's share split by the specialist where its top class is in the pair."""
    idx = [classes.index(c) for c in pair]
    out = probs.copy()
    for i, f in enumerate(files):
        if int(probs[i].argmax()) in idx and f in special:
            out[i, idx] = probs[i, idx].sum() * special[f]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (with valid_probs.csv)")
    p.add_argument("--flags", default="--size 192 --epochs 20", help="the specialist's `germinate train` flags")
    p.add_argument("--name", default="s192-e20", help="names the specialists' runs")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-specialist")
    a = p.parse_args()
    print(f"specialist for {' / '.join(PAIR)}: germinate train {a.flags}")
    print("| generalist run | generalist, TTA | with the specialist | pair errors (generalist / combined) | specialist's own pair accuracy, TTA | specialist minutes |")
    print("|---|---|---|---|---|---|")
    for run in a.runs:
        seed = json.loads((run / "config.json").read_text())["config"]["seed"]
        data = a.out / f"data-{run.name}"
        link_pair(run, data, PAIR)
        spec = a.out / f"{a.name}-{run.name}"
        if not (spec / "final.json").exists():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "germinate", "train", str(data / "train"), "--valid", str(data / "valid"),
                            "--out", str(spec), "--overwrite", "--seed", str(seed), "--quiet", *a.flags.split()], check=True)
            (spec / "bench_wall_seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
        files, truth, classes, probs = tta_probs(run)
        s_files, s_truth, s_classes, s_probs = tta_probs(spec)
        special = {f: s_probs[i][[s_classes.index(c) for c in PAIR]] for i, f in enumerate(s_files)}
        y = np.array([classes.index(c) for c in truth])
        both = combine(files, probs, classes, special, PAIR)
        pair_idx = [classes.index(c) for c in PAIR]

        def pair_errors(q: np.ndarray) -> int:
            pred = q.argmax(1)
            return int(sum(t in pair_idx and pr in pair_idx and t != pr for t, pr in zip(y, pred)))

        own = float(np.mean(np.array(s_truth) == np.array(s_classes)[s_probs.argmax(1)]))
        minutes = float((spec / "bench_wall_seconds").read_text()) / 60
        print(f"| {run.name} | {np.mean(probs.argmax(1) == y):.4f} | {np.mean(both.argmax(1) == y):.4f} | "
              f"{pair_errors(probs)} / {pair_errors(both)} | {own:.3f} | {minutes:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
