"""`--folds K`: K runs over one labelled folder, each validating on its own stratified K-th of the
images, so that every image is validated once, by the one model that did not train on it.

RUN/fold-1 .. RUN/fold-K are ordinary run folders (each with its report; `--folds K --fold I` runs
one alone). RUN itself holds config.json (the settings), oof.csv (each image's out-of-fold
probabilities and fold), label_issues.csv (the images whose labels those predictions doubt, for
`--exclude`), final.json (the out-of-fold micro-F1 over all the images, plain and with
TTA, and each fold's own figures), per_class.csv, confusion.png, report.html, and a model.json that
names the K folds' weights: predict, evaluate, serve and export use RUN as the ensemble of the K
models, their TTA probabilities averaged. The out-of-fold figures are those of single models on
images they did not see; the ensemble's own accuracy can only be measured on images none of them
saw (benchmarks/bench_folds.py keeps a hold-out for that).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from germinate._version import __version__
from germinate.config import TrainConfig
from germinate.data.folders import limit_per_class, scan_labelled, stratified_folds
from germinate.errors import GerminateError, TrainingInterrupted
from germinate.evaluate import metrics as M
from germinate.evaluate import plots
from germinate.evaluate.label_issues import FIELDS as ISSUE_FIELDS
from germinate.evaluate.label_issues import LABEL_ISSUE_BELOW, issue_rows
from germinate.evaluate.report import write_report
from germinate.models.export import export_ensemble, read_info
from germinate.run import RunFolder, is_run_entry
from germinate.ui import Reporter

OOF_FIELDS = ["file", "class", "fold", "predicted"]


def fold_dir(run: RunFolder, i: int) -> Path:
    """RUN/fold-i (i from 1)."""
    return run / f"fold-{i}"


def fold_state(path: Path) -> str:
    """'done' (finished), 'started' (resumable) or 'new' (nothing worth keeping) for a fold's folder."""
    if (path / "final.json").exists():
        return "done"
    if (path / "config.json").exists():
        return "started"
    return "new"


def train_folds(cfg: TrainConfig, out: str | Path, overwrite: bool = False, reporter: Reporter | None = None,
                resuming: bool = False):
    """Train the K folds of `cfg` one after another into RUN/fold-1..K, then assemble RUN's
    out-of-fold figures and ensemble model. `resuming`: continue a K-fold run, finished folds kept.
    Returns the last fold's learner (None if every fold had already finished)."""
    from germinate.recipe import RESUME_SAFE, join_world, resume, train

    world, reporter = join_world(cfg, reporter)
    run = RunFolder(out)
    if resuming:
        if (run / "final.json").exists():
            raise GerminateError(f"the run in {str(run.path)!r} has already finished")
    else:
        world.on_main(lambda: (run.check_writable(overwrite), _check_classes(cfg)))
        if world.is_main:
            run.create(overwrite, checkpoints=False)
            run.write_json("config.json", {"germinate_version": __version__, "command": cfg.command(run.path),
                                           "config": cfg.to_dict(), "folds": cfg.folds})
    k, learn = cfg.folds, None
    same_machine = {name: getattr(cfg, name) for name in RESUME_SAFE}
    for i in range(1, k + 1):
        path = fold_dir(run, i)
        state = world.on_main(lambda: _prepare(path))
        if state == "done":
            continue
        reporter.info(f"fold {i} of {k}: validating on 1/{k} of the images, training on the rest")
        try:
            if state == "started":
                learn = resume(path, reporter, **same_machine)
            else:
                learn = train(dataclasses.replace(cfg, fold=i), path, reporter=reporter)
        except TrainingInterrupted as e:
            raise TrainingInterrupted(str(run.path)) from e  # the K-fold run resumes as a whole
    if world.is_main:
        finish_folds(run, k, reporter)
    return learn


def _check_classes(cfg: TrainConfig) -> None:
    """Refuse too many folds for the smallest class before anything is written (a scan, no decoding)."""
    items = scan_labelled(cfg.train_dir)
    labels = items.labels
    if cfg.limit_per_class:
        labels = labels[limit_per_class(labels, cfg.limit_per_class, cfg.seed)]
    stratified_folds(labels, cfg.folds, cfg.seed, items.classes)


def _prepare(path: Path) -> str:
    """The fold's state; a fold stopped before its run folder was whole is cleared to start again."""
    state = fold_state(path)
    if state == "new" and path.exists():
        if not is_run_entry(path):
            raise GerminateError(f"{str(path)!r} holds files germinate did not write; move them away to go on")
        shutil.rmtree(path)
    return state


def _fold_probs(run: RunFolder, i: int, classes: list[str]) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """A finished fold's validation rows, labels, and plain and TTA probabilities."""
    from germinate.finish import read_valid_probs

    path = fold_dir(run, i) / "valid_probs.csv"
    try:
        rows, _, plain, tta = read_valid_probs(fold_dir(run, i), classes)
        labels = np.array([classes.index(r["class"]) for r in rows])
    except (KeyError, ValueError) as e:
        raise GerminateError(f"{path} does not match the model's classes: {e}") from e
    if not rows:
        raise GerminateError(f"{path} is missing or empty: was fold {i} run by an older germinate? Run it again "
                             "with --overwrite")
    return rows, labels, plain, tta


def finish_folds(run: RunFolder, k: int, reporter: Reporter) -> dict:
    """RUN's figures from its K finished folds: out-of-fold metrics, oof.csv, the ensemble model."""
    members = [fold_dir(run, i).name for i in range(1, k + 1)]
    export_ensemble(run.path, members)
    info = read_info(run.path)
    classes = info.classes
    rows, labels, plain, tta, per_fold = [], [], [], [], []
    for i in range(1, k + 1):
        r, y, p, t = _fold_probs(run, i, classes)
        fold = RunFolder(fold_dir(run, i)).read_json("final.json")
        per_fold.append({"fold": i, "images": len(r), "plain": fold["plain"]["f1_micro"],
                         "tta": fold["tta"]["f1_micro"], "seconds": fold["seconds"],
                         "processes": fold.get("processes", 1)})
        rows += [{**row, "fold": i} for row in r]
        labels.append(y), plain.append(p), tta.append(t)
        views = fold["tta_views"]  # the same in every fold: one config
    labels, plain, tta = np.concatenate(labels), np.concatenate(plain), np.concatenate(tta)
    p_report, t_report = M.full_report(labels, plain, classes), M.full_report(labels, tta, classes)
    seconds = sum(f["seconds"] for f in per_fold)
    final = {"plain": p_report, "tta": t_report, "tta_views": views, "snapshots": len(info.snapshots) + 1,
             # folds can run on different launches (--folds K --fold I, or a resume under torchrun)
             "seconds": seconds, "processes": max(f["processes"] for f in per_fold),
             "folds": {"k": k, "out_of_fold": True, "per_fold": per_fold,
                       "figures": "out of fold: each image predicted by the fold model that did not train on it"}}
    predicted = tta.argmax(1)
    run.write_csv("oof.csv", [{"file": r["file"], "class": r["class"], "fold": r["fold"],
                               "predicted": classes[int(c)], **{f"tta:{n}": r[f"tta:{n}"] for n in classes}}
                              for r, c in zip(rows, predicted)],
                  OOF_FIELDS + [f"tta:{n}" for n in classes])
    issues = issue_rows(rows, labels, tta, classes)
    run.write_csv("label_issues.csv", issues, ISSUE_FIELDS)
    run.write_json("final.json", final)
    from germinate.finish import write_per_class

    write_per_class(run, t_report)
    plots.plot_confusion(np.array(t_report["confusion"]), classes, run / "confusion.png")
    write_report(run.path)
    reporter.info(f"{len(issues)} image(s) look mislabelled (out of fold another class, their own label under "
                  f"{LABEL_ISSUE_BELOW:g} with TTA): listed in label_issues.csv; --exclude it to train without them")
    spread = ", ".join(f"{f['tta']:.3f}" for f in per_fold)
    reporter.info(f"out-of-fold micro-F1 {p_report['f1_micro']:.4f}, with TTA {t_report['f1_micro']:.4f}, over "
                  f"{len(labels)} images ({k} folds; with TTA each: {spread}); {seconds / 60:.1f} min of training in "
                  f"all; {run.path} predicts with the {k} models together")
    return final
