"""Resume check on the shared data: one run uninterrupted, one stopped by SIGTERM mid-training
(in a real process) and resumed; prints both metrics.csv side by side.

    python benchmarks/check_resume.py [--limit-per-class 30] [--size 64]
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--limit-per-class", default="30")
    p.add_argument("--size", default="64")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "germinate", "train", str(DATA / "train"), "--limit-per-class", args.limit_per_class,
                "--size", args.size, "--preset", "recipe", "--cycles", "3", "--quiet"]
        whole, cut = Path(tmp) / "whole", Path(tmp) / "cut"
        subprocess.run(base + ["--out", str(whole)], check=True)
        proc = subprocess.Popen(base + ["--out", str(cut)], stderr=subprocess.PIPE, text=True)
        while not (cut / "metrics.csv").exists() or len((cut / "metrics.csv").read_text().splitlines()) < 5:
            time.sleep(0.2)
        time.sleep(1.0)  # somewhere inside the next epoch
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
        print(f"interrupted: exit {proc.returncode}: {err.strip()}")
        done = len(list(csv.DictReader(open(cut / "metrics.csv"))))
        subprocess.run([sys.executable, "-m", "germinate", "train", "--resume", str(cut), "--quiet"], check=True)
        a = list(csv.DictReader(open(whole / "metrics.csv")))
        b = list(csv.DictReader(open(cut / "metrics.csv")))
    print(f"\n{'stage':<9}{'epoch':>6} | {'uninterrupted: train_loss valid_loss f1_micro':>46} | {'interrupted + resumed':>36}")
    for i, (x, y) in enumerate(zip(a, b)):
        mark = "  <- resumed inside this epoch" if i == done else ""
        print(f"{x['stage']:<9}{x['epoch']:>6} | {x['train_loss']:>14} {x['valid_loss']:>10} {x['f1_micro']:>9}       "
              f"| {y['train_loss']:>14} {y['valid_loss']:>10} {y['f1_micro']:>9}{mark}")
    same = [x == y for x, y in zip(a, b)]
    print(f"\n{sum(same)}/{len(a)} rows identical; max |difference| "
          f"{max(abs(float(x[k]) - float(y[k])) for x, y in zip(a, b) for k in ('train_loss', 'valid_loss', 'f1_micro')):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
