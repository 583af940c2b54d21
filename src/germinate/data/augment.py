"""Flip policies, train and eval transforms (torchvision v2 on uint8 tensors), and TTA views.

`top-down`: photos taken from above, so all 8 dihedral transforms (flips on both axes, 90-degree
turns) give valid images. `side-on`: photos taken from the side: left-right flips only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from germinate.config import POLICIES


def check_policy(name: str) -> str:
    """Return `name` if it is a known flip policy, else raise ValueError listing the valid ones."""
    if name not in POLICIES:
        raise ValueError(f"Invalid flip policy {name!r}; valid: {', '.join(POLICIES)}")
    return name


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k in 0..7) of an image or batch (..., H, W).

    k % 4 quarter turns counter-clockwise, then a left-right flip when k >= 4. k = 0 is identity.
    """
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


class RandomDihedral(v2.Transform):
    """One of the 8 dihedral transforms, uniformly at random."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(8, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return dihedral(inpt, params["k"])


class RandomRotateReflect(v2.Transform):
    """Rotate by a random angle in [-degrees, degrees], filling the corners by reflection.

    torchvision's rotation fills the corners with a constant colour; black wedges around a plant
    on soil are an artefact the model must learn to ignore (fastai also reflects).
    """

    def __init__(self, degrees: float):
        super().__init__()
        self.degrees = degrees

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": float((torch.rand(()) * 2 - 1) * self.degrees)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not self.degrees or not params["angle"]:
            return inpt
        rad = math.radians(params["angle"])
        theta = torch.tensor([[math.cos(rad), -math.sin(rad), 0.0], [math.sin(rad), math.cos(rad), 0.0]])
        x = inpt.float()[None]
        grid = F.affine_grid(theta[None], list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        return out.round().clamp(0, 255).to(inpt.dtype) if inpt.dtype == torch.uint8 else out


@dataclass(frozen=True)
class AugmentConfig:
    """How training images are varied. Angles in degrees; lighting as a +/- fraction."""

    size: int = 128
    flip: str = "top-down"
    min_scale: float = 0.75
    max_rotate: float = 10.0
    max_lighting: float = 0.0
    erase: float = 0.0  # the chance of a box filled with ERASE_FILL (random erasing)
    trivial: bool = False  # TrivialAugmentWide after the flips (the per-image path only)

    def __post_init__(self) -> None:
        check_policy(self.flip)
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale}")
        if not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"erase must be in [0, 1], got {self.erase}")


# Random erasing (Zhong et al., 2017), with torchvision's box: 2-33% of the view's area, aspect
# ratio log-uniform in [0.3, 3.3]; filled with ImageNet's mean colour (zero after ImageNet's
# normalisation, as timm's "const" mode fills), the same in both augmentation paths.
ERASE_AREA = (0.02, 1 / 3)
ERASE_RATIO = (0.3, 3.3)
ERASE_FILL = (124, 116, 104)


def train_transform(cfg: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random view of a square uint8 image (3, S, S) -> (3, size, size)."""
    # No flips for "none", but the same rotation, zoom, lighting and erasing as the other policies.
    flips = {"top-down": [RandomDihedral()], "side-on": [v2.RandomHorizontalFlip()], "none": []}[cfg.flip]
    return v2.Compose(
        [
            # Rotate before cropping, on the larger cached image.
            RandomRotateReflect(cfg.max_rotate),
            v2.RandomResizedCrop(cfg.size, scale=(cfg.min_scale, 1.0), antialias=True),
            *flips,
            *([v2.TrivialAugmentWide()] if cfg.trivial else []),
            *([v2.ColorJitter(brightness=cfg.max_lighting, contrast=cfg.max_lighting)] if cfg.max_lighting else []),
            *([v2.RandomErasing(cfg.erase, ERASE_AREA, ERASE_RATIO, ERASE_FILL)] if cfg.erase else []),
        ]
    )


def augment_images(source, idx, seeds, cfg: AugmentConfig) -> torch.Tensor:
    """Training views of images `idx` of a source, one at a time by `train_transform`, each under
    its own seed: a (n, 3, size, size) uint8 batch. The per-image path (--augment image)."""
    tf = train_transform(cfg)
    views = []
    for i, seed in zip(idx, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views.append(tf(source.get(int(i))))
    return torch.stack(views)


def eval_transform(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic: the whole (already centre-cropped, square) image resized to `size`."""
    return v2.Resize((size, size), antialias=True)


def deterministic_views(flip: str) -> list[int]:
    """Dihedral indices of the fixed TTA views a policy allows, identity (the plain view) first."""
    return {"top-down": list(range(8)), "side-on": [0, 4], "none": [0]}[check_policy(flip)]
