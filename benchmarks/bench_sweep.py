"""Compare training settings side by side on the same data, split and seed.

Each argument after the data folder is one setting: `germinate train` flags in one string
("" is the default recipe). Prints, per setting, the epochs, the wall time (warm cache: the
first setting pays for decoding) and validation micro-F1 plain and with TTA.

    python benchmarks/bench_sweep.py TRAIN_DIR "" "--size 176 --cycles 3" [--log FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_dir")
    p.add_argument("settings", nargs="+", help='flags for one run, quoted; "" for the defaults')
    p.add_argument("--common", default="", help="flags added to every run (e.g. --device cuda --workers 8)")
    p.add_argument("--log", help="also append each result row to this file as it lands")
    args = p.parse_args()
    from germinate.cli import main as germinate

    tmp = Path(tempfile.mkdtemp(prefix="germinate-sweep-"))
    os.environ.setdefault("GERMINATE_CACHE", str(tmp / "cache"))
    header = f"{'setting':44} {'epochs':>6} {'min':>6} {'F1':>7} {'F1 TTA':>7}"
    print(header)
    if args.log:
        Path(args.log).write_text(header + "\n")
    for i, setting in enumerate(args.settings):
        run = tmp / f"run{i}"
        flags = [*setting.split(), *args.common.split(), "--quiet"]
        started = time.perf_counter()
        code = germinate(["train", args.train_dir, "--out", str(run), "--overwrite", *flags])
        minutes = (time.perf_counter() - started) / 60
        if code != 0:
            row = f"{setting or '(default)':44} failed with exit code {code}"
        else:
            final = json.loads((run / "final.json").read_text())
            with open(run / "metrics.csv", newline="") as f:
                epochs = sum(1 for _ in csv.DictReader(f))
            row = (f"{setting or '(default)':44} {epochs:6d} {minutes:6.2f} "
                   f"{final['plain']['f1_micro']:7.4f} {final['tta']['f1_micro']:7.4f}")
        print(row, flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
