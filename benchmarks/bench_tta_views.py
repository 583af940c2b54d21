"""Validation micro-F1 of finished runs with more TTA views than the flip policy's fixed ones.

A run's final evaluation averages the 8 dihedral views (top-down). `--tta N` with N beyond those
adds seeded random training augmentations (zoom crops, small rotations) at the test size. This
evaluates each run's own validation images (from its split.csv) once with the most views asked
for and scores the average over the first K views for each K given, so every K is read on the
same predictions. No training: about a minute per run on a 2-core CPU. Tune on one group of
seeds and read the choice on another.

    python benchmarks/bench_tta_views.py runs/bench-accuracy/default-seed{39,40,41,42} --views 1,8,16,32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders")
    p.add_argument("--views", default="1,8,16,32", help="numbers of views to score, comma-separated")
    args = p.parse_args()
    from germinate.data.cache import decode_images
    from germinate.data.manifest import split_images
    from germinate.evaluate import metrics as M
    from germinate.evaluate.predict import predict_views, tta_views
    from germinate.models.export import load_model

    counts = sorted({int(k) for k in args.views.split(",")})
    scores: dict[int, list[tuple[float, float]]] = {k: [] for k in counts}  # (micro-F1, loss)
    for run in map(Path, args.runs):
        started = time.monotonic()
        nets, info = load_model(run, snapshots=True)
        files, truth = split_images(run, "valid")
        labels = np.array([info.classes.index(c) for c in truth])
        decoded = decode_images(files, info.source_px)
        if len(decoded.ok) != len(files):
            raise SystemExit(f"{run}: {len(files) - len(decoded.ok)} validation images unreadable")
        views = tta_views(info.flip, max(counts) - 1)
        probs = predict_views(nets, decoded.source, info, views)
        final = json.loads((run / "final.json").read_text())
        line = []
        for k in counts:
            mean = probs[:k].mean(0)
            f1 = M.summary(labels, mean.argmax(1), len(info.classes))["f1_micro"]
            scores[k].append((f1, float(M.cross_entropy(mean, labels).mean())))
            line.append(f"{k}: {f1:.4f}")
        print(f"{run.name} (final.json {final['plain']['f1_micro']:.4f} / {final['tta']['f1_micro']:.4f}): "
              f"{', '.join(line)}, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"runs: {', '.join(Path(r).name for r in args.runs)}")
    print("| views | micro-F1 | loss | per run |")
    print("| --- | --- | --- | --- |")
    for k in counts:
        f1, loss = zip(*scores[k])
        print(f"| {k} | {statistics.mean(f1):.4f} | {statistics.mean(loss):.3f} | {', '.join(f'{x:.3f}' for x in f1)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
