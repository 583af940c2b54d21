"""How much the source images' resolution limits accuracy: a run on the shared images shrunk.

The shared images are 150 px (Kaggle's originals are larger). This writes copies of the shared
training images shrunk so that their longer side is each --px (Lanczos, into --out/px<N>/train/,
once) and trains one of bench_accuracy's settings on them with the same split seed; the split only
depends on the seed and the file list, so every source size validates on the same images. The
150 px row is bench_accuracy's own run of the setting (`--setting default` reads
runs/bench-accuracy/default-seed<S>). If accuracy falls as the source shrinks at a fixed training
size, the detail the source holds is what a model is short of, and larger originals would lift it.

    python benchmarks/bench_source_size.py --px 100,125 --seeds 42
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import SETTINGS, run_one  # noqa: E402  (one list of settings, one way to run them)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
RUNS = ROOT / "runs" / "bench-accuracy"


def shrink(px: int, where: Path) -> Path:
    """The shared training images at `px` x `px` under `where` (written once)."""
    done = where / "complete"
    if not done.exists():
        for src in sorted((DATA / "train").glob("*/*")):
            dst = where / "train" / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as im:
                scale = px / max(im.size)
                small = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)),
                                                 Image.Resampling.LANCZOS)
                small.save(dst.with_suffix(".png"))
        done.touch()
    return where / "train"


def figures(r: dict) -> str:
    """A table row's figures from run_one's results."""
    return f"{r['f1']:.3f} | {r['tta']:.3f} | {r['loss']:.3f} | {r['minutes']:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--px", default="100,125", help="source sizes to shrink to, comma-separated (default 100,125)")
    p.add_argument("--seeds", default="42", help="split seeds, comma-separated (default 42)")
    p.add_argument("--setting", default="default", choices=sorted(SETTINGS),
                   help="the bench_accuracy setting to train (default: default); its own runs are the 150 px rows")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-source-size"), help="where images and runs are kept")
    args = p.parse_args()
    out = Path(args.out)
    flags = SETTINGS[args.setting]
    print(f"data {DATA}, setting `{args.setting}` (flags `{flags}`), runs in {out}", flush=True)
    print("| source px | split seed | micro-F1 | with TTA | valid loss | minutes |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        if (RUNS / f"{args.setting}-seed{seed}" / "final.json").exists():  # read, never trained here
            print(f"| 150 (the shared images; `{args.setting}`) | {seed} | "
                  f"{figures(run_one(args.setting, flags, seed, RUNS))} |", flush=True)
        for px in [int(s) for s in args.px.split(",")]:
            train = shrink(px, out / f"px{px}")
            r = run_one(f"{args.setting}-px{px}", flags, seed, out, train)
            print(f"| {px} | {seed} | {figures(r)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
