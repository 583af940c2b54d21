"""A run is a folder: resolved config, logs (CSV), plots (PNG), checkpoints and the exported model.
Everything a later command (predict, evaluate, report, resume) needs is in it."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from germinate.errors import GerminateError
from germinate.utils import write_text_atomic

# What a run (and predict/evaluate writing into it) leaves in its folder: anything else there was
# put by someone else, and --overwrite will not delete it.
RUN_FILES = ("config.json", "split.csv", "skipped.csv", "metrics.csv", "timings.csv", "lrs.csv", "final.json",
             "per_class.csv", "model.json", "model.safetensors", "model.onnx", "model.onnx.json", "report.html", "curves.png",
             "schedule.png", "confusion.png", "top_losses.png", "lr_find_*", "snapshot-*.safetensors",
             "submission.csv", "submission.csv.skipped.csv", "valid_probs.csv", "oof.csv", "label_issues.csv", ".*.tmp")
RUN_DIRS = {"checkpoints": ("last.pt", "best.safetensors", ".*.tmp"), "eval-*": ("confusion.csv", "confusion.png", ".*.tmp"),
            # --final-fit-all: the first fit's model, and the final fit's logs and checkpoint
            "first-fit": ("model.json", "model.safetensors", ".*.tmp"),
            "final-fit": ("last.pt", "metrics.csv", "timings.csv", "lrs.csv", ".*.tmp")}
NESTED_RUNS = ("fold-*",)  # --folds: each fold is a run folder of its own inside the run's


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_run_entry(path: Path) -> bool:
    """True for a file or folder (with everything in it) that a germinate run writes."""
    if path.is_symlink() or not path.is_dir():
        return _matches(path.name, RUN_FILES) and not path.is_symlink()
    if _matches(path.name, NESTED_RUNS):
        return all(is_run_entry(p) for p in path.iterdir())
    inner = next((v for k, v in RUN_DIRS.items() if fnmatch.fnmatchcase(path.name, k)), None)
    return inner is not None and all(p.is_file() and not p.is_symlink() and _matches(p.name, inner) for p in path.iterdir())


class RunFolder:
    """Paths and writers for one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        """The resumable checkpoint of the last completed step."""
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        """Weights of the epoch with the best validation micro-F1."""
        return self.path / "checkpoints" / "best.safetensors"

    def exists(self) -> bool:
        """True when the folder already holds a run."""
        return (self.path / "config.json").exists()

    def create(self, overwrite: bool = False, checkpoints: bool = True) -> RunFolder:
        """Make the folder (with checkpoints/ unless not `checkpoints`). An existing run is refused
        unless `overwrite`, which then removes every file the old run wrote (so nothing stale joins
        the new one: snapshots, checkpoints, results); a folder holding anything germinate did not
        write is never touched."""
        for p in self.check_writable(overwrite):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        if checkpoints:
            (self.path / "checkpoints").mkdir(exist_ok=True)
        return self

    def check_writable(self, overwrite: bool = False) -> list[Path]:
        """Raise the error `create` would; return what it would delete. Changes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise GerminateError(f"{str(self.path)!r} exists and is not a folder")
        entries = sorted(self.path.iterdir()) if self.path.is_dir() else []
        if entries and not self.exists():
            raise GerminateError(
                f"{str(self.path)!r} is not empty and holds no germinate run: choose a new or empty --out folder"
            )
        if entries and not overwrite:
            raise GerminateError(
                f"{str(self.path)!r} already holds a run: continue it with --resume {self.path}, "
                "choose another --out, or pass --overwrite"
            )
        foreign = [p for p in entries if not is_run_entry(p)]
        if foreign:
            raise GerminateError(
                f"--overwrite refused: {str(self.path)!r} holds files germinate did not write "
                f"(e.g. {foreign[0].name!r}); move them away or choose another --out"
            )
        return entries

    def write_json(self, name: str, obj: Any) -> None:
        """Write `name` as indented JSON, atomically."""
        write_text_atomic(self.path / name, json.dumps(obj, indent=2, default=str))

    def read_json(self, name: str) -> Any:
        """Read `name`; a missing or corrupt file is a one-line error."""
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError as e:
            raise GerminateError(f"{self.path / name} is missing: is {str(self.path)!r} a germinate run folder?") from e
        except ValueError as e:
            raise GerminateError(f"{self.path / name} is not valid JSON: {e}") from e

    def write_csv(self, name: str, rows: Sequence[dict], fields: Sequence[str]) -> None:
        """Write `rows` with header `fields`, atomically (the whole file each time: logs stay whole)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.path / name, buf.getvalue())

    def read_csv(self, name: str) -> list[dict[str, str]]:
        """Rows of a CSV in the run folder ([] when it does not exist)."""
        path = self.path / name
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
