"""What `--final-fit-all` buys, measured on images neither model has seen.

For each split seed, a stratified fifth of the shared training images is set aside as a hold-out
(symlinked into --out/seed<S>/holdout/<class>/, the rest into pool/). `germinate train pool
--final-fit-all` then trains the first fit (on four fifths of the pool, validated on the last
fifth) and the final fit (the same plan on the whole pool), and both models are evaluated on the
hold-out, plain and with TTA. Both see the same hold-out, so the difference is paired. A finished
run found in --out is read, not run again.

    python benchmarks/bench_final_fit.py --seeds 1,2
    python benchmarks/bench_final_fit.py --seeds 1 --flags "--lr 1e-3 --lr-ratio 1"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
sys.path.insert(0, str(ROOT / "src"))


def make_holdout(seed: int, where: Path) -> tuple[Path, Path]:
    """pool/ and holdout/ under `where`, as symlinks into the shared training images."""
    from germinate.data.folders import scan_labelled, stratified_split

    pool, holdout = where / "pool", where / "holdout"
    if holdout.exists():
        return pool, holdout
    items = scan_labelled(DATA / "train")
    keep, held = stratified_split(items.labels, 0.2, 1000 + seed)  # another draw than the run's own split
    for folder, idx in ((pool, keep), (holdout, held)):
        for i in idx:
            src = items.files[i]
            dst = folder / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())
    return pool, holdout


def germinate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "germinate", *args], check=True)


def train_or_resume(run: Path, finished: bool, wall: Path, *train_args: str) -> None:
    """`germinate train TRAIN_ARGS --out RUN` unless `finished` (a started run is resumed); its
    wall time, start-up included, is written to `wall`."""
    if finished:
        return
    started = time.perf_counter()
    if run.exists():
        germinate("train", "--resume", str(run), "--quiet")
    else:
        germinate("train", *train_args, "--out", str(run), "--quiet")
    wall.write_text(f"{time.perf_counter() - started:.1f}\n")


def evaluate(model: Path, holdout: Path, out: Path) -> dict:
    """micro-F1 plain and with TTA of the model folder `model` on the hold-out."""
    result = out / "result.json"
    if not result.exists():
        germinate("evaluate", str(model), str(holdout), "--out", str(out), "--json", str(result), "--quiet")
    r = json.loads(result.read_text())
    return {"plain": r["plain"]["f1_micro"], "tta": r["f1_micro"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2", help="split seeds, comma-separated (default 1,2)")
    p.add_argument("--flags", default="", help="further `germinate train` flags for both fits")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-final-fit"), help="where the runs are kept")
    args = p.parse_args()
    out = Path(args.out)
    print(f"data {DATA}, flags `{args.flags or '(none)'}`, runs in {out}", flush=True)
    print("| split seed | first fit: validation micro-F1 / TTA | first fit on the hold-out | final fit on the hold-out "
          "| difference with TTA | minutes (both fits) |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        where = out / f"seed{seed}"
        pool, holdout = make_holdout(seed, where)
        run = where / "run"
        finished = (run / "final.json").exists() and "final_fit" in json.loads((run / "final.json").read_text())
        train_or_resume(run, finished, where / "wall_seconds", str(pool), "--seed", str(seed), "--final-fit-all",
                        *args.flags.split())
        final = json.loads((run / "final.json").read_text())
        first_ho = evaluate(run / "first-fit", holdout, where / "eval-first")
        final_ho = evaluate(run, holdout, where / "eval-final")
        minutes = float((where / "wall_seconds").read_text()) / 60 if (where / "wall_seconds").exists() else float("nan")
        print(f"| {seed} | {final['plain']['f1_micro']:.3f} / {final['tta']['f1_micro']:.3f} | "
              f"{first_ho['plain']:.3f} / {first_ho['tta']:.3f} | {final_ho['plain']:.3f} / {final_ho['tta']:.3f} | "
              f"{final_ho['tta'] - first_ho['tta']:+.3f} | {minutes:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
