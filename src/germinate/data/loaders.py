"""Batches: which images, in which order, and how their uint8 pixels reach the device.

Each training sample is augmented under its own seed, derived from (run seed, stage, epoch,
index): the same run gives the same images whatever the batching, worker count or device, and a
resumed run gives exactly the images the uninterrupted one would have.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from germinate.data.cache import ImageSource
from germinate.utils import derive_seed

# On CUDA, the images are kept on the GPU when they take at most this fraction of its free memory.
RESIDENT_FRACTION = 0.25


def sample_seeds(seed: int, key: tuple, idx: Iterable[int]) -> list[int]:
    """The augmentation seed of each training sample `idx` in epoch `key` of a run."""
    return [derive_seed(seed, *key, int(i)) for i in idx]


def index_batches(n: int, bs: int) -> list[np.ndarray]:
    """0..n-1 in order, in batches of `bs` (the last may be smaller)."""
    return [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]


class EpochBatches:
    """The batches of indices of one epoch. `set_epoch(key, start)` picks the shuffle (`key`: any
    tuple of ints/strings) and the first batch to yield (for resuming mid-epoch).

    With `weights` (one per sample), an epoch is n draws with replacement, sample i drawn with
    probability weights[i] / sum(weights), instead of a permutation (class-balanced sampling)."""

    def __init__(self, n: int, bs: int, seed: int, shuffle: bool = True, weights: np.ndarray | None = None):
        self.n, self.bs, self.seed, self.shuffle = n, bs, seed, shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (len(self.weights) != n or not shuffle):
            raise ValueError("weights need one value per sample, and a shuffled order")
        # Drop a ragged last batch while training: a batch of one breaks batchnorm.
        self.drop_last = shuffle and n > bs
        self.key: tuple = ()
        self.start = 0

    def set_epoch(self, key: tuple, start: int = 0) -> None:
        """Choose the epoch and the first batch to yield."""
        self.key, self.start = key, start

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches of indices, in order, from the first."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, *self.key))
            if self.weights is None:
                order = torch.randperm(self.n, generator=g).numpy()
            else:
                order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).numpy()
        else:
            order = np.arange(self.n)
        stop = self.n - self.n % self.bs if self.drop_last else self.n
        return [order[i : i + self.bs] for i in range(0, stop, self.bs)]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches()[self.start :])

    def __len__(self) -> int:
        total = self.n // self.bs if self.drop_last else -(-self.n // self.bs)
        return max(total - self.start, 0)


def auto_workers(device: torch.device, resident: bool) -> int:
    """Loader processes when --workers is not given: none on CPU (measured: a worker only takes a
    core from the model) or when the images live on the GPU; otherwise up to 8."""
    if device.type != "cuda" or resident:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _Gather(Dataset):
    def __init__(self, source: ImageSource):
        self.source = source

    def __getitem__(self, idx: np.ndarray) -> torch.Tensor:
        return self.source.gather(idx)

    def __len__(self) -> int:
        return len(self.source)


class _Current(Sampler):
    """The batches a persistent DataLoader is to fetch next (set before each pass)."""

    def __init__(self):
        self.batches: Sequence[np.ndarray] = ()

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Feeder:
    """uint8 image batches of one source on the training device, for lists of indices.

    On CUDA, when the images fit in a quarter of the free GPU memory, the whole source is copied
    to the GPU once and a batch is one indexing operation there. Otherwise each batch is gathered
    on the CPU, by `workers` processes when > 0 (overlapping with the model), in pinned memory,
    and copied without blocking.
    """

    def __init__(self, source: ImageSource, device: torch.device, workers: int | None = None,
                 resident: bool | None = None):
        self.source, self.device = source, device
        if resident is None:
            resident = device.type == "cuda" and _fits_on_gpu(source, device)
        self.resident = resident
        self.workers = auto_workers(device, resident) if workers is None else workers
        self._images: torch.Tensor | None = None
        self._loader: DataLoader | None = None
        self._next = _Current()

    def _on_device(self) -> torch.Tensor:
        if self._images is None:
            self._images = self.source.gather(np.arange(len(self.source))).to(self.device)
        return self._images

    def __call__(self, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield each batch's images, (n, 3, px, px) uint8 on the device."""
        if self.resident:
            images = self._on_device()
            for idx in batches:
                yield images[torch.as_tensor(idx, device=self.device)]
            return
        if self.workers == 0:
            for idx in batches:
                x = self.source.gather(idx)
                yield x.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else x
            return
        if self._loader is None:
            # A private generator: a DataLoader otherwise draws a seed from the global RNG each
            # pass, which would shift dropout's random numbers in a resumed run.
            self._loader = DataLoader(_Gather(self.source), sampler=self._next, batch_size=None,
                                      num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                      persistent_workers=True, prefetch_factor=4, generator=torch.Generator())
        self._next.batches = list(batches)
        for x in self._loader:
            yield x.to(self.device, non_blocking=True)


def _fits_on_gpu(source: ImageSource, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return len(source) * 3 * source.px**2 <= RESIDENT_FRACTION * free
