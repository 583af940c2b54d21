"""Is the last 2% label noise? Train without the training images other splits' runs always got wrong.

About 1.9% of the labelled images are wrong in at least 80% of the runs that validated them
(`bench_hard_images.py`), mostly Black-grass taken for Loose Silky-bent. If many of them are
mislabelled, a model trained on them learns a worse boundary between the two grasses, and
dropping them from training (what confident learning does with out-of-fold predictions:
Northcutt et al., 2021) should lift validation micro-F1 even though the validation split keeps
its own hard images. If they are only ambiguous photos, dropping them costs or changes nothing.

For each split seed S, the hard images are counted from the finished runs under
runs/bench-accuracy of *other* split seeds (so nothing about S's validation images is used), and
only those in S's training split are dropped. Two runs of one setting follow, side by side on the
same split (S's training and validation images symlinked into `kept/`, as bench_pseudo_labels.py
does; the same data in the same order as bench_accuracy's hold-out run of S): on every training
image, and without the hard ones. Both take the same fixed length (`--flags`, by default the
18 epochs the default's budget chose on this machine), so that a time budget's probe cannot give
them different lengths.

That list is drawn from runs that trained on S's validation images (a run of another split seed
trains on most of them), so a near-duplicate of a validation image with a conflicting label could be
dropped for that reason: a leak, small or not. `--flag-from folds` draws the list without it, as a
user would: K folds over S's training images alone (`germinate train kept/train --folds K`, short
runs), whose label_issues.csv lists the images whose out-of-fold prediction with TTA is another
class, giving their own label under 0.2; the cleaned run is `germinate train kept/train --valid
kept/valid --exclude .../label_issues.csv`, compared with the same `kept` run.

    python benchmarks/bench_clean_labels.py --seeds 36,37,38
    python benchmarks/bench_clean_labels.py --seeds 36 --flag-from folds
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import run_one  # noqa: E402  (how one run is made and read, shared)
from bench_hard_images import hard, tally  # noqa: E402

from germinate.data.manifest import read_file_list, split_images  # noqa: E402
from germinate.finish import read_valid_probs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench-accuracy"


def hard_images(seed: int, min_seen: int, threshold: float) -> tuple[set[str], int]:
    """The images (paths as in split.csv) wrong in at least `threshold` of the runs of other
    split seeds that validated them (at least `min_seen` runs); and how many runs were read."""
    runs = [d for d in sorted(RUNS.glob("*-seed*")) if (d / "valid_probs.csv").exists()
            and d.name.rsplit("-seed", 1)[1] != str(seed)]
    tables = [(rows, classes, tta) for rows, classes, _, tta in map(read_valid_probs, runs) if rows]
    return set(hard(tally(tables), min_seen, threshold)), len(tables)


def folds_issues(where: Path, seed: int, k: int, flags: str) -> Path:
    """label_issues.csv of K folds over kept/train alone (run once into folds-seed<S>)."""
    run = where / f"folds-seed{seed}"
    if not (run / "label_issues.csv").exists():
        cmd = [sys.executable, "-m", "germinate", "train", str(where / "kept" / "train"), "--out", str(run),
               "--folds", str(k), "--seed", str(seed), "--quiet", *flags.split()]
        if run.exists():
            cmd = [sys.executable, "-m", "germinate", "train", "--resume", str(run), "--quiet"]
        started = time.perf_counter()
        subprocess.run(cmd, check=True)
        (run / "bench_wall_seconds").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run / "label_issues.csv"


def make_folders(source: Path, drop: set[str], where: Path, variant: str | None = "cleaned") -> Counter:
    """kept/{train,valid} (the source run's split) and, unless `variant` is None, <variant>/{train,valid}
    (the same, less the training images in `drop`) under `where`, as symlinks; the dropped images,
    by class."""
    dropped: Counter = Counter()
    for split in ("train", "valid"):
        for file, label in zip(*split_images(source, split)):
            name = f"{label}/{file.name}"
            for folder in ("kept", variant) if variant else ("kept",):
                if folder == variant and split == "train" and name in drop:
                    dropped[label] += 1
                    continue
                dst = where / folder / split / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.is_symlink():
                    dst.symlink_to(file.resolve())
    return dropped


def figures(r: dict) -> str:
    return f"{r['f1']:.3f} / {r['tta']:.3f}"


def recall(r: dict, label: str = "Black-grass") -> str:
    """A class's recall with TTA in a finished run (its per_class.csv)."""
    with open(r["run"] / "per_class.csv") as f:
        return next(f"{float(row['recall']):.2f}" for row in csv.DictReader(f) if row["class"] == label)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="36,37,38", help="split seeds, comma-separated (default 36,37,38)")
    p.add_argument("--split-from", default="default",
                   help="the bench_accuracy setting whose run of each seed gives its split (default: default)")
    p.add_argument("--flags", default="--epochs 18", help="the setting both runs train with (default: --epochs 18)")
    p.add_argument("--min-seen", type=int, default=2, help="an image counts if at least this many runs validated it")
    p.add_argument("--threshold", type=float, default=0.8, help="hard: wrong in at least this share of them")
    p.add_argument("--flag-from", choices=["runs", "folds"], default="runs",
                   help="runs: the finished runs of other split seeds; folds: K folds over the split's training images")
    p.add_argument("--folds", type=int, default=4, help="with --flag-from folds: K (default 4)")
    p.add_argument("--folds-flags", default="--epochs 8", help="with --flag-from folds: the folds' setting")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-clean-labels"), help="where the runs are kept")
    args = p.parse_args()
    out = Path(args.out)
    listed = (f"hard: wrong in >= {args.threshold:.0%} of >= {args.min_seen} runs of other split seeds"
              if args.flag_from == "runs" else f"label_issues.csv of {args.folds} folds (`{args.folds_flags}`)")
    print(f"flags `{args.flags}`; {listed}; runs in {out}", flush=True)
    print("| split seed | runs read (or folds) | training images dropped (by class) | all: micro-F1 / TTA | cleaned: "
          "micro-F1 / TTA | TTA difference | Black-grass recall (TTA), all / cleaned | validation loss, all / cleaned "
          "| minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    diffs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        source = RUNS / f"{args.split_from}-seed{seed}"
        if not (source / "split.csv").exists():
            print(f"no run {source} to take split seed {seed} from: run `python benchmarks/bench_accuracy.py "
                  f"--settings {args.split_from} --seeds {seed}` first", file=sys.stderr)
            return 2
        where = out / f"seed{seed}"
        cleaned_name = "cleaned" if args.flag_from == "runs" else "folds-cleaned"
        if args.flag_from == "runs":
            drop, read = hard_images(seed, args.min_seen, args.threshold)
            dropped = make_folders(source, drop, where)
            results = {variant: run_one(variant, args.flags, seed, where, train_dir=where / variant / "train",
                                        valid_dir=where / variant / "valid") for variant in ("kept", "cleaned")}
        else:
            make_folders(source, set(), where, None)  # kept/: the folds run and both runs train on kept/train
            issues, read = folds_issues(where, seed, args.folds, args.folds_flags), args.folds
            drop = set(read_file_list(issues))
            dropped = Counter(f.split("/")[0] for f in drop)
            runs_list, _ = hard_images(seed, args.min_seen, args.threshold)
            print(f"seed {seed}: {len(drop)} listed by the folds, {len(drop & runs_list)} of them also on the list "
                  f"from other split seeds' runs ({len(runs_list)} there, in either split)", flush=True)
            results = {"kept": run_one("kept", args.flags, seed, where, train_dir=where / "kept" / "train",
                                       valid_dir=where / "kept" / "valid"),
                       cleaned_name: run_one(cleaned_name, f"{args.flags} --exclude {issues}", seed, where,
                                             train_dir=where / "kept" / "train", valid_dir=where / "kept" / "valid")}
        kept, cleaned = results["kept"], results[cleaned_name]
        diffs.append(cleaned["tta"] - kept["tta"])
        (where / f"{cleaned_name}-dropped.json").write_text(json.dumps({"dropped": sorted(drop), "by_class": dropped}, indent=1))
        print(f"| {seed} | {read} | {sum(dropped.values())} ({', '.join(f'{k} {v}' for k, v in dropped.most_common())}) "
              f"| {figures(kept)} | {figures(cleaned)} | {100 * diffs[-1]:+.1f} | {recall(kept)} / {recall(cleaned)} "
              f"| {kept['loss']:.3f} / "
              f"{cleaned['loss']:.3f} | {kept['minutes']:.1f} / {cleaned['minutes']:.1f} |", flush=True)
    print(f"mean TTA difference, cleaned - all: {100 * sum(diffs) / len(diffs):+.2f} points over {len(diffs)} splits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
