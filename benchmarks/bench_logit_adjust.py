"""What `--logit-adjust T` would have done to finished runs, without training them again.

The option only shifts the exported model's logits by -T x log(class share of the training
images) (training is untouched), so its effect on a finished run can be computed exactly: this
loads each run's exported model, predicts every TTA view of the run's own validation images (as
the run's final evaluation did), multiplies each view's probabilities by share^-T and renormalises
them (softmax(z + shift) is exactly that), averages the views and scores them (and the plain view
alone, as final.json's plain figure). Runs trained with
`--logit-adjust` already carry a shift and are refused. T is chosen on the tuning split (seed 42)
and reported on the others.

    python benchmarks/bench_logit_adjust.py runs/bench-accuracy/epochs12-seed15 ... --taus 0,0.5,0.75,1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from germinate.data.cache import FileSource
from germinate.data.manifest import split_images
from germinate.evaluate.metrics import summary
from germinate.evaluate.predict import predict_views, tta_views
from germinate.models.export import load_model
from germinate.training.class_weights import logit_shift

HARD = "Black-grass"  # the class the hard pair's errors take from


def view_probs(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Each TTA view's probabilities on the run's validation images, their labels, the training
    labels and the classes."""
    config = json.loads((run / "config.json").read_text())["config"]
    if config.get("logit_adjust"):
        raise SystemExit(f"{run} was trained with --logit-adjust {config['logit_adjust']}: "
                         "its model is shifted already")
    nets, info = load_model(run, snapshots=True)
    index = {c: i for i, c in enumerate(info.classes)}
    files, valid = split_images(run, "valid")
    train = np.array([index[c] for c in split_images(run, "train")[1]])
    source = FileSource(files, info.source_px)
    probs = predict_views(nets, source, info, tta_views(info.flip, config.get("tta")), 64)
    return probs, np.array([index[c] for c in valid]), train, info.classes


def adjusted(probs: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """The TTA average of each view's probabilities after adding `shift` to its logits."""
    if shift is None:
        return probs.mean(0)
    q = probs * np.exp(shift)
    return (q / q.sum(-1, keepdims=True)).mean(0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders (trained without --logit-adjust)")
    p.add_argument("--taus", default="0,0.25,0.5,0.75,1", help="values of T, comma-separated")
    args = p.parse_args()
    taus = [float(t) for t in args.taus.split(",")]
    heads = " | ".join(f"T = {t:g}" for t in taus)
    ends = f"(T = {taus[0]:g} / {taus[-1]:g})"
    print(f"| run | views | {heads} | macro-F1 {ends} | {HARD} recall {ends} |")
    print("| --- " * (len(taus) + 4) + "|")
    table = {"TTA": [], "plain": []}
    for run in map(Path, args.runs):
        probs, y, train, classes = view_probs(run)
        hard = y == classes.index(HARD)
        for views, some in (("TTA", probs), ("plain", probs[:1])):
            row, macro, recalls = [], [], []
            for t in taus:
                pred = adjusted(some, logit_shift(train, len(classes), t)).argmax(1)
                scores = summary(y, pred, len(classes))  # the figures final.json reports
                row.append(scores["f1_micro"])
                macro.append(scores["f1_macro"])
                recalls.append(float((pred[hard] == y[hard]).mean()))
            table[views].append(row)
            figures = " | ".join(f"{a:.4f}" for a in row)
            print(f"| {run.name} | {views} | {figures} | {macro[0]:.4f} / {macro[-1]:.4f} | "
                  f"{recalls[0]:.2f} / {recalls[-1]:.2f} |", flush=True)
    for views, rows in table.items():
        print(f"| mean of {len(rows)} | {views} | {' | '.join(f'{a:.4f}' for a in np.mean(rows, axis=0))} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
