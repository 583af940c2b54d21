"""Small helpers shared across modules: atomic writes, seeding, device choice."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from germinate.errors import GerminateError


def require_file_path(path: str | os.PathLike, what: str = "output") -> None:
    """Refuse an output path that is an existing folder, before any work is done for it."""
    if Path(path).is_dir():
        raise GerminateError(f"{what} {str(path)!r} is a folder: give a file name")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A kill at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    require_file_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; a finished file gets the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file (UTF-8, `\\n` line ends) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def env_number(name: str, default: float, unit: str) -> float:
    """The number in environment variable `name` (`default` when unset or empty); anything else is
    a one-line GerminateError naming the variable and its `unit`."""
    text = os.environ.get(name, "")
    try:
        return float(text) if text else default
    except ValueError:
        raise GerminateError(f"{name} must be a number of {unit}, got {text!r}") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from several parts (not Python's salted hash)."""
    import hashlib

    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GerminateError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise GerminateError(f"Invalid device {name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds this device up: CUDA with bf16 only. On a 2-core CPU with
    native bf16 (AVX512-BF16) whole training epochs measured slower with it: 75 vs 107 img/s at
    128 px, 54 vs 62 at 160 px (benchmarks/bench_pipeline.py, efficientnet_lite0)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def use_bf16(amp: str, device: torch.device, compiled: bool = False) -> bool:
    """Whether training runs under bfloat16 autocast (`--amp`): on, off, or auto: where it is
    fast (bf16_is_fast), but not for a compiled network, whose bf16 training turned NaN in its
    first epoch on an H200 (torch 2.11, in two sessions) where float32 compiled training stayed
    finite and was as fast (README, *On a GPU*)."""
    if amp != "auto":
        return amp == "on"
    return bf16_is_fast(device) and not compiled
