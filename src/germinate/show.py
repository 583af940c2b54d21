"""show-batch: what the augmentation policy does to real training images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from germinate.config import TrainConfig
from germinate.data.augment import AugmentConfig, augment_images
from germinate.data.batch_augment import augment_batch, draw_params
from germinate.data.cache import decode_images
from germinate.data.folders import limit_per_class, scan_labelled
from germinate.errors import GerminateError
from germinate.evaluate.plots import image_grid
from germinate.models.plant_mask import apply_mask
from germinate.utils import derive_seed


def show_batch(train_dir: str | Path, out: str | Path, flip: str = "top-down", size: int = 128, min_scale: float = 0.75,
               max_rotate: float = 10.0, max_lighting: float = 0.0, n: int = 16, seed: int = 0,
               cache_dir: str | Path | None = None, mask: str = "none", erase: float = 0.0,
               trivial: bool = False) -> Path:
    """Draw `n` augmented training images (a few per class) with their labels into `out`, as the
    network sees them (with `mask`, the soil blacked out)."""
    try:
        cfg = AugmentConfig(size, flip, min_scale, max_rotate, max_lighting, erase, trivial)
    except ValueError as e:
        raise GerminateError(str(e)) from e
    items = scan_labelled(train_dir)
    per_class = max(1, -(-n // len(items.classes)))
    items = items.subset(limit_per_class(items.labels, per_class, seed))
    decoded = decode_images(items.files, TrainConfig(size=size).cache_px, cache_dir)
    labels = items.labels[decoded.ok]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(labels))[:n]
    seeds = [derive_seed(seed, "show", int(i)) for i in pick]
    if trivial:  # TrivialAugment exists in the per-image path only
        views = augment_images(decoded.source, pick, seeds, cfg).float()
    else:
        views = augment_batch(decoded.source.gather(pick), draw_params(seeds, cfg), cfg.size)
    views = apply_mask(views, mask)
    images = [v.round().to(torch.uint8).permute(1, 2, 0).numpy() for v in views]
    image_grid(images, [items.classes[labels[i]] for i in pick], out, cols=int(np.ceil(np.sqrt(len(pick)))))
    return Path(out)
