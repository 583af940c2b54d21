"""A run is a folder: resolved config, logs (CSV), plots (PNG), checkpoints and the exported model.
Everything a later command (predict, evaluate, report, resume) needs is in it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from germinate.errors import GerminateError
from germinate.utils import write_text_atomic


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

    def create(self, overwrite: bool = False) -> RunFolder:
        """Make the folder; refuse to write into an existing run unless `overwrite`."""
        if self.exists() and not overwrite:
            raise GerminateError(
                f"{str(self.path)!r} already holds a run: continue it with --resume {self.path}, "
                "choose another --out, or pass --overwrite"
            )
        if self.path.exists() and not self.path.is_dir():
            raise GerminateError(f"{str(self.path)!r} exists and is not a folder")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        return self

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
