"""The whole network: normalisation, backbone body, pooling and head, with three layer groups."""

from __future__ import annotations

import torch
from torch import nn

from germinate.models.backbones import Backbone, create_backbone
from germinate.models.head import ConcatPool, create_head

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class Network(nn.Module):
    """uint8 (or 0-255 float) images -> class logits. Normalisation lives inside the model, so
    batches stay uint8 until the last moment and an exported model needs nothing else."""

    def __init__(self, backbone: Backbone, n_classes: int, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.arch = backbone.arch
        self.body = backbone.body
        self.pool = ConcatPool()
        self.head = create_head(2 * backbone.num_features, n_classes, hidden, dropout)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1) * 255.0)
        head_params = list(self.head.parameters())
        self.layer_groups: list[list[nn.Parameter]] = [*backbone.groups, head_params]
        self.norm_params = {id(p) for m in self.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
        self.channels_last = False

    def use_channels_last(self, on: bool = True) -> Network:
        """Store activations NHWC: much faster convolutions with oneDNN on CPU and on tensor cores."""
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 / 0-255 images -> normalised float in the layout the body wants."""
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled body features (B, 2C): what the head sees, and what precompute stores."""
        return self.pool(self.body(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def create_network(
    arch: str,
    n_classes: int,
    pretrained: bool = True,
    weights_file: str | None = None,
    hidden: int = 512,
    dropout: float = 0.5,
) -> Network:
    """A backbone with pretrained weights and a fresh head for `n_classes`."""
    return Network(create_backbone(arch, pretrained, weights_file), n_classes, hidden, dropout)
