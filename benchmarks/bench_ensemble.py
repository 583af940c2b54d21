"""What averaging models buys: each run's validation micro-F1 with TTA, then every ensemble of them.

The runs must share their validation split (the same split seed and training folder): their
split.csv files are compared and a mismatch is refused. Each model predicts the validation images
once (with TTA, as `germinate predict` does); the ensembles average those probabilities, exactly
as `germinate predict RUN_A RUN_B ...` does.

    python benchmarks/bench_ensemble.py runs/bench-accuracy/{default,lite1-fixed5}-seed42
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from germinate.data.manifest import split_images
from germinate.inference import predict_folder


def validation_images(run: Path) -> tuple[list[Path], list[str]]:
    """The run's validation images (resolved against the folders it was given) and their classes."""
    files, classes = split_images(run, "valid")
    return [f.resolve() for f in files], classes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders of one split")
    args = p.parse_args()
    files, truth = validation_images(args.runs[0])
    for run in args.runs[1:]:
        if validation_images(run) != (files, truth):
            sys.exit(f"{run} was validated on other images than {args.runs[0]}: use runs of one split seed")
    probs, names, class_lists = [], [run.name for run in args.runs], []
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp)
        for i, file in enumerate(files):  # one flat folder, names kept unique and in order
            (flat / f"{i:05d}{file.suffix}").symlink_to(file)
        for run in args.runs:
            start = time.perf_counter()
            predicted, p_run, classes = predict_folder(run, flat)
            assert [f.name for f in predicted] == sorted(f.name for f in predicted)
            probs.append(p_run)
            class_lists.append(classes)
            print(f"predicted {run.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if any(c != class_lists[0] for c in class_lists):
        sys.exit("the runs have different classes")
    labels = np.array([class_lists[0].index(c) for c in truth])
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
