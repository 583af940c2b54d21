"""Batchnorm folded into the convolution before it, for inference and for the fixed blocks.

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

Training folds too, where it can: the stem and first blocks that `--fixed-blocks` keeps as
pretrained are always in eval mode and never learn, so the training network runs through a view
of its body with their pairs folded (`fold_shared`), which shares every other layer.
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


def _fold_pair(conv: nn.Module, bn: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(the convolution with `bn` folded in, what is left of `bn`), or None for a batchnorm that
    cannot be folded (an unknown kind, or batch statistics only). Both must be in eval mode."""
    rest = _after_norm(bn)
    if rest is None or bn.running_mean is None:
        return None
    fused = fuse_conv_bn_eval(conv, bn)
    if conv.weight.ndim == 4 and not conv.weight.is_contiguous():  # keep an NHWC network NHWC
        fused = fused.to(memory_format=torch.channels_last)
    return fused, rest


@torch.no_grad()
def fold_batchnorm(net: nn.Module, size: int, channels: int = 3) -> nn.Module:
    """An eval-mode copy of `net` (which takes 0-255 images, as germinate's networks do) with
    each convolution-batchnorm pair folded into one convolution; `net` itself is not changed.
    `size`: an image size the network takes. Parameters keep their device, dtype and layout."""
    device = next(net.parameters()).device
    example = example_images(size, channels, device)
    folded = copy.deepcopy(net).eval()
    reference = folded(example).float()  # from the copy: `net` is not run, nor its mode switched
    for conv_name, bn_name in conv_bn_pairs(folded, example):
        pair = _fold_pair(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        if pair is not None:
            _replace(folded, conv_name, pair[0])
            _replace(folded, bn_name, pair[1])
    got = folded(example).float()
    if not same_output(got, reference):
        return copy.deepcopy(net).eval()  # a pair that also fed something else: not foldable
    return folded


def example_images(size: int, channels: int = 3, device: torch.device | str = "cpu") -> torch.Tensor:
    """Two random 0-255 images, the same every time."""
    # Its own generator: the global one drives dropout, and a run must repeat exactly.
    return (torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0)) * 255).to(device)


def same_output(got: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether a folded network's output is the original's, up to float rounding."""
    return bool((got.float() - reference.float()).abs().max() <= TOLERANCE * (1 + reference.float().abs().max()))


@torch.no_grad()
def fold_shared(module: nn.Module, pairs: list[tuple[str, str]]) -> tuple[nn.Module, list[tuple[nn.Module, nn.Module]]]:
    """A view of `module` with the given (convolution, batchnorm) pairs folded, sharing every
    other submodule, parameter and buffer with it: what trains through the view trains `module`.
    Only for layers that never learn and stay in eval mode (germinate's fixed blocks), since the
    folded convolutions are computed once, here. Returns (the view, [(container copy, original)]):
    the containers on the way to a folded pair are shallow copies, whose `training` flag the
    caller keeps in step with the original's (`follow_modes`)."""
    copies: dict[int, nn.Module] = {}
    path: list[tuple[nn.Module, nn.Module]] = []

    def own(m: nn.Module) -> nn.Module:  # a shallow copy with its own list of children
        if id(m) not in copies:
            c = copy.copy(m)
            object.__setattr__(c, "_modules", dict(m._modules))
            copies[id(m)] = c
            path.append((c, m))
        return copies[id(m)]

    view = own(module)
    for conv_name, bn_name in pairs:
        pair = _fold_pair(module.get_submodule(conv_name), module.get_submodule(bn_name))
        if pair is None:
            continue
        for name, replacement in zip((conv_name, bn_name), pair):
            *parents, leaf = name.split(".")
            node, original = view, module
            for part in parents:
                original = original._modules[part]
                child = own(original)
                node._modules[part] = child
                node = child
            node._modules[leaf] = replacement.eval()
    return view, path


def follow_modes(path: list[tuple[nn.Module, nn.Module]]) -> None:
    """Give each container copy of a `fold_shared` view its original's train / eval mode."""
    for copied, original in path:
        copied.training = original.training
