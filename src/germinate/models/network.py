"""The whole network: normalisation, backbone body, pooling and head, with three layer groups."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from germinate.errors import GerminateError
from germinate.models.backbones import Backbone, create_backbone, set_drop_path
from germinate.models.fold_bn import conv_bn_pairs, example_images, fold_shared, follow_modes, same_output
from germinate.models.head import create_head, create_pool
from germinate.models.plant_mask import apply_mask, check_mask

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class Network(nn.Module):
    """uint8 (or 0-255 float) images -> class logits. Normalisation lives inside the model, so
    batches stay uint8 until the last moment and an exported model needs nothing else."""

    def __init__(self, backbone: Backbone, n_classes: int, hidden: int = 512, dropout: float = 0.5,
                 pool: str = "concat"):
        super().__init__()
        self.arch = backbone.arch
        self.body = backbone.body
        self.pool, per_channel = create_pool(pool)
        self.head = create_head(per_channel * backbone.num_features, n_classes, hidden, dropout)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1) * 255.0)
        head_params = [*self.pool.parameters(), *self.head.parameters()]  # GeM's p learns with the head
        self.layer_groups: list[list[nn.Parameter]] = [*backbone.groups, head_params]
        self.norm_params = {id(p) for m in self.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
        self.channels_last = False
        # Each block by the names of its modules in the body, so that it follows module swaps
        # (SyncBatchNorm conversion) instead of holding on to the modules it started with.
        names = {id(m): n for n, m in self.body.named_modules()}
        self._block_names = [[names[id(m)] for m in (unit if isinstance(unit, nn.ModuleList) else [unit])]
                             for unit in backbone.blocks]
        self.fixed_params: set[int] = set()
        self._n_fixed = 0
        # Training runs the fixed blocks with their batchnorm folded (a view of the body; see
        # _training_body). Not a submodule: checkpoints and exports keep the body as it is.
        self.fold_fixed = True
        self._folded: tuple[tuple, nn.Module, list] | None = None  # (what it was built from, view, path)
        self.bn_frozen = False
        self.mask = "none"

    @property
    def blocks(self) -> list[nn.ModuleList]:
        """The body's units from the input on: the stem, then each block (empty where not known)."""
        return self._units(len(self._block_names))

    def _units(self, n: int) -> list[nn.ModuleList]:
        return [nn.ModuleList([self.body.get_submodule(name) for name in unit]) for unit in self._block_names[:n]]

    def fix_blocks(self, n: int) -> int:
        """Keep the stem and the first `n` blocks of the body as pretrained for good: no
        gradients, batchnorm statistics included, so no backward pass runs through them (the
        early, high-resolution layers cost most of it). Returns how many blocks are fixed (fewer
        when the body has fewer, or none known)."""
        fixed = self.blocks[: n + 1] if n > 0 else []
        self._n_fixed = len(fixed)
        self.fixed_params = {id(p) for m in fixed for p in m.parameters()}
        for m in fixed:
            m.requires_grad_(False)
        self.train(self.training)
        return max(len(fixed) - 1, 0)

    def freeze_bn(self, on: bool = True) -> Network:
        """Keep every batchnorm layer of the body in eval mode, training included: it normalises
        with its pretrained running statistics, which stay as they are, while its scale and shift
        still learn. Batch statistics of these photos are not ImageNet's, and features normalised
        with them lose what the later layers expect (see the probe of the head stage in docs/accuracy.md)."""
        self.bn_frozen = on
        return self.train(self.training)

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for m in self._units(self._n_fixed):  # only the fixed ones: this runs at every mode switch
            m.eval()  # their running statistics stay the pretrained ones
        if self.bn_frozen and mode:
            for m in self.body.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def use_mask(self, mask: str) -> Network:
        """Black out what is not plant before the body sees it (`--mask`; see plant_mask.py). It is
        part of the network, so an exported or ONNX model applies it too."""
        self.mask = check_mask(mask)
        return self

    def use_channels_last(self, on: bool = True) -> Network:
        """Store activations NHWC: much faster convolutions with oneDNN on CPU and on tensor cores."""
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 / 0-255 images -> normalised float in the layout the body wants."""
        x = (apply_mask(x, self.mask).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled body features (B, 2C; B, C with GeM): what the head sees, and what precompute stores."""
        body = self.body
        if self.training and self._n_fixed and self.fold_fixed and not torch.compiler.is_compiling():
            body = self._training_body(x.shape[-1])
        return self.pool(body(self.normalize(x)))

    def _training_body(self, size: int) -> nn.Module:
        """The body with the fixed blocks' convolution-batchnorm pairs folded, sharing every other
        layer: the same function, and 1.5x quicker fixed blocks on a CPU (they are forward-only,
        and their batchnorm layers an extra pass over the largest activations). Built again
        whenever the body's modules or the fixed layers' tensors change (a module swap, a device
        or layout move, loaded weights)."""
        fixed = [t for unit in self._units(self._n_fixed) for m in unit for t in (*m.parameters(), *m.buffers())]
        key = (tuple(id(m) for m in self.body.modules()), tuple((t.data_ptr(), t._version) for t in fixed))
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, *self._fold_fixed_blocks(size))
        _, view, path = self._folded
        follow_modes(path)
        return view

    @torch.no_grad()
    def _fold_fixed_blocks(self, size: int) -> tuple[nn.Module, list]:
        names = [name for unit in self._block_names[: self._n_fixed] for name in unit]
        inside = lambda n: any(n == f or n.startswith(f + ".") for f in names)  # noqa: E731
        example = example_images(size, device=self.mean.device)
        pairs = [(c.removeprefix("body."), b.removeprefix("body.")) for c, b in conv_bn_pairs(self, example)
                 if c.startswith("body.") and b.startswith("body.")]
        pairs = [(c, b) for c, b in pairs if inside(c) and inside(b)]
        if not pairs:
            return self.body, []
        view, path = fold_shared(self.body, pairs)
        was_training = self.training
        try:
            self.eval()  # the fixed blocks are in eval mode in either; this makes the rest so too
            follow_modes(path)
            x = self.normalize(example)
            same = same_output(view(x), self.body(x))
        finally:
            self.train(was_training)
        return (view, path) if same else (self.body, [])  # a convolution output used twice: not folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def create_network(
    arch: str,
    n_classes: int,
    pretrained: bool = True,
    weights_file: str | None = None,
    hidden: int = 512,
    dropout: float = 0.5,
    probe_size: int | None = None,
    drop_path: float = 0.0,
    bn_eps: float | None = None,
    pool: str = "concat",
) -> Network:
    """A backbone with pretrained weights and a fresh head for `n_classes`. With `probe_size`,
    one blank image of that size goes through it first, so that a backbone that cannot take
    such images is refused now, in one line, not in the middle of a run. `drop_path`: the
    stochastic depth of the body's last block (see `set_drop_path`). `bn_eps`: the batchnorm eps
    of the body, when not the one `arch` is built with (see `create_backbone`). `pool`: how the
    body's feature map becomes the head's input (see `create_pool`)."""
    backbone = create_backbone(arch, pretrained, weights_file, bn_eps)
    if drop_path and not set_drop_path(backbone.body, drop_path):
        raise GerminateError(f"--drop-path needs a model whose residual blocks take stochastic depth (timm's); "
                             f"{arch} has none")
    net = Network(backbone, n_classes, hidden, dropout, pool)
    if probe_size:
        check_input_size(net, probe_size)
    return net


def with_logit_shift(net: Network, shift: np.ndarray) -> Network:
    """A copy of `net` whose logits are `shift` higher (one value per class): folded into the last
    layer's bias, so every use of the exported weights (predict, serve, ONNX) carries it."""
    net = copy.deepcopy(net)
    with torch.no_grad():
        bias = net.head[-1].bias
        bias += torch.as_tensor(shift, dtype=bias.dtype, device=bias.device)
    return net


def sync_batchnorm(net: Network) -> Network:
    """`net` with its batchnorm layers as SyncBatchNorm (`--sync-bn`), the same parameters and
    buffers. timm's conversion, not torch's: torch's turns timm's BatchNormAct2d (batchnorm with
    its activation built in, as in every EfficientNet) into a plain SyncBatchNorm whose forward
    skips the activation, so the network computes something else."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(net)


@torch.no_grad()
def check_input_size(net: Network, size: int) -> None:
    """Raise a GerminateError if `net` cannot classify (size x size) images."""
    was_training = net.training
    try:
        out = net.eval()(torch.zeros(1, 3, size, size))
    except Exception as e:  # the backbone's own complaint, whatever its type
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise GerminateError(f"backbone {net.arch} cannot take {size} px images ({reason}); try another --size") from e
    finally:
        net.train(was_training)
    if out.ndim != 2:
        raise GerminateError(f"backbone {net.arch} gives features germinate cannot pool (output {tuple(out.shape)})")
