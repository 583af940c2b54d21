"""What averaging models buys: each run's validation micro-F1 with TTA, then every ensemble of them.

The runs must share their validation split (the same split seed and training folder): their
split.csv files are compared and a mismatch is refused. Each model predicts the validation images
once (with TTA, as `germinate predict` does); the ensembles average those probabilities, exactly
as `germinate predict RUN_A RUN_B ...` does.

    python benchmarks/bench_ensemble.py runs/bench-accuracy/{default,lite1-fixed5}-seed42
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from germinate.inference import predict_folder


def validation_images(run: Path) -> list[tuple[str, str]]:
    """(file relative to the training folder, class) of the run's validation images."""
    with open(run / "split.csv", newline="") as f:
        return [(r["file"], r["class"]) for r in csv.DictReader(f) if r["split"] == "valid"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders of one split")
    p.add_argument("--train-dir", type=Path, help="the runs' training folder (default: from their config.json)")
    args = p.parse_args()
    split = validation_images(args.runs[0])
    for run in args.runs[1:]:
        if validation_images(run) != split:
            sys.exit(f"{run} was validated on other images than {args.runs[0]}: use runs of one split seed")
    train_dir = args.train_dir or Path(json.loads((args.runs[0] / "config.json").read_text())["config"]["train_dir"])
    probs, names, class_lists = [], [run.name for run in args.runs], []
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp)
        for i, (file, _) in enumerate(split):  # one flat folder, names kept unique and in order
            (flat / f"{i:05d}{Path(file).suffix}").symlink_to((train_dir / file).resolve())
        for run in args.runs:
            start = time.perf_counter()
            files, p_run, classes = predict_folder(run, flat)
            assert [f.name for f in files] == sorted(f.name for f in files)
            probs.append(p_run)
            class_lists.append(classes)
            print(f"predicted {run.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if any(c != class_lists[0] for c in class_lists):
        sys.exit("the runs have different classes")
    labels = np.array([class_lists[0].index(c) for _, c in split])
    print(f"{len(labels)} validation images")
    print("| models | micro-F1 with TTA |")
    print("| --- | --- |")
    for k in range(1, len(probs) + 1):
        for combo in itertools.combinations(range(len(probs)), k):
            # one label per image, so micro-F1 is the accuracy
            acc = float((np.mean([probs[i] for i in combo], axis=0).argmax(1) == labels).mean())
            print(f"| {' + '.join(names[i] for i in combo)} | {acc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
