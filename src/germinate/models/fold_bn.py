"""Batchnorm folded into the convolution before it, for inference.

In eval mode a batchnorm layer is a fixed per-channel scale and shift, which can be folded into
the weights and bias of the convolution that feeds it (torch's `fuse_conv_bn_eval`). On a CPU
the layer is not free: it reads and writes every activation once more, 39% of
EfficientNet-Lite0's forward pass at 160 px in PyTorch's profiler (`python
benchmarks/bench_inference.py` measures the gain). Folding gives a copy that computes the same
function; the network that trains and is saved keeps its batchnorm layers, so checkpoints,
exports and resuming are unchanged.

Which convolution feeds which batchnorm is read from one forward pass (a batchnorm whose input
is exactly a convolution's output), so any torchvision or timm CNN works without a table of
names; the copy is then checked against the original on a random batch, and a network whose
convolution output also feeds something else (where folding would change that too) is left as
it was.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Folded and original logits may differ by float rounding (about 1e-6 here); far more means a
# pair that should not have been folded.
TOLERANCE = 1e-3


def conv_bn_pairs(net: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, batchnorm) module names, for each 2-d batchnorm whose input is a 2-d
    convolution's output, found by running `example` through `net` in eval mode."""
    made: dict[int, tuple[str, torch.Tensor]] = {}  # the tensors are kept so that ids are not reused
    pairs: list[tuple[str, str]] = []
    hooks = []

    def conv_hook(name: str):
        return lambda _m, _inp, out: made.__setitem__(id(out), (name, out))

    def bn_hook(name: str):
        def hook(_m, inp):
            source = made.get(id(inp[0]))
            if source is not None and source[1] is inp[0]:
                pairs.append((source[0], name))
        return hook

    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_pre_hook(bn_hook(name)))
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return pairs


def _after_norm(bn: nn.Module) -> nn.Module | None:
    """What is left of a batchnorm layer once its normalisation is folded away: nothing for a
    plain one, the activation of timm's BatchNormAct2d or SyncBatchNormAct (which apply drop,
    then act), or None for a kind not known."""
    if type(bn) in (nn.BatchNorm2d, nn.SyncBatchNorm):
        return nn.Identity()
    if isinstance(bn, (nn.BatchNorm2d, nn.SyncBatchNorm)) and isinstance(getattr(bn, "act", None), nn.Module) \
            and isinstance(getattr(bn, "drop", None), nn.Module):  # also timm's SyncBatchNormAct (--sync-bn)
        return nn.Sequential(bn.drop, bn.act)
    return None


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, module)


@torch.no_grad()
def fold_batchnorm(net: nn.Module, size: int, channels: int = 3) -> nn.Module:
    """An eval-mode copy of `net` (which takes 0-255 images, as germinate's networks do) with
    each convolution-batchnorm pair folded into one convolution; `net` itself is not changed.
    `size`: an image size the network takes. Parameters keep their device, dtype and layout."""
    device = next(net.parameters()).device
    # Its own generator: the global one drives dropout, and a run must repeat exactly.
    example = (torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0)) * 255).to(device)
    folded = copy.deepcopy(net).eval()
    reference = folded(example).float()  # from the copy: `net` is not run, nor its mode switched
    for conv_name, bn_name in conv_bn_pairs(folded, example):
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        rest = _after_norm(bn)
        if rest is None or bn.running_mean is None:  # an unknown kind, or batch statistics only
            continue
        fused = fuse_conv_bn_eval(conv, bn)
        if conv.weight.ndim == 4 and not conv.weight.is_contiguous():  # keep an NHWC network NHWC
            fused = fused.to(memory_format=torch.channels_last)
        _replace(folded, conv_name, fused)
        _replace(folded, bn_name, rest)
    got = folded(example).float()
    if (got - reference).abs().max() > TOLERANCE * (1 + reference.abs().max()):
        return copy.deepcopy(net).eval()  # a pair that also fed something else: not foldable
    return folded

