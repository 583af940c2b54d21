"""How much of each photo the plant spans: would cropping to the plant show the network larger plants?

    python benchmarks/plant_extent.py [--per-class 60]

For the first --per-class training images of each class (sorted by name), the plant pixels are
those of `--mask green` (excess green above its threshold, plant_mask.py); the side of the box
holding the 1st to 99th percentile of their rows and columns, over the image side, is printed per
class (median, 10th and 90th percentile). A crop to that box enlarges the plant by 1 / that
fraction at most.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
sys.path.insert(0, str(ROOT / "src"))

from germinate.models.plant_mask import GREEN_THRESHOLD, excess_green  # noqa: E402


def extent(path: Path) -> float:
    """The plant's box side over the image side (1 when fewer than 5 pixels are plant)."""
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
    ys, xs = np.nonzero((excess_green(rgb)[0, 0] > GREEN_THRESHOLD).numpy())
    if len(ys) < 5:
        return 1.0
    (y0, y1), (x0, x1) = np.percentile(ys, [1, 99]), np.percentile(xs, [1, 99])
    return float(max(y1 - y0, x1 - x0) / max(rgb.shape[-2:]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=60)
    args = p.parse_args()
    print("| class | plant box side / image side: median | 10th percentile | 90th percentile |")
    print("| --- | --- | --- | --- |")
    for folder in sorted(d for d in (DATA / "train").iterdir() if d.is_dir()):
        sides = [extent(f) for f in sorted(folder.glob("*.png"))[: args.per_class]]
        print(f"| {folder.name} | {np.median(sides):.2f} | {np.percentile(sides, 10):.2f} | "
              f"{np.percentile(sides, 90):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
