"""Mixup and CutMix: each training batch blended with itself shifted by one image, and the
labels blended in the same proportion (torchvision's batch transforms)."""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_mixer(mixup: float, cutmix: float, n_classes: int) -> Mixer | None:
    """(images, int labels) -> (mixed images, soft labels), or None when both are off (0).
    uint8 batches come back as 0-255 floats, which the network takes as well.

    `mixup`, `cutmix`: the alpha of the Beta(alpha, alpha) the mixing share is drawn from.
    With both on, each batch gets one of the two at random, as timm's train script does.
    They draw from torch's global generator, which the learner seeds at every step, so a
    resumed run mixes its batches as the uninterrupted one did.
    """
    mixers = []
    if mixup > 0:
        mixers.append(v2.MixUp(alpha=mixup, num_classes=n_classes))
    if cutmix > 0:
        mixers.append(v2.CutMix(alpha=cutmix, num_classes=n_classes))
    if not mixers:
        return None
    chosen = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def mix(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return chosen(images if images.is_floating_point() else images.float(), labels)

    return mix
