"""Train germinate's default recipe on the shared Plant Seedlings data; print validation
micro-F1 (plain and with TTA) and the wall time, cold cache included.

    python benchmarks/bench_default.py [--data DIR] [--keep RUN_DIR] [any `germinate train` flags]

Target (issue 2): micro-F1 >= 0.95 within 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
    p.add_argument("--keep", help="write the run here instead of a temporary folder")
    args, extra = p.parse_known_args()
    from germinate.cli import main as germinate

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GERMINATE_CACHE"] = str(Path(tmp) / "cache")  # cold cache: decoding is timed too
        run = Path(args.keep or Path(tmp) / "run")
        started = time.perf_counter()
        code = germinate(["train", str(Path(args.data) / "train"), "--out", str(run), "--overwrite", *extra])
        wall = time.perf_counter() - started
        if code != 0:
            return code
        final = json.loads((run / "final.json").read_text())
        metrics = (run / "metrics.csv").read_text().strip().splitlines()
    print(f"\nlast epoch: {metrics[-1]}")
    print(f"validation images: {final['tta']['n']}")
    print(f"micro-F1 plain:    {final['plain']['f1_micro']:.4f}")
    print(f"micro-F1 with TTA: {final['tta']['f1_micro']:.4f} ({final['tta_views']} views)")
    print(f"wall time:         {wall / 60:.2f} min (target: >= 0.95 within 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
