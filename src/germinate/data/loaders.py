"""Datasets and batches. Each training sample is augmented under its own seed, derived from
(run seed, stage, epoch, index): the same run gives the same images in any number of workers,
and a resumed run gives exactly the images the uninterrupted one would have."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from germinate.data.cache import ImageSource
from germinate.utils import derive_seed

Item = tuple[int, int | None]  # (index, augmentation seed or None for deterministic transforms)


class ImageDataset(Dataset):
    """uint8 image tensors and labels; `transform` runs under the item's seed when it has one."""

    def __init__(self, source: ImageSource, labels: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.source, self.labels, self.transform = source, torch.as_tensor(labels), transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = item
        img = self.source.get(i)
        if seed is None:
            return self.transform(img), self.labels[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), self.labels[i]


class EpochBatches(Sampler[list[Item]]):
    """Batches of (index, seed) items. `set_epoch(key, start)` picks the shuffle for one epoch
    and where in it to start (for resuming mid-epoch)."""

    def __init__(self, n: int, bs: int, seed: int, shuffle: bool = True):
        self.n, self.bs, self.seed, self.shuffle = n, bs, seed, shuffle
        # Drop a ragged last batch while training: a batch of one breaks batchnorm.
        self.drop_last = shuffle and n > bs
        self.key: tuple = ()
        self.start = 0

    def set_epoch(self, key: tuple, start: int = 0) -> None:
        """Choose the epoch (any tuple of ints/strings) and the first batch to yield."""
        self.key, self.start = key, start

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches of indices, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, *self.key))
            order = torch.randperm(self.n, generator=g).numpy()
        else:
            order = np.arange(self.n)
        stop = self.n - self.n % self.bs if self.drop_last else self.n
        return [order[i : i + self.bs] for i in range(0, stop, self.bs)]

    def __iter__(self) -> Iterator[list[Item]]:
        for b in self.batches()[self.start :]:
            if self.shuffle:
                yield [(int(i), derive_seed(self.seed, *self.key, int(i))) for i in b]
            else:
                yield [(int(i), None) for i in b]

    def __len__(self) -> int:
        total = self.n // self.bs if self.drop_last else -(-self.n // self.bs)
        return max(total - self.start, 0)


def make_loader(dataset: Dataset, batches, workers: int, device: torch.device, persistent: bool = True) -> DataLoader:
    """A DataLoader over `batches` (an EpochBatches or a list of batches); workers persist across
    epochs, memory is pinned for CUDA.

    It gets a private generator: a DataLoader otherwise draws a seed from the global RNG each time
    it is iterated, which would shift dropout's random numbers in a resumed run.
    """
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator(),
    )
