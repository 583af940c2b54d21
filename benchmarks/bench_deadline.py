"""The time budget on a machine whose speed changes after (or during) its speed probe.

The default run (its own 14 minutes; or `--time MIN`; `--args` adds train options, `--preset best`
say) is started, and a CPU load (busy processes taking part of the cores) starts once the probe is done, or, with `--after 0 --until S`, only
while the probe times the machine, which makes it pessimistic; then the plan that run made is run
again unchanged, as `--epochs N`, under the same load: what the budget did before it watched the
pace. Both runs see the same split (one seed) and the same load over the same seconds.

    python benchmarks/bench_deadline.py --seed 42
    python benchmarks/bench_deadline.py --seed 42 --time 6 --load 1 --duty 0.7
    python benchmarks/bench_deadline.py --seed 42 --load 2 --duty 1 --after 0 --until 40 --out runs/bench-probe
    python benchmarks/bench_deadline.py --seed 42 --time 36 --args "--preset best" --load 1 --duty 1 \
        --after 0 --until 90 --out runs/bench-probe-best

Prints per run: the epochs planned and run, the cuts and lengthenings, wall minutes against the budget, the first
epoch's time and the last three's (median; training only, as timings.csv has them), validation micro-F1 plain and with TTA. Runs land in
--out/{budget,uncut}-seed<S> ("uncut": the plan run unchanged); a finished run found there is read,
not run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from germinate.training.plan import Stage

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def busy(duty: float) -> None:
    """Keep one core busy `duty` of the time, in 100 ms slices, until killed."""
    while True:
        end = time.perf_counter() + 0.1 * duty
        while time.perf_counter() < end:
            pass
        time.sleep(0.1 * (1 - duty))


def run_under_load(cmd: list[str], run: Path, after: float, load: int, duty: float, until: float | None) -> None:
    """Run `cmd`, with `load` busy processes from `after` seconds in to `until` (None: the end);
    the wall time to the run folder."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    hogs: list[mp.Process] = []
    try:
        try:
            proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            hogs = [mp.Process(target=busy, args=(duty,), daemon=True) for _ in range(load)]
            for h in hogs:
                h.start()
            try:
                proc.wait(timeout=None if until is None else max(0.0, until - (time.perf_counter() - started)))
            except subprocess.TimeoutExpired:
                for h in hogs:
                    h.terminate()
            proc.wait()
    finally:
        for h in hogs:
            h.terminate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    (run / "bench_wall_seconds").write_text(f"{time.perf_counter() - started:.1f}\n")


def read(run: Path) -> dict:
    """What a finished run measured: epochs, their times, F1, the cuts and lengthenings."""
    final = json.loads((run / "final.json").read_text())
    config = json.loads((run / "config.json").read_text())
    with open(run / "timings.csv") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    plan = [Stage.from_dict(s) for s in config["plan"]]
    several = len(plan) > 1  # with --sizes: the epochs and changes per stage
    changes = "; ".join(f"{s.name} {s.length_changes()}" if several else s.length_changes() for s in plan if s.cuts)
    return {"f1": final["plain"]["f1_micro"], "tta": final["tta"]["f1_micro"],
            "minutes": float((run / "bench_wall_seconds").read_text()) / 60,
            "epochs": "+".join(str(s.n_epochs()) for s in plan) if several else str(len(seconds)),
            "planned": "+".join(str(s.epochs) for s in plan), "changes": changes, "first_s": seconds[0],
            "last_s": statistics.median(seconds[-3:])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--time", type=float, default=None, help="minutes (default: the default's own budget)")
    p.add_argument("--load", type=int, default=1, help="busy processes once the probe is done")
    p.add_argument("--duty", type=float, default=0.6, help="the fraction of the time each keeps its core busy")
    p.add_argument("--after", type=float, default=90.0, help="seconds into the run the load starts")
    p.add_argument("--until", type=float, default=None, help="seconds into the run the load stops (default: its end)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-deadline")
    p.add_argument("--args", default="", help="more train options, as one string (\"--preset best\")")
    a = p.parse_args()
    base = [sys.executable, "-m", "germinate", "train", str(DATA / "train"), "--seed", str(a.seed), "--quiet",
            *shlex.split(a.args)]
    budget = a.out / f"budget-seed{a.seed}"
    if not (budget / "final.json").exists():
        run_under_load([*base, "--out", str(budget), "--overwrite",
                        *(["--time", f"{a.time:g}"] if a.time else [])], budget, a.after, a.load, a.duty, a.until)
    planned = json.loads((budget / "config.json").read_text())["config"]["epochs"]
    uncut = a.out / f"uncut-seed{a.seed}"
    if not (uncut / "final.json").exists():
        run_under_load([*base, "--out", str(uncut), "--overwrite", "--epochs", str(planned)], uncut, a.after,
                       a.load, a.duty, a.until)
    minutes = json.loads((budget / "config.json").read_text())["time_budget"]["minutes"]
    until = f" to {a.until:g} s" if a.until is not None else ""
    print(f"split seed {a.seed}{'; ' + a.args if a.args else ''}; budget {minutes:g} min; load: {a.load} process(es) busy {a.duty:.0%} of the time "
          f"from {a.after:g} s in{until}")
    print("| run | epochs (planned) | cut or lengthened | minutes | first epoch, last three (s) | F1 | F1 with TTA |")
    print("|---|---|---|---|---|---|---|")
    for name, run in (("budgeted (the deadline)", budget), (f"unchanged (--epochs {planned})", uncut)):
        r = read(run)
        cut = r["changes"] or "none"
        print(f"| {name} | {r['epochs']} ({r['planned']}) | {cut} | {r['minutes']:.1f} | "
              f"{r['first_s']:.0f}, {r['last_s']:.0f} | {r['f1']:.3f} | {r['tta']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
