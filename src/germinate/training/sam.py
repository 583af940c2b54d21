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

Moved = tuple[list[torch.Tensor], list[torch.Tensor]]  # (parameters, their moves)


@torch.no_grad()
def climb(params: list[torch.Tensor], rho: float) -> Moved:
    """Move the parameters that have a gradient by `rho` along their joint normalised gradient;
    return the moved parameters with their moves, for `climb_back`. A zero gradient moves nothing."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return [], []
    grads = [p.grad for p in with_grad]
    # foreach kernels take every parameter at once, where a loop launched a few per parameter:
    # on a GPU at small batches the launches, not the arithmetic, are the cost (bench_sam_step.py)
    scale = rho / (torch.nn.utils.get_total_norm(grads, foreach=True) + 1e-12)
    moves = torch._foreach_mul(grads, scale)
    torch._foreach_add_(with_grad, moves)
    return with_grad, moves


@torch.no_grad()
def climb_back(moved: Moved) -> None:
    """Undo `climb`: the parameters are where they were before it (to float rounding)."""
    params, moves = moved
    if params:
        torch._foreach_sub_(params, moves)


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
