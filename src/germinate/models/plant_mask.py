"""A plant/soil mask (`--mask green`): pixels that are not green enough become black.

The Kaggle trick for these photos (green seedlings on grey-brown gravel, often beside a ruler):
the excess-green index 2g - r - b on chromaticity coordinates (Woebbecke et al. 1995), which a
uniform change of brightness leaves alone, thresholded, then dilated by a few pixels so that the
edges of thin leaves survive. Pure tensor operations, so that it runs inside the network and an
exported or ONNX model applies it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASKS = ("none", "green")
# Excess green above which a pixel is plant (soil and gravel sit near 0, leaves at 0.2-0.5).
GREEN_THRESHOLD = 0.08
# The dilation's radius, as a fraction of the image side (2 px at 150 px).
DILATE_FRACTION = 1 / 75


def excess_green(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB (0-255) -> (B, 1, H, W) excess green (2G - R - B) / (R + G + B), in [-1, 2]."""
    x = x.float()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (2 * g - r - b) / (r + g + b + 1.0)  # +1: black pixels are not green, and no 0/0


def green_mask(x: torch.Tensor, threshold: float = GREEN_THRESHOLD) -> torch.Tensor:
    """(B, 1, H, W) of 0 and 1: 1 where a pixel is green, or within a few pixels of one."""
    radius = max(1, round(int(x.shape[-1]) * DILATE_FRACTION))  # int(): a constant when traced for ONNX
    plant = (excess_green(x) > threshold).float()
    return F.max_pool2d(plant, 2 * radius + 1, stride=1, padding=radius)


def check_mask(mask: str) -> str:
    """`mask` when it is one of MASKS; a ValueError otherwise."""
    if mask not in MASKS:
        raise ValueError(f"Invalid mask {mask!r}; valid: {', '.join(MASKS)}")
    return mask


def apply_mask(x: torch.Tensor, mask: str) -> torch.Tensor:
    """Images with the soil blacked out ("green"), or unchanged ("none"), as float 0-255."""
    if check_mask(mask) == "none":
        return x
    x = x.float()
    return x * green_mask(x)
