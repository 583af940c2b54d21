"""Pseudo-labels: does a student trained on the test images a teacher labels beat the teacher?

For each split seed, the teacher is a finished `bench_accuracy.py` run (`--teacher best` reads
runs/bench-accuracy/best-seed<S>). It predicts the shared, unlabelled test images with TTA; those
whose top probability reaches --threshold join the run's own training images with the teacher's
label (symlinked into --out/<teacher>-t<threshold>-<student>-seed<S>/train/<class>/pl-<file>), and
the run's validation images are symlinked into valid/ beside it. The student, a bench_accuracy
setting (`--student default`: `germinate train train/ --valid valid/` with the setting's flags,
run and timed by bench_accuracy's `run_one` as student-seed<S> there), then trains on the same
split as the teacher and as bench_accuracy's runs of that seed, so its validation figures compare
directly with the setting's own run there (printed beside it, when found); the teacher and student
averaged are evaluated too. Without the pseudo-labels the student is that run: the same data in the same order
(checked: the default's first epoch, to the last digit of its loss).

    python benchmarks/bench_pseudo_labels.py --seeds 42
    python benchmarks/bench_pseudo_labels.py --seeds 1,2,3 --teacher best --student best
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_accuracy import SETTINGS, run_one  # noqa: E402  (the settings, and how one is run, shared)

from germinate.data.manifest import split_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
RUNS = ROOT / "runs" / "bench-accuracy"


def germinate(*args: str) -> float:
    """Run a germinate command; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "germinate", *args, "--quiet"], check=True)
    return time.perf_counter() - started


def figures(run: Path) -> str:
    """'micro-F1 / with TTA' of a finished run."""
    final = json.loads((run / "final.json").read_text())
    return f"{final['plain']['f1_micro']:.3f} / {final['tta']['f1_micro']:.3f}"


def make_folders(teacher: Path, probs: Path, threshold: float, where: Path) -> tuple[int, int]:
    """train/ (the teacher's training split plus the confident test images) and valid/ (its
    validation split) under `where`, as symlinks; (test images taken, test images labelled)."""
    if not (where / "valid").exists():
        for split in ("train", "valid"):
            for file, label in zip(*split_images(teacher, split)):
                dst = where / split / label / file.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(file.resolve())
    taken = labelled = 0
    with open(probs) as f:
        reader = csv.reader(f)
        classes = next(reader)[1:]
        for row in reader:
            labelled += 1
            p = [float(v) for v in row[1:]]
            k = max(range(len(p)), key=p.__getitem__)
            if p[k] >= threshold:
                dst = where / "train" / classes[k] / f"pl-{row[0]}"
                if not dst.is_symlink():
                    dst.symlink_to((DATA / "test" / row[0]).resolve())
                taken += 1
    return taken, labelled


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="42", help="split seeds, comma-separated (default 42)")
    p.add_argument("--teacher", default="best", choices=sorted(SETTINGS),
                   help="the bench_accuracy setting whose finished runs label (default best)")
    p.add_argument("--threshold", type=float, default=0.9, help="top probability a test image needs (default 0.9)")
    p.add_argument("--student", default="default", choices=sorted(SETTINGS),
                   help="the bench_accuracy setting the student trains with (default: default)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench-pseudo-labels"), help="where the runs are kept")
    args = p.parse_args()
    out = Path(args.out)
    print(f"data {DATA}, teacher `{args.teacher}`, threshold {args.threshold}, student `{args.student}` (flags "
          f"`{SETTINGS[args.student]}`), runs in {out}", flush=True)
    print(f"| split seed | teacher: micro-F1 / TTA | test images taken | student | `{args.student}` without them "
          "| teacher and student averaged, TTA | minutes: labelling + student |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        teacher = RUNS / f"{args.teacher}-seed{seed}"
        if not (teacher / "final.json").exists():
            print(f"no finished teacher run {teacher}: run `python benchmarks/bench_accuracy.py --settings "
                  f"{args.teacher} --seeds {seed}` first", file=sys.stderr)
            return 2
        where = out / f"{args.teacher}-t{args.threshold}-{args.student}-seed{seed}"
        where.mkdir(parents=True, exist_ok=True)
        probs = where / "teacher_probs.csv"
        if not probs.exists():
            seconds = germinate("predict", str(teacher), str(DATA / "test"), "--submission",
                                str(where / "teacher_submission.csv"), "--probs", str(probs))
            (where / "labelling_seconds").write_text(f"{seconds:.1f}\n")
        taken, labelled = make_folders(teacher, probs, args.threshold, where)
        student_figures = run_one("student", SETTINGS[args.student], seed, where, train_dir=where / "train",
                                  valid_dir=where / "valid")
        student = student_figures["run"]
        student_f1 = f"{student_figures['f1']:.3f} / {student_figures['tta']:.3f}"
        both = where / "ensemble.json"
        if not both.exists():
            germinate("evaluate", str(teacher), str(student), str(where / "valid"), "--out",
                      str(where / "eval-ensemble"), "--json", str(both))
        labelling = where / "labelling_seconds"
        minutes = float(labelling.read_text()) / 60 if labelling.exists() else float("nan")
        alone = RUNS / f"{args.student}-seed{seed}"
        print(f"| {seed} | {figures(teacher)} | {taken} of {labelled} | {student_f1} | "
              f"{figures(alone) if (alone / 'final.json').exists() else 'not run'} | "
              f"{json.loads(both.read_text())['f1_micro']:.3f} | {minutes:.1f} + {student_figures['minutes']:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
