"""Find images and labels in a folder; split them; report what was skipped and why."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from germinate.data.images import is_image_name
from germinate.errors import GerminateError
from germinate.utils import write_csv_atomic

EXTENSIONS_TEXT = "png jpg jpeg bmp webp tif"  # what a message about a folder with no images lists


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class ImageList:
    """Image files, their labels (-1 when unlabelled), the class names and what was skipped."""

    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    skipped: list[Skipped] = field(default_factory=list)

    @classmethod
    def empty(cls, classes: list[str]) -> ImageList:
        """No images, over `classes`."""
        return cls([], np.zeros(0, dtype=np.int64), classes)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx: np.ndarray | list[int]) -> ImageList:
        """The items at `idx` (same classes; skipped list kept)."""
        idx = np.asarray(idx, dtype=np.int64)
        return ImageList([self.files[i] for i in idx], self.labels[idx], self.classes, self.skipped)

    def counts(self) -> dict[str, int]:
        """Number of images per class, in class order."""
        binc = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, binc)}


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to `root`, as split.csv records it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # outside its folder (a symlinked tree): keep the whole path
        return str(path)


def _walk_files(root: Path) -> list[Path]:
    """Every file under `root`, following symlinks but never looping, in a stable order."""
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink cycle: do not descend again
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def _split_images(paths: list[Path]) -> tuple[list[Path], list[Skipped]]:
    images, skipped = [], []
    for p in paths:
        if is_image_name(p) and p.is_file():
            images.append(p)
        else:
            skipped.append(Skipped(str(p), "not an image file" if p.exists() else "broken link"))
    return images, skipped


def _check_dir(root: str | os.PathLike, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise GerminateError(f"{what} {str(root)!r} does not exist")
    if not root.is_dir():
        raise GerminateError(f"{what} {str(root)!r} is not a folder")
    return root


def scan_labelled(root: str | os.PathLike, classes: list[str] | None = None) -> ImageList:
    """Index `root/<class>/**/<image>`; class names sorted, or as given in `classes`."""
    root = _check_dir(root, "labelled folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and is_image_name(p)]
    if not subdirs:
        hint = " (it holds images directly: is it an unlabelled folder?)" if loose else ""
        raise GerminateError(f"{str(root)!r} has no class subfolders; expected {root}/<class>/<image>{hint}")
    skipped = [Skipped(str(p), "image outside any class folder") for p in loose]
    found: dict[str, list[Path]] = {}
    for d in subdirs:
        images, bad = _split_images(_walk_files(d))
        skipped.extend(bad)
        if images:
            found[d.name] = images
        else:
            skipped.append(Skipped(str(d), "class folder with no images"))
    if not found:  # (the class folders hold other files, or nothing)
        raise GerminateError(f"the class subfolders of {str(root)!r} hold no images (extensions: {EXTENSIONS_TEXT})")
    names = sorted(found) if classes is None else list(classes)
    files, labels = [], []
    for i, name in enumerate(names):
        files.extend(found.get(name, []))
        labels.extend([i] * len(found.get(name, [])))
    for name in sorted(set(found) - set(names)):
        skipped.extend(Skipped(str(p), f"class {name!r} unknown to the model") for p in found[name])
    return ImageList(files, np.asarray(labels, dtype=np.int64), names, skipped)


def scan_unlabelled(root: str | os.PathLike) -> ImageList:
    """Index the images directly inside `root` (a flat folder, as Kaggle's test/)."""
    root = _check_dir(root, "image folder")
    entries = sorted(root.iterdir())
    images, skipped = _split_images([p for p in entries if not p.is_dir()])
    if not images:
        if any(p.is_dir() for p in entries):
            raise GerminateError(
                f"{str(root)!r} holds no images, only subfolders: it looks like a labelled folder "
                "(use 'germinate evaluate' for labelled data, or point at the folder of images)"
            )
        raise GerminateError(f"{str(root)!r} holds no images (extensions: {EXTENSIONS_TEXT})")
    return ImageList(images, np.full(len(images), -1, dtype=np.int64), [], skipped)


def require_classes(items: ImageList, where: str) -> None:
    """Refuse data with fewer than two usable classes."""
    usable = [c for c, n in items.counts().items() if n > 0]
    if len(usable) < 2:
        raise GerminateError(f"{where} has {len(usable)} usable class(es); at least 2 are needed")


def stratified_split(labels: np.ndarray, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping each class's share: round(n * valid_pct) of each class, at least 1
    when the class has 2 or more images. Returns sorted (train_idx, valid_idx)."""
    if not 0.0 < valid_pct < 1.0:
        raise GerminateError(f"--valid-pct must be between 0 and 1, got {valid_pct}")
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_valid = int(round(len(idx) * valid_pct))
        if len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        else:
            n_valid = 0
        valid.append(idx[:n_valid])
        train.append(idx[n_valid:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def stratified_folds(labels: np.ndarray, k: int, seed: int, classes: list[str] | None = None) -> list[np.ndarray]:
    """Seeded stratified K-fold (scikit-learn's StratifiedKFold, shuffled): k sorted index arrays,
    each image in exactly one, each keeping the classes' shares. Every class needs k images, so
    that each fold validates on every class."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    small = [(c, int(n)) for c, n in enumerate(counts) if 0 < n < k]
    if small:
        name = repr(classes[small[0][0]]) if classes else small[0][0]
        raise GerminateError(f"--folds {k} needs at least {k} images in each class; class {name} has "
                             f"{small[0][1]} (use fewer folds)")
    kfold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
    return [np.sort(valid) for _, valid in kfold.split(np.zeros(len(labels)), labels)]


def limit_per_class(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of at most `k` images per class, chosen with `seed`, sorted."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(idx)[:k]))
    return np.sort(np.concatenate(keep))


def write_skipped(path: str | os.PathLike, skipped: list[Skipped]) -> None:
    """Write `path,reason` rows (always, even when empty, so its absence never means 'unknown')."""
    write_csv_atomic(path, ["path", "reason"], ((s.path, s.reason) for s in skipped))
