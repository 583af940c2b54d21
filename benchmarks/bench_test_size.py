"""Validation micro-F1 of finished runs evaluated at other test sizes, plain and with TTA.

A run is validated and used at --test-size (default 1.25 x its training size). This evaluates
each run's own validation images (from its split.csv) again at each size given, from a source
1.2 x that size, as the run's own evaluation does, and prints one row per size: the mean over
the runs and each run's figure (at the run's own test size, its final.json). No training: about
a minute per run and size on a 2-core CPU. Tune the size on one group of
seeds and read the choice on another.

    python benchmarks/bench_test_size.py runs/bench-accuracy/plain-e8-seed{4,5,6} --sizes 144,160,176,192
    python benchmarks/bench_test_size.py runs/bench-accuracy/default-seed{1,2,3} --sizes 144,160 --pairs

--pairs adds TTA over two sizes: each image's TTA probabilities at two sizes averaged (every
size is then evaluated, the run's own included).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders")
    p.add_argument("--sizes", default="144,160,176,192", help="test sizes in pixels, comma-separated")
    p.add_argument("--pairs", action="store_true", help="also TTA over every two of the sizes (probabilities averaged)")
    args = p.parse_args()
    from germinate.config import EVAL_SOURCE_FACTOR
    from germinate.data.cache import decode_images
    from germinate.data.manifest import split_images
    from germinate.evaluate import metrics as M
    from germinate.evaluate.predict import predict_views, tta_views
    from germinate.models.export import load_model

    sizes = [int(s) for s in args.sizes.split(",")]
    scores: dict[int, list[tuple[float, float]]] = {px: [] for px in sizes}
    pairs = list(itertools.combinations(sizes, 2)) if args.pairs else []
    pair_scores: dict[tuple[int, int], list[float]] = {pair: [] for pair in pairs}
    for run in map(Path, args.runs):
        nets, info = load_model(run, snapshots=True)
        files, truth = split_images(run, "valid")
        labels = np.array([info.classes.index(c) for c in truth])
        final = json.loads((run / "final.json").read_text())
        n = len(info.classes)  # the score the runs report (final.json), from the same function
        tta_probs = {}
        for px in sizes:
            if px == info.eval_size and not pairs:  # the run's own evaluation, on the same images (the same figures)
                scores[px].append((final["plain"]["f1_micro"], final["tta"]["f1_micro"]))
                continue
            at = dataclasses.replace(info, test_size=px, source_px=round(px * EVAL_SOURCE_FACTOR))
            decoded = decode_images(files, at.source_px)
            if len(decoded.ok) != len(files):
                raise SystemExit(f"{run}: {len(files) - len(decoded.ok)} validation images unreadable")
            probs = predict_views(nets, decoded.source, at, tta_views(at.flip, None))
            tta_probs[px] = probs.mean(0)
            plain, tta = (M.summary(labels, probs[0].argmax(1), n)["f1_micro"],
                          M.summary(labels, probs.mean(0).argmax(1), n)["f1_micro"])
            scores[px].append((plain, tta))
            print(f"{run.name} at {px} px: {plain:.4f} / {tta:.4f} with TTA", file=sys.stderr, flush=True)
        for a, b in pairs:
            both = (tta_probs[a] + tta_probs[b]) / 2
            pair_scores[a, b].append(M.summary(labels, both.argmax(1), n)["f1_micro"])
    print(f"runs: {', '.join(Path(r).name for r in args.runs)}")
    print("| test size | micro-F1 | with TTA | per run, with TTA |")
    print("| --- | --- | --- | --- |")
    for px in sizes:
        plain, tta = zip(*scores[px])
        print(f"| {px} px | {statistics.mean(plain):.3f} | {statistics.mean(tta):.3f} | "
              f"{', '.join(f'{t:.3f}' for t in tta)} |")
    for (a, b), tta in pair_scores.items():
        print(f"| TTA over {a} and {b} px | | {statistics.mean(tta):.3f} | {', '.join(f'{t:.3f}' for t in tta)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
