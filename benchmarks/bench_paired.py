"""One setting against the same fixed-length run on the same splits: a paired lever test.

A fixed-length run repeats bit for bit (docs/results.md), so the `kept` runs bench_clean_labels.py
made on each split seed S (`germinate train kept/train --valid kept/valid --epochs 18 --seed S`,
S's split of the default run as symlinks) are the baseline: only the setting's own runs are
trained, with the same data, order and length plus `--flags`. Each split's difference is paired,
so their spread, not the 0.8-point standard error of one split of 806 images, says whether a
lever helped. A kept run missing is trained first (as bench_clean_labels.py would).

    python benchmarks/bench_paired.py --name no-wd-norm-bias --flags=--no-wd-norm-bias --seeds 38,36,37

(`--flags=...` with the equals sign: a value that starts with a dash.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import run_one  # noqa: E402  (how one run is made and read, shared)
from bench_clean_labels import RUNS, make_folders  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def paired(diffs: list[float]) -> str:
    """'mean (SE x)' of paired differences, in points."""
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.1f}"
    return f"{mean:+.1f} (SE {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the setting's run name (runs go to <out>/seed<S>/<name>-seed<S>)")
    p.add_argument("--flags", required=True, help="the setting's flags, added to the baseline's")
    p.add_argument("--base-flags", default="--epochs 18", help="the baseline's flags (default: --epochs 18, the kept runs)")
    p.add_argument("--seeds", default="38,36,37", help="split seeds, comma-separated (default 38,36,37)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-clean-labels"), help="where the kept runs are")
    args = p.parse_args()
    print(f"`{args.flags}` against `{args.base_flags}` alone, on the kept split of each seed", flush=True)
    print("| split seed | baseline: micro-F1 / TTA | setting: micro-F1 / TTA | difference: plain, TTA (points) "
          "| validation loss, baseline / setting | minutes |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    plain, tta = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        where = Path(args.out) / f"seed{seed}"
        source = RUNS / f"default-seed{seed}"
        if not (where / "kept" / "valid").exists():
            if not (source / "split.csv").exists():
                print(f"no run {source} to take split seed {seed} from: run `python benchmarks/bench_accuracy.py "
                      f"--settings default --seeds {seed}` first", file=sys.stderr)
                return 2
            make_folders(source, set(), where, None)
        folders = dict(train_dir=where / "kept" / "train", valid_dir=where / "kept" / "valid")
        # The stored kept runs are `--epochs 18`; other baseline flags get their own runs.
        base_name = "kept" if args.base_flags == "--epochs 18" else f"{args.name}-base"
        base = run_one(base_name, args.base_flags, seed, where, **folders)
        new = run_one(args.name, f"{args.base_flags} {args.flags}", seed, where, **folders)
        plain.append(100 * (new["f1"] - base["f1"]))
        tta.append(100 * (new["tta"] - base["tta"]))
        print(f"| {seed} | {base['f1']:.3f} / {base['tta']:.3f} | {new['f1']:.3f} / {new['tta']:.3f} "
              f"| {plain[-1]:+.1f}, {tta[-1]:+.1f} | {base['loss']:.3f} / {new['loss']:.3f} | {new['minutes']:.1f} |",
              flush=True)
    print(f"mean difference: plain {paired(plain)}, TTA {paired(tta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
