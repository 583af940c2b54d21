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

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        """The images at `idx` as one (n, 3, px, px) uint8 batch."""
        return torch.stack([self.get(int(i)) for i in idx])


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

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        # One fancy-indexing read; the layout stays NHWC (a free view as NCHW), which is what
        # a channels_last network wants.
        return torch.from_numpy(self.array[self.rows[np.asarray(idx, dtype=np.int64)]]).permute(0, 3, 1, 2)


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


DEFAULT_LIMIT_GB = 20.0


def cache_limit_bytes() -> int:
    """The cache's size bound: $GERMINATE_CACHE_GB gibibytes (default 20)."""
    from germinate.utils import env_number

    return int(env_number("GERMINATE_CACHE_GB", DEFAULT_LIMIT_GB, "gibibytes") * 2**30)


def _size_dirs(root: Path) -> list[Path]:
    base = Path(root) / f"v{CACHE_VERSION}"
    found = [p for p in base.glob("px*") if p.is_dir() and p.name[2:].isdigit()] if base.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[2:]))


def _dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file())


def _rows_in_use(index: dict) -> int:
    """The rows an index's entries point at (the others: files decoded again since)."""
    return sum(e[2] >= 0 for e in index.get("entries", {}).values())


def cache_info(root: str | os.PathLike) -> list[dict]:
    """Per cached size: px, images (the rows in use), bytes and when it was last used."""
    import time

    out = []
    for d in _size_dirs(Path(root)):
        index = d / "index.json"
        try:
            rows = _rows_in_use(json.loads(index.read_text()))
        except (OSError, ValueError, TypeError, IndexError):
            rows = 0
        used = index.stat().st_mtime if index.exists() else d.stat().st_mtime
        out.append({"px": int(d.name[2:]), "images": rows, "bytes": _dir_bytes(d),
                    "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(used))})
    return out


def _remove_size(d: Path) -> int | None:
    """Delete one cached size unless a writer holds it; returns the bytes freed (None: busy).
    Unlinking never disturbs a process that has the rows mapped: its mapping keeps the file."""
    import shutil

    try:
        with open(d / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            freed = _dir_bytes(d)
            shutil.rmtree(d)
            return freed
    except BlockingIOError:
        return None
    except FileNotFoundError:
        return 0


def clear_cache(root: str | os.PathLike) -> tuple[int, int]:
    """Delete every cached size not being written right now; returns (bytes freed, sizes removed)."""
    freed = removed = 0
    for d in _size_dirs(Path(root)):
        got = _remove_size(d)
        if got is not None:
            freed, removed = freed + got, removed + 1
    return freed, removed


def _make_room(root: Path, keep: Path, needed: int, limit: int) -> bool:
    """Evict other cached sizes, least recently used first, until `needed` more bytes fit."""
    def last_used(d: Path) -> float:
        index = d / "index.json"
        return index.stat().st_mtime if index.exists() else 0.0

    if needed + (_dir_bytes(keep) if keep.is_dir() else 0) > limit:
        return False  # would not fit even alone: evicting the others would only lose them
    others = sorted((d for d in _size_dirs(root) if d != keep), key=last_used)
    total = sum(_dir_bytes(d) for d in _size_dirs(root))
    while total + needed > limit and others:
        total -= _remove_size(others.pop(0)) or 0
    return total + needed <= limit


# Rows left behind by files decoded again (changed, or copied anew with new times) are dropped
# once they outnumber the rows in use and hold at least this much: a dataset fetched again each
# time would otherwise add its whole size to the cache each time.
COMPACT_MIN_BYTES = 64 * 2**20


class DiskCache:
    """A folder holding, per pixel size, a data file (`images.u8`, rows of px*px*3 bytes) and
    `index.json`, which names the data file and each cached file's row.

    Rows are only ever appended: a reader maps the rows its index lists, so no write may change
    or truncate them. A torn tail (a writer killed mid-append) is overwritten in place; a corrupt
    index starts a new data file (the old one is unlinked, never truncated, so a process that
    still maps it keeps reading good rows). Compaction writes the rows still in use to a new data
    file, then an index naming it, then unlinks the old file: a reader that mapped the old one
    keeps it, and a writer killed between the steps leaves an index that names a whole file.
    """

    def __init__(self, root: str | os.PathLike, px: int):
        self.root = Path(root)
        self.dir = self.root / f"v{CACHE_VERSION}" / f"px{px}"
        self.px = px
        self.row_bytes = px * px * 3
        self.data_path, self.index_path = self.dir / "images.u8", self.dir / "index.json"

    def _data(self, index: dict) -> Path:
        """The data file `index` names (indexes before compaction named none: images.u8)."""
        return self.dir / index.get("data", self.data_path.name)

    def _read_index(self) -> dict | None:
        """The index, or None when it is missing or unusable."""
        try:
            index = json.loads(self.index_path.read_text())
            n_rows = self._data(index).stat().st_size // self.row_bytes
            if index.get("version") == CACHE_VERSION and 0 <= index.get("rows", -1) <= n_rows:
                return index
        except (OSError, ValueError, AttributeError):
            pass
        return None

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
            if index is None:
                for old in self.dir.glob("images*.u8"):  # mappings of the old files stay valid
                    old.unlink(missing_ok=True)
                index = {"version": CACHE_VERSION, "rows": 0, "entries": {}}
            entries = index["entries"]
            stale = [i for i, (p, m, s) in enumerate(keys) if entries.get(p, [None, None])[:2] != [m, s]]
            if stale and not _make_room(self.root, self.dir, len(stale) * self.row_bytes, cache_limit_bytes()):
                reporter.warn(f"the image cache {self.root} is at its size limit (GERMINATE_CACHE_GB); "
                              "decoding these images without caching them")
                return None
            if stale:
                self._append(index, keys, stale, workers, reporter)
                self._write_index(index)
            elif self.index_path.exists():
                os.utime(self.index_path)  # last used: eviction goes least recently used first
            if self._worth_compacting(index):  # checked on every load: a cache grown before is mended too
                index = self._compact(index)
            entries = index["entries"]
            shape = (index["rows"], self.px, self.px, 3)
            # mapped under the lock: the file this index names, before a compaction can replace it
            array = (np.memmap(self._data(index), np.uint8, "r", shape=shape) if index["rows"]
                     else np.zeros(shape, np.uint8))
        rows = np.array([entries[p][2] for p, _, _ in keys], dtype=np.int64)
        skipped = [Skipped(str(files[i]), entries[keys[i][0]][3]) for i in np.flatnonzero(rows < 0)]
        ok = np.flatnonzero(rows >= 0)
        return Decoded(ArraySource(array, rows[ok]), ok, skipped)

    def _worth_compacting(self, index: dict) -> bool:
        """Whether the rows no entry uses (their files decoded again since) outnumber those in use
        and hold at least COMPACT_MIN_BYTES."""
        used = _rows_in_use(index)
        unused = index["rows"] - used
        return unused > used and unused * self.row_bytes >= COMPACT_MIN_BYTES

    def _compact(self, index: dict) -> dict:
        """Copy the rows in use to a new data file, in order, write the index that names it, then
        unlink the old file; return the new index."""
        old = self._data(index)
        generation = index.get("generation", 0) + 1
        new = self.dir / f"images-{generation}.u8"
        rows = np.memmap(old, np.uint8, "r", shape=(index["rows"], self.row_bytes))
        entries, n = {}, 0
        with open(new, "wb") as data:
            for path, (mtime, size, row, reason) in sorted(index["entries"].items(), key=lambda e: e[1][2]):
                if row >= 0:
                    data.write(rows[row].tobytes())
                    row, n = n, n + 1
                entries[path] = [mtime, size, row, reason]
            data.flush()
            os.fsync(data.fileno())
        del rows
        compacted = {"version": CACHE_VERSION, "rows": n, "entries": entries, "data": new.name,
                     "generation": generation}
        self._write_index(compacted)
        for leftover in self.dir.glob("images*.u8"):  # the old file, and any a killed compaction left
            if leftover != new:
                leftover.unlink(missing_ok=True)
        return compacted

    def _append(self, index: dict, keys: list, stale: list[int], workers: int, reporter: Reporter) -> None:
        """Decode the `stale` files and write their rows after the last finished row."""
        entries = index["entries"]
        target = self._data(index)
        mode = "r+b" if target.exists() else "wb"
        with open(target, mode) as data:
            data.seek(index["rows"] * self.row_bytes)  # over a torn tail, if any; never truncating
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
        cached = DiskCache(cache_dir or default_cache_dir(), px).load(files, workers, reporter)
        if cached is not None:
            return cached
    ok, skipped = [], []
    for i, arr, reason in _decode_all([str(f) for f in files], px, workers, reporter, "checking images"):
        if arr is None:
            skipped.append(Skipped(str(files[i]), reason))
        else:
            ok.append(i)
    ok_idx = np.asarray(ok, dtype=np.int64)
    return Decoded(FileSource([files[i] for i in ok_idx], px), ok_idx, skipped)
