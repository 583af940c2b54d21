"""Use an exported model on folders: predictions and submission files, or evaluation on labelled data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from germinate.data.cache import decode_images
from germinate.data.folders import scan_labelled, scan_unlabelled, write_skipped
from germinate.errors import GerminateError
from germinate.evaluate import metrics as M
from germinate.evaluate import plots
from germinate.evaluate.predict import (
    predict_views,
    tta_views,
    write_probs,
    write_submission,
)
from germinate.models.export import ModelInfo, load_model
from germinate.ui import SILENT, Reporter
from germinate.utils import require_file_path, resolve_device, write_csv_atomic


Runs = str | Path | Sequence[str | Path]


def _models(runs: Runs) -> list[tuple[list, ModelInfo]]:
    """The models of one run folder or several (an ensemble); their classes must agree."""
    folders = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not folders:
        raise GerminateError("no run folder given")
    models = [load_model(f, snapshots=True) for f in folders]
    first = models[0][1].classes
    for folder, (_, info) in zip(folders[1:], models[1:]):
        if info.classes != first:
            raise GerminateError(f"the model in {str(folder)!r} has other classes than the one in {str(folders[0])!r}: "
                                 "an ensemble needs models of the same classes")
    return models


def _predict_files(models, files, where, tta, bs, device, cache_dir, use_cache, reporter):
    """Decode `files` as each model was validated (skipping unreadable ones) and predict with
    TTA: (decoded images, TTA views per model, plain probabilities, TTA probabilities), each
    averaged over the models (an ensemble). None readable is a user error."""
    views, plain, averaged = [], [], []
    for nets, info in models:
        # Each model at its own source size; a file unreadable for one is unreadable for all.
        decoded = decode_images(files, info.source_px, cache_dir, use_cache, reporter=reporter)
        if len(decoded.ok) == 0:
            raise GerminateError(f"none of the {len(files)} images in {str(where)!r} could be read")
        views.append(tta_views(info.flip, tta))
        probs = predict_views(nets, decoded.source, info, views[-1], bs, resolve_device(device), reporter)
        plain.append(probs[0])
        averaged.append(probs.mean(0))
    return decoded, views, np.mean(plain, axis=0), np.mean(averaged, axis=0)


def _describe_views(views: list[list]) -> str:
    counts = sorted({len(v) for v in views})
    models = f" from {len(views)} models" if len(views) > 1 else ""
    return f"{'/'.join(str(c) for c in counts)} TTA view(s){models}"


def predict_folder(
    run_dir: Runs,
    images_dir: str | Path,
    submission: str | Path | None = None,
    probs_path: str | Path | None = None,
    tta: int | None = None,
    bs: int = 64,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    reporter: Reporter = SILENT,
) -> tuple[list[Path], np.ndarray, list[str]]:
    """Predict every readable image in a flat folder; returns (files, probabilities, classes).

    Unreadable images get no row (a submission cannot say "unknown"): they are listed in
    `<submission>.skipped.csv` and counted in a warning. Several run folders: their TTA
    probabilities are averaged (an ensemble).
    """
    for path, what in ((submission, "--submission"), (probs_path, "--probs")):
        if path is not None:
            require_file_path(path, what)
    models = _models(run_dir)
    info = models[0][1]
    items = scan_unlabelled(images_dir)
    decoded, views, _, probs = _predict_files(models, items.files, images_dir, tta, bs, device, cache_dir, use_cache,
                                              reporter)
    skipped = items.skipped + decoded.skipped
    files = [items.files[i] for i in decoded.ok]
    if submission is not None:
        write_submission(submission, files, info.classes, probs)
        if skipped:
            listing = Path(str(submission) + ".skipped.csv")
            write_skipped(listing, skipped)
            reporter.warn(f"{len(skipped)} file(s) could not be read and have no row; listed in {listing}")
        reporter.info(f"wrote {len(files)} predictions to {submission} ({_describe_views(views)})")
    if probs_path is not None:
        write_probs(probs_path, files, info.classes, probs)
    return files, probs, info.classes


def write_confusion_csv(path: Path, cm: np.ndarray, classes: list[str]) -> None:
    """Rows: actual class; columns: predicted class."""
    write_csv_atomic(path, ["actual \\ predicted", *classes], ([c, *row] for c, row in zip(classes, cm.tolist())))


def evaluate_folder(
    run_dir: Runs,
    labelled_dir: str | Path,
    out_dir: str | Path | None = None,
    tta: int | None = None,
    bs: int = 64,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    reporter: Reporter = SILENT,
) -> dict:
    """Metrics of the model on a labelled folder, with and without TTA; writes the confusion
    matrix (CSV and PNG) into `out_dir` (default RUN_DIR/eval-<folder name>, the first run's).
    Several run folders: the models' probabilities are averaged (an ensemble)."""
    models = _models(run_dir)
    info = models[0][1]
    items = scan_labelled(labelled_dir, classes=info.classes)
    unknown = sorted({Path(s.path).parent.name for s in items.skipped if "unknown to the model" in s.reason})
    if unknown:
        reporter.warn(f"classes the model does not know were left out: {', '.join(unknown)}")
    if len(items) == 0:
        raise GerminateError(f"{str(labelled_dir)!r} has no images in any of the model's classes ({', '.join(info.classes)})")
    decoded, views, plain, probs = _predict_files(models, items.files, labelled_dir, tta, bs, device, cache_dir,
                                                  use_cache, reporter)
    if decoded.skipped:
        reporter.warn(f"{len(decoded.skipped)} unreadable image(s) were left out")
    labels = items.labels[decoded.ok]
    result = {**M.full_report(labels, probs, info.classes), "tta_views": max(len(v) for v in views),
              "models": len(models), "plain": M.full_report(labels, plain, info.classes)}
    first = run_dir if isinstance(run_dir, (str, Path)) else run_dir[0]
    out = Path(out_dir) if out_dir else Path(first) / f"eval-{Path(labelled_dir).resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    cm = np.array(result["confusion"])
    write_confusion_csv(out / "confusion.csv", cm, info.classes)
    plots.plot_confusion(cm, info.classes, out / "confusion.png")
    result["outputs"] = str(out)
    return result
