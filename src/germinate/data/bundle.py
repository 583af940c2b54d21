"""The data a learner needs: decoded training and validation images, labels, classes, skips."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from germinate.data.cache import ImageSource, decode_images
from germinate.data.folders import (
    ImageList,
    Skipped,
    limit_per_class,
    relative_path,
    require_classes,
    scan_labelled,
    stratified_folds,
    stratified_split,
)
from germinate.errors import GerminateError
from germinate.ui import SILENT, Reporter


@dataclass
class Split:
    """Decoded images of one split, their labels and file paths, in the same order."""

    source: ImageSource
    labels: np.ndarray
    files: list[Path]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """Training and validation splits over one list of classes."""

    classes: list[str]
    train: Split
    valid: Split
    excluded: ImageList  # --exclude: the training images left out (empty without it)
    skipped: list[Skipped] = field(default_factory=list)


def decode_split(items: ImageList, px: int, cache_dir, use_cache: bool, reporter: Reporter) -> tuple[Split, list[Skipped]]:
    """Decode `items` (skipping unreadable files) into a Split."""
    decoded = decode_images(items.files, px, cache_dir, use_cache, reporter=reporter)
    files = [items.files[i] for i in decoded.ok]
    return Split(decoded.source, items.labels[decoded.ok], files), decoded.skipped


def _take(split: Split, idx: np.ndarray) -> Split:
    return Split(split.source.subset(idx), split.labels[idx], [split.files[i] for i in idx])


def _leave_out(train: Split, exclude: Collection[str], root: Path, rel: dict[Path, str],
               classes: list[str]) -> tuple[Split, ImageList]:
    """`train` less the images listed in `exclude` (paths relative to `root`, the training folder,
    as in split.csv; `rel` maps each of the folder's images to that path), and what it left out.
    Every listed path must be one of the folder's images, so that a list for another folder is
    refused rather than silently leaving nothing out."""
    unknown = sorted(set(exclude) - set(rel.values()))
    if unknown:
        raise GerminateError(f"--exclude: {len(unknown)} of its {len(set(exclude))} files are not images in {root} "
                             f"(first: {unknown[0]!r}); paths are relative to the training folder, as in split.csv")
    out = np.array([i for i, f in enumerate(train.files) if rel.get(f) in exclude], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(train)), out)
    return _take(train, keep), ImageList([train.files[i] for i in out], train.labels[out], classes)


def load_folder(
    train_dir: str | os.PathLike,
    px: int,
    valid_pct: float = 0.2,
    valid_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    reporter: Reporter = SILENT,
    valid_px: int | None = None,
    merge_valid: bool = False,
    fold: tuple[int, int] | None = None,
    exclude: Collection[str] = (),
) -> DataBundle:
    """Scan, check and decode a labelled folder; split it (stratified, seeded) unless `valid_dir`.

    Training images are decoded at `px`, validation images at `valid_px` (default `px`): the
    model is evaluated at another size than it trains at, from a source of its own.
    `merge_valid` (a final fit on all the data): the validation images join the training split
    too; the validation split is still the same one. `fold` (i, k): validate on the i-th (from 1)
    of k stratified folds instead of a `valid_pct` share. `exclude`: paths (relative to `train_dir`)
    left out of training, after the split is drawn, so the split is the one without them;
    a listed image that falls in the validation split stays there.
    """
    valid_px = valid_px or px
    items = scan_labelled(train_dir)
    root = Path(train_dir).absolute()
    rel = {f: relative_path(Path(f).absolute(), root) for f in items.files} if exclude else {}
    skipped = list(items.skipped)
    if limit:
        items = items.subset(limit_per_class(items.labels, limit, seed))
    everything, bad = decode_split(items, px, cache_dir, use_cache, reporter)
    skipped += bad
    if valid_dir is None:
        if fold:
            valid_idx = stratified_folds(everything.labels, fold[1], seed, items.classes)[fold[0] - 1]
            train_idx = np.setdiff1d(np.arange(len(everything)), valid_idx)
        else:
            train_idx, valid_idx = stratified_split(everything.labels, valid_pct, seed)
        valid = _take(everything, valid_idx)
        # a final fit trains on every labelled image, already decoded at the training size
        train = everything if merge_valid else _take(everything, train_idx)
        if valid_px != px:
            valid, bad = decode_split(ImageList(valid.files, valid.labels, items.classes), valid_px, cache_dir, use_cache, reporter)
            skipped += bad  # only a file changed since it was first read
    else:
        vitems = scan_labelled(valid_dir, classes=items.classes)
        if not len(vitems):
            raise GerminateError(f"validation folder {str(valid_dir)!r} has no images in the training classes "
                                 f"({', '.join(items.classes)})")
        skipped += vitems.skipped
        if limit:
            vitems = vitems.subset(limit_per_class(vitems.labels, limit, seed))
        valid, bad = decode_split(vitems, valid_px, cache_dir, use_cache, reporter)
        skipped += bad
        train = everything
        if merge_valid:  # the validation folder's images join the training ones, at the training size
            merged = ImageList(list(train.files) + list(valid.files), np.concatenate([train.labels, valid.labels]),
                               items.classes)
            train, _ = decode_split(merged, px, cache_dir, use_cache, reporter)
    excluded = ImageList.empty(items.classes)
    if exclude:
        train, excluded = _leave_out(train, exclude, root, rel, items.classes)
    bundle = DataBundle(items.classes, train, valid, excluded, skipped)
    require_classes(ImageList(train.files, train.labels, items.classes), str(train_dir))
    return bundle
