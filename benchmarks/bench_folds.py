"""What `--folds K` buys, measured on images none of its models has seen.

For each split seed, a stratified fifth of the shared training images is set aside as a hold-out
(bench_final_fit's: symlinked into --out/seed<S>/holdout/<class>/, the rest into pool/), and
`germinate train pool --folds K` trains K models, each on (K-1)/K of the pool. Printed per seed:
the run's out-of-fold micro-F1 (each pool image scored by the fold model that did not train on it),
each fold model alone on the hold-out (mean and range: what one run of the same settings gives),
and the K models together on the hold-out (what `predict RUN` gives), plain and with TTA, and the
minutes. Single models and the ensemble see the same hold-out, so the difference is paired. A
finished run found in --out is read, not run again (an interrupted one is resumed).

    python benchmarks/bench_folds.py --seeds 1 --folds 5
    python benchmarks/bench_folds.py --seeds 1 --folds 3 --flags "--epochs 6"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_final_fit import DATA, ROOT, evaluate, make_holdout, train_or_resume  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1", help="split seeds, comma-separated (default 1)")
    p.add_argument("--folds", type=int, default=5, help="K (default 5)")
    p.add_argument("--flags", default="", help="further `germinate train` flags")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-folds"), help="where the runs are kept")
    args = p.parse_args()
    out = Path(args.out)
    print(f"data {DATA}, --folds {args.folds}, flags `{args.flags or '(none)'}`, runs in {out}", flush=True)
    print("| split seed | out-of-fold micro-F1 / TTA | one fold model on the hold-out: mean (range) / TTA | the "
          f"{args.folds} together on the hold-out / TTA | ensemble minus one model, with TTA | minutes (training, "
          "all folds) |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        where = out / f"seed{seed}"
        pool, holdout = make_holdout(seed, where)
        run = where / f"folds{args.folds}{'-' + '_'.join(args.flags.split()) if args.flags else ''}"
        train_or_resume(run, (run / "final.json").exists(), run.parent / f"{run.name}.wall_seconds", str(pool),
                        "--seed", str(seed), "--folds", str(args.folds), *args.flags.split())
        final = json.loads((run / "final.json").read_text())
        singles = [evaluate(run / f"fold-{i}", holdout, run.parent / f"{run.name}-eval-fold-{i}")
                   for i in range(1, args.folds + 1)]
        together = evaluate(run, holdout, run.parent / f"{run.name}-eval-all")

        def mean(key: str) -> float:
            return sum(s[key] for s in singles) / len(singles)

        span = f"({min(s['plain'] for s in singles):.3f}-{max(s['plain'] for s in singles):.3f})"
        tta_span = f"({min(s['tta'] for s in singles):.3f}-{max(s['tta'] for s in singles):.3f})"
        print(f"| {seed} | {final['plain']['f1_micro']:.3f} / {final['tta']['f1_micro']:.3f} | "
              f"{mean('plain'):.3f} {span} / {mean('tta'):.3f} {tta_span} | "
              f"{together['plain']:.3f} / {together['tta']:.3f} | {together['tta'] - mean('tta'):+.3f} | "
              f"{final['seconds'] / 60:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
