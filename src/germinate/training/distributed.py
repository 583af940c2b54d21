"""Several processes under torchrun: which one this is, how work is split between them, and the
few collectives the learner needs (torch.distributed: nccl on CUDA, gloo on CPU).

Without torchrun the world is one process and every function here does nothing, so the
single-process code path is the distributed one with a world of one.

Every rank runs the same loops with the same number of iterations (the shards below are built so),
and every collective is reached by all of them: nothing runs on rank 0 alone inside a collective.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from germinate.errors import GerminateError
from germinate.utils import env_number

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600  # a collective waiting this long means another process is gone or stuck


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.size > 1

    # ---- splitting work ---------------------------------------------------------------------
    def my_slice(self, global_batch: np.ndarray) -> np.ndarray:
        """This rank's part of a training batch of size x bs indices: bs of them."""
        per = len(global_batch) // self.size
        return global_batch[self.rank * per : (self.rank + 1) * per]

    def shard(self, n: int) -> np.ndarray:
        """This rank's contiguous share of items 0..n-1 (shares differ by at most one item; in
        rank order they are 0..n-1 again, so gathered results need no reordering)."""
        return np.array_split(np.arange(n), self.size)[self.rank]

    def shard_batches(self, n: int, bs: int) -> list[np.ndarray]:
        """This rank's share of 0..n-1 in batches of at most `bs`; every rank gets the same number
        of batches, so loops with a collective per batch stay in step."""
        largest_share = -(-n // self.size)
        count = max(1, -(-largest_share // bs))
        return list(np.array_split(self.shard(n), count))

    # ---- collectives --------------------------------------------------------------------------
    def mean(self, values: list[float]) -> list[float]:
        """The average over ranks of each value (one collective)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.size).tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any."""
        if not self.active:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor, in place, by its average over ranks."""
        if not self.active:
            return
        for t in tensors:
            dist.all_reduce(t)
            t /= self.size

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Rows computed for `shard(n)` on each rank -> all n rows in order, on every rank. Shares
        of unequal length are padded for the collective and the padding removed: no row is
        counted twice and none is missed."""
        if not self.active:
            return local
        sizes = [len(s) for s in np.array_split(np.arange(n), self.size)]
        padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: len(local)] = local.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes)]).to(local.device)

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and give every rank its result; a user error raised there is
        raised on every rank (so none waits for the others in vain)."""
        if not self.active:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except GerminateError as e:
                outcome = ("error", str(e))
        kind, value = self.broadcast(outcome)
        if kind == "error":
            raise SharedError(value)
        return value

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            dist.barrier()


class SharedError(GerminateError):
    """A user error every rank raised together: only rank 0 reports it."""


SINGLE = World()
_current = SINGLE


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with other processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_s() -> float:
    """$GERMINATE_DIST_TIMEOUT seconds (default 600): how long a collective waits for the others."""
    value = env_number("GERMINATE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S, "seconds")
    if value <= 0:
        raise GerminateError(f"GERMINATE_DIST_TIMEOUT must be positive, got {os.environ['GERMINATE_DIST_TIMEOUT']!r}")
    return value


def init(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (once), or SINGLE."""
    global _current
    if not launched():
        return SINGLE
    if _current.active:
        return _current
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():  # a notebook or a wrapper may have joined already
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    _current = World(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return _current


def current() -> World:
    """The world joined by `init`, or SINGLE."""
    return _current


def shutdown(together: bool = False) -> None:
    """Leave the process group (at the end of a command). `together` (a command that succeeded on
    this rank): wait for the others first. Rank 0 writes the report after the last collective, and
    a rank that tore its gloo group down meanwhile was once seen to abort (SIGABRT, "terminate
    called without an active exception"), failing a run that had finished. Not after a failure: a
    peer may be gone, and the barrier would wait for it until the timeout."""
    global _current
    if _current.active and dist.is_initialized():
        if together:
            with contextlib.suppress(RuntimeError):  # a peer that failed after all: leave anyway
                dist.barrier()
        dist.destroy_process_group()
    _current = SINGLE


def is_lost_peer(e: BaseException) -> bool:
    """Whether `e` says another process of the run is gone (or a collective timed out)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "broken pipe"))
