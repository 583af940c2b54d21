"""The classifier head that replaces the ImageNet one (fastai style)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatPool(nn.Module):
    """Average and max pooling side by side: (B, C, H, W) -> (B, 2C). Max keeps small, sharp
    features (a seedling's thin leaf) that averaging over a field of soil would wash out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(-2, -1)), x.amax(dim=(-2, -1))], dim=1)


class GeMPool(nn.Module):
    """Generalised-mean pooling (Radenovic et al., 2018): (mean of x^p)^(1/p) over each map,
    (B, C, H, W) -> (B, C), with p learnt (from 3). p = 1 is average pooling and p -> inf max
    pooling, so training picks how much the strongest places (a thin leaf) outweigh the rest."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps  # the maps are clamped to it: x^p needs x > 0 (and 0^p has no gradient in p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        # float32 whatever the autocast: x^3 of bf16 activations loses most of their mantissa
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


POOLS = ("concat", "gem")


def create_pool(name: str) -> tuple[nn.Module, int]:
    """The pooling `name` (see POOLS) and how many features it gives per body channel."""
    if name == "gem":
        return GeMPool(), 1
    return ConcatPool(), 2


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
