"""What a run's split was built from: every file used, its class, its split and its size, saved
as split.csv with a SHA-256, so that a resume on changed data is refused with what changed (the
split draws one random stream across classes: one added file moves validation images into
training)."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from germinate.data.bundle import DataBundle
from germinate.data.folders import relative_path
from germinate.errors import GerminateError
from germinate.run import RunFolder

FIELDS = ["file", "class", "split", "bytes"]


def split_rows(data: DataBundle, train_dir: str | os.PathLike, valid_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per image used: path relative to its folder, class, split, size in bytes; and one
    per image --exclude left out of training (split "excluded")."""
    rows = []
    for name, split, root in (("train", data.train, train_dir), ("valid", data.valid, valid_dir or train_dir),
                              ("excluded", data.excluded, train_dir)):
        base = Path(root).absolute()
        for f, label in zip(split.files, split.labels):
            size = Path(f).stat().st_size if Path(f).exists() else -1
            rows.append({"file": relative_path(Path(f).absolute(), base), "class": data.classes[int(label)],
                         "split": name, "bytes": str(size)})
    return rows


def read_file_list(path: str | os.PathLike) -> frozenset[str]:
    """The `file` column of a CSV (split.csv, label_issues.csv, or one of the user's own)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "file" not in (reader.fieldnames or []):
                raise GerminateError(f"{str(path)!r} has no 'file' column: give a CSV whose 'file' column lists paths "
                                     "relative to the training folder (as in split.csv)")
            return frozenset(row["file"] for row in reader if row["file"])
    except OSError as e:
        raise GerminateError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise GerminateError(f"{str(path)!r} is not a CSV file ({e})") from None


def split_images(run_dir: str | os.PathLike, split: str) -> tuple[list[Path], list[str]]:
    """The images of one split ("train" or "valid") of a run folder and their classes, each path
    resolved against the folder the run took it from (its --valid folder, when it had one)."""
    run = RunFolder(run_dir)
    config = run.read_json("config.json")["config"]
    recorded = run.read_csv("split.csv")
    if not recorded:
        raise GerminateError(f"{run / 'split.csv'} is missing: {str(run.path)!r} holds no finished run's split")
    root = Path(config.get("valid_dir") or config["train_dir"]) if split == "valid" else Path(config["train_dir"])
    rows = [r for r in recorded if r["split"] == split]
    return [root / r["file"] for r in rows], [r["class"] for r in rows]


def rows_hash(rows: list[dict]) -> str:
    """SHA-256 of the rows, in order."""
    h = hashlib.sha256()
    for r in rows:
        h.update("\t".join(str(r[k]) for k in FIELDS).encode() + b"\n")
    return h.hexdigest()


def describe_change(old: list[dict], new: list[dict]) -> str | None:
    """What differs between two manifests, in one line; None when they are the same."""
    if rows_hash(old) == rows_hash(new):
        return None
    old_files = {r["file"]: r for r in old}
    new_files = {r["file"]: r for r in new}
    parts = []
    added = sorted(set(new_files) - set(old_files))
    removed = sorted(set(old_files) - set(new_files))
    resized = sorted(f for f in set(old_files) & set(new_files) if old_files[f]["bytes"] != new_files[f]["bytes"])
    moved = sorted(f for f in set(old_files) & set(new_files)
                   if (old_files[f]["class"], old_files[f]["split"]) != (new_files[f]["class"], new_files[f]["split"]))
    for what, names in (("added", added), ("removed or unreadable", removed), ("changed", resized),
                        ("in another class or split", moved)):
        if names:
            parts.append(f"{len(names)} file(s) {what} (e.g. {names[0]!r})")
    return "; ".join(parts) or "the order of the files changed"
