"""Sharpness-aware minimisation (SAM; Foret et al., 2021, arXiv:2010.01412).

Each step takes two gradients: one at the weights, which says which way the loss rises fastest,
and one at the weights moved `rho` (in L2 norm, over every trainable parameter together) that
way. The optimizer steps from the original weights with the second, so it heads for weights whose
whole neighbourhood has a low loss. It costs a second forward and backward pass a step. Neither
torch nor timm ships it, and it is a few lines around any optimizer, so it is written here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from germinate.models.backbones import batchnorm_layers

Moved = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def climb(params: list[torch.Tensor], rho: float) -> Moved:
    """Move the parameters that have a gradient by `rho` along their joint normalised gradient;
    return each moved parameter with its move, for `climb_back`. A zero gradient moves nothing."""
    grads = [(p, p.grad) for p in params if p.grad is not None]
    if not grads:
        return []
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for _, g in grads]))
    scale = rho / (norm + 1e-12)
    moved = []
    for p, g in grads:
        e = (g * scale).to(p.dtype)
        p.add_(e)
        moved.append((p, e))
    return moved


@torch.no_grad()
def climb_back(moved: Moved) -> None:
    """Undo `climb`: the parameters are where they were before it (to float rounding)."""
    for p, e in moved:
        p.sub_(e)


@contextlib.contextmanager
def batchnorm_stats_kept(net: nn.Module) -> Iterator[None]:
    """Batchnorm layers normalise by the batch as usual inside, but do not fold it into their
    running statistics: the second pass sees the same images at moved weights, and counting them
    twice would skew the statistics prediction uses."""
    layers = batchnorm_layers(net)
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch; also for a cumulative (None) average
    try:
        yield
    finally:
        for m, (momentum, count) in zip(layers, saved):
            m.momentum = momentum
            if count is not None:  # the batch count, which a cumulative average divides by
                m.num_batches_tracked.copy_(count)
