"""The classifier head that replaces the ImageNet one (fastai style)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatPool(nn.Module):
    """Average and max pooling side by side: (B, C, H, W) -> (B, 2C). Max keeps small, sharp
    features (a seedling's thin leaf) that averaging over a field of soil would wash out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


def create_head(in_features: int, n_classes: int, hidden: int = 512, dropout: float = 0.5) -> nn.Sequential:
    """BN -> dropout/2 -> linear -> ReLU -> BN -> dropout -> linear, on pooled features;
    with hidden=0, BN -> dropout -> linear."""
    if hidden == 0:
        return nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(dropout), nn.Linear(in_features, n_classes))
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Dropout(dropout / 2),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )
