"""The frozen body's side of the head stage: batchnorm statistics re-estimated on the training
images, and pooled body features computed once so that the head trains on them in seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from germinate.models.backbones import batchnorm_layers
from germinate.models.fold_bn import fold_batchnorm
from germinate.models.network import Network

Batches = Iterable[torch.Tensor]  # image batches, uint8 or 0-255 float


@torch.no_grad()
def recalibrate_bn(net: Network, batches: Batches, device: torch.device, autocast: Callable,
                   check_stop: Callable[[], None] = lambda: None) -> int:
    """Replace the body's batchnorm running statistics by their average over `batches` (AdaBN:
    Li et al., 2016); returns the number of batches seen. The other layers are untouched."""
    bns = batchnorm_layers(net.body)
    if not bns:
        return 0
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch seen
        m.train()
    seen = 0
    try:
        for x in batches:
            check_stop()
            with autocast():
                net.body(net.normalize(x.to(device, non_blocking=True)))
            seen += 1
    finally:
        for m, (momentum, training) in zip(bns, saved):
            m.momentum = momentum
            m.train(training)
    return seen


@torch.no_grad()
def pooled_features(net: Network, batches: Batches, device: torch.device, autocast: Callable,
                    check_stop: Callable[[], None] = lambda: None) -> torch.Tensor:
    """What the head sees for each image, in eval mode (the body does not change while frozen)."""
    folded = None
    out = []
    for x in batches:
        check_stop()
        x = x.to(device, non_blocking=True)
        if folded is None:  # batchnorm folded into the convolutions: the same function, faster
            folded = fold_batchnorm(net, x.shape[-1])
        with autocast():
            out.append(folded.features(x).float())
    return torch.cat(out)
