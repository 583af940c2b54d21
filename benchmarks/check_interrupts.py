"""Ctrl-C in every phase of a real run on the shared data: how long until it stops, and whether
the resumed run ends exactly like the uninterrupted one (metrics.csv, lrs.csv, weights).

    python benchmarks/check_interrupts.py [--limit-per-class 20] [--size 64] [--phases NAME ...]

For each phase a run is started with a reporter that sends the process SIGINT (as Ctrl-C does)
at the phase's first progress step; the time from the signal to the TrainingInterrupted exit is
printed, then the run is resumed and compared with an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
PHASES = ["recalibrating batchnorm", "precomputing features", "LR range test", "head", "unfrozen", "validating",
          "predicting"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--limit-per-class", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--phases", nargs="*", default=PHASES, help="which phases (default: all)")
    args = p.parse_args()
    from safetensors.torch import load_file

    from germinate import TrainConfig, resume, train
    from germinate.errors import TrainingInterrupted
    from germinate.ui import Reporter

    class SignalAt(Reporter):
        def __init__(self, phase: str):
            super().__init__(quiet=True)
            self.phase, self.sent = phase, None

        @contextlib.contextmanager
        def progress(self, description: str, total: int):
            def advance(n=1, **fields):
                if self.sent is None and description.startswith(self.phase):
                    self.sent = time.perf_counter()
                    os.kill(os.getpid(), signal.SIGINT)

            yield advance

    cfg = TrainConfig.from_preset("recipe", train_dir=str(DATA / "train"), limit_per_class=args.limit_per_class,
                                  size=args.size, freeze_epochs=1, cycles=2, cycle_mult=1, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole"
        train(cfg, whole)
        print(f"{'phase':<26}{'seconds to stop':>16}  resumed run equals the uninterrupted one")
        for phase in args.phases:
            cut = Path(tmp) / phase.replace(" ", "-")
            reporter = SignalAt(phase)
            try:
                train(cfg, cut, reporter=reporter)
                print(f"{phase:<26}{'(not stopped)':>16}")
                continue
            except TrainingInterrupted:
                stopped = time.perf_counter() - reporter.sent
            resume(cut)
            same = all((cut / n).read_text() == (whole / n).read_text() for n in ("metrics.csv", "lrs.csv"))
            a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
            same = same and all(bool((a[k] == b[k]).all()) for k in a)
            print(f"{phase:<26}{stopped:>16.2f}  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
