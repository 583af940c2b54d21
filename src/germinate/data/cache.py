"""Decode and resize each image once; keep the results in a memory-mapped file reused by later
epochs, runs and predictions. Entries are keyed by path, modification time and size."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from germinate.data.folders import Skipped
from germinate.data.images import UnreadableImage, read_image
from germinate.ui import SILENT, Reporter

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$GERMINATE_CACHE, else $XDG_CACHE_HOME/germinate, else ~/.cache/germinate."""
    if os.environ.get("GERMINATE_CACHE"):
        return Path(os.environ["GERMINATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "germinate"


class ImageSource:
    """Square RGB uint8 images, read by index as (3, px, px) tensors."""

    px: int

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, i: int) -> torch.Tensor:
        """Image `i` as a (3, px, px) uint8 tensor."""
        raise NotImplementedError

    def subset(self, idx: np.ndarray) -> ImageSource:
        """The images at `idx`, in that order."""
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images held in an (N, px, px, 3) array: in memory or memory-mapped from the cache."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows, self.px = array, rows, array.shape[1]

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[self.rows[i]])).permute(2, 0, 1)

    def subset(self, idx: np.ndarray) -> ArraySource:
        return ArraySource(self.array, self.rows[np.asarray(idx, dtype=np.int64)])


class FileSource(ImageSource):
    """Images decoded from their files on every access: the no-cache path."""

    def __init__(self, files: Sequence[Path], px: int):
        self.files, self.px = list(files), px

    def __len__(self) -> int:
        return len(self.files)

    def get(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.files[i], self.px)).permute(2, 0, 1)

    def subset(self, idx: np.ndarray) -> FileSource:
        return FileSource([self.files[i] for i in idx], self.px)


def _decode(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    path, px = args
    try:
        return read_image(path, px), None
    except UnreadableImage as e:
        return None, str(e)
    except OSError as e:  # vanished or unreadable file (permissions)
        return None, e.strerror or type(e).__name__


def _decode_all(paths: list[str], px: int, workers: int, reporter: Reporter, what: str):
    """Decode `paths` in parallel, yielding (index, array or None, reason) in input order."""
    jobs = [(p, px) for p in paths]
    with reporter.progress(what, len(jobs)) as advance:
        if workers <= 1 or len(jobs) < 32:
            for i, job in enumerate(jobs):
                yield (i, *_decode(job))
                advance()
            return
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for i, res in enumerate(pool.map(_decode, jobs, chunksize=16)):
                yield (i, *res)
                advance()


@dataclass
class Decoded:
    """The result of decoding a list of files: a source for the readable ones, in order."""

    source: ImageSource
    ok: np.ndarray  # indices (into the input list) of the readable files
    skipped: list[Skipped]


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


class DiskCache:
    """A folder holding, per pixel size, `images.u8` (rows of px*px*3 bytes) and `index.json`."""

    def __init__(self, root: str | os.PathLike, px: int):
        self.dir = Path(root) / f"v{CACHE_VERSION}" / f"px{px}"
        self.px = px
        self.row_bytes = px * px * 3
        self.data_path, self.index_path = self.dir / "images.u8", self.dir / "index.json"

    def _read_index(self) -> dict:
        try:
            index = json.loads(self.index_path.read_text())
            n_rows = self.data_path.stat().st_size // self.row_bytes
            if index.get("version") == CACHE_VERSION and index.get("rows", -1) <= n_rows:
                return index
        except (OSError, ValueError):
            pass
        return {"version": CACHE_VERSION, "rows": 0, "entries": {}}

    def _write_index(self, index: dict) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.index_path)

    def load(self, files: Sequence[Path], workers: int, reporter: Reporter) -> Decoded:
        """Rows for `files`, decoding only those that are new or changed since they were cached."""
        self.dir.mkdir(parents=True, exist_ok=True)
        keys = [_key(Path(f)) for f in files]
        with open(self.dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time; readers use finished rows only
            index = self._read_index()
            if index["rows"] * self.row_bytes != (self.data_path.stat().st_size if self.data_path.exists() else 0):
                # A writer died mid-append: drop the torn tail so that rows stay aligned.
                with open(self.data_path, "ab") as f:
                    f.truncate(index["rows"] * self.row_bytes)
            entries = index["entries"]
            stale = [i for i, (p, m, s) in enumerate(keys) if entries.get(p, [None, None])[:2] != [m, s]]
            if stale:
                with open(self.data_path, "ab") as data:
                    for j, arr, reason in _decode_all([keys[i][0] for i in stale], self.px, workers, reporter, "caching images"):
                        path, mtime, size = keys[stale[j]]
                        if arr is None:
                            entries[path] = [mtime, size, -1, reason]
                        else:
                            data.write(arr.tobytes())
                            entries[path] = [mtime, size, index["rows"], None]
                            index["rows"] += 1
                    data.flush()
                    os.fsync(data.fileno())
                self._write_index(index)
        rows = np.array([entries[p][2] for p, _, _ in keys], dtype=np.int64)
        skipped = [Skipped(str(files[i]), entries[keys[i][0]][3]) for i in np.flatnonzero(rows < 0)]
        ok = np.flatnonzero(rows >= 0)
        shape = (index["rows"], self.px, self.px, 3)
        array = np.memmap(self.data_path, np.uint8, "r", shape=shape) if index["rows"] else np.zeros(shape, np.uint8)
        return Decoded(ArraySource(array, rows[ok]), ok, skipped)


def decode_images(
    files: Sequence[Path],
    px: int,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    reporter: Reporter = SILENT,
) -> Decoded:
    """Check and decode `files` at `px`; with the cache (default) each file is decoded once ever.

    Without the cache, files are still checked once up front (so unreadable ones are skipped
    before training) but are decoded again on every access.
    """
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if use_cache:
        return DiskCache(cache_dir or default_cache_dir(), px).load(files, workers, reporter)
    ok, skipped = [], []
    for i, arr, reason in _decode_all([str(f) for f in files], px, workers, reporter, "checking images"):
        if arr is None:
            skipped.append(Skipped(str(files[i]), reason))
        else:
            ok.append(i)
    ok_idx = np.asarray(ok, dtype=np.int64)
    return Decoded(FileSource([files[i] for i in ok_idx], px), ok_idx, skipped)
