"""The registry of architectures: how to build each, where its weights come from, how it splits
into layer groups (early body, late body; the head is the third), and the input normalisation
its pretrained weights expect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from germinate.errors import GerminateError
from germinate.models import weights as W

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The efficientnet-lite weights were trained TF-style: inputs scaled to [-1, 1].
TF_MEAN, TF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# The offline Lite weights were trained in TensorFlow, whose batchnorm eps is 1e-3. timm builds
# efficientnet_lite with torch's 1e-5, which scales up the weights' ~640 near-constant channels
# (running variance under 1e-3) by up to 10x (docs/accuracy.md, *The Lite weights' own
# batchnorm eps*). Models exported before this was set were built with LEGACY_LITE_BN_EPS.
LITE_BN_EPS, LEGACY_LITE_BN_EPS = 1e-3, 1e-5

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass
class Backbone:
    """A feature extractor (image -> feature map) split into two layer groups, plus its normalisation."""

    arch: str
    body: nn.Module
    num_features: int
    groups: list[list[nn.Parameter]]  # [early body, late body]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # The body's units from the input on: the stem, then each block; empty where not known.
    blocks: list[nn.Module] = field(default_factory=list)


class TimmBody(nn.Module):
    """A timm model without its classifier, returning its last features as a (B, C, H, W) map:
    NHWC maps (Swin) are permuted, and a transformer's patch tokens (B, N, C) become a
    (B, C, N, 1) map, its class/register tokens dropped, so the head pools them like pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model.reset_classifier(0, "")
        self.model = model
        self.nhwc = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(x)
        if out.ndim == 3:
            return out[:, self.prefix_tokens :].transpose(1, 2).unsqueeze(-1)
        return out.permute(0, 3, 1, 2) if self.nhwc else out


def _params(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


def _resnet_groups(m: nn.Module) -> list[list[nn.Parameter]]:
    return [_params(m.conv1, m.bn1, m.layer1, m.layer2), _params(m.layer3, m.layer4)]


def _efficientnet_groups(m: nn.Module) -> list[list[nn.Parameter]]:
    half = len(m.blocks) // 2
    return [_params(m.conv_stem, m.bn1, *m.blocks[:half]), _params(*m.blocks[half:], m.conv_head, m.bn2)]


def _resnet_blocks(m: nn.Module) -> list[nn.Module]:
    return [nn.ModuleList([m.conv1, m.bn1]), *(b for layer in (m.layer1, m.layer2, m.layer3, m.layer4) for b in layer)]


def _efficientnet_blocks(m: nn.Module) -> list[nn.Module]:
    return [nn.ModuleList([m.conv_stem, m.bn1]), *(b for stage in m.blocks for b in stage)]


def _timm_blocks(m: nn.Module) -> list[nn.Module]:
    if all(hasattr(m, a) for a in ("conv_stem", "bn1", "blocks")):
        return _efficientnet_blocks(m)
    if all(hasattr(m, a) for a in ("conv1", "bn1", "layer1", "layer4")):
        return _resnet_blocks(m)
    return []


def _depth_groups(m: nn.Module) -> list[list[nn.Parameter]]:
    """Fallback for any architecture: the first half of its parameter tensors, then the rest."""
    params = [p for n, p in m.named_parameters() if not n.startswith(("fc.", "classifier.", "head."))]
    half = len(params) // 2
    return [params[:half], params[half:]]


def _timm_groups(m: nn.Module) -> list[list[nn.Parameter]]:
    if all(hasattr(m, a) for a in ("conv_stem", "blocks", "conv_head", "bn2")):
        return _efficientnet_groups(m)
    if all(hasattr(m, a) for a in ("conv1", "bn1", "layer1", "layer4")):
        return _resnet_groups(m)
    return _depth_groups(m)


def _lite(arch: str, pretrained: bool) -> nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False, bn_eps=LITE_BN_EPS)
    if pretrained:
        path = W.lite_weights_path(arch)
        W.load_by_order(model, torch.load(path, map_location="cpu", weights_only=True), f"{path.name} ({arch})")
    return model


def _torchvision(arch: str, pretrained: bool) -> nn.Module:
    import torchvision

    model = torchvision.models.get_model(arch, weights=None)
    if pretrained:
        model.load_state_dict(W.torchvision_state(arch))
    return model


def _timm(arch: str, pretrained: bool) -> nn.Module:
    return W.timm_pretrained(arch) if pretrained else W.create_timm(arch, pretrained=False)


def _timm_norm(model: nn.Module) -> tuple[tuple, tuple]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


# name -> (builder(arch, pretrained), normalisation): a plain dict; timm names are accepted too.
REGISTRY: dict[str, tuple[Callable[[str, bool], nn.Module], tuple | None]] = {
    **{a: (_lite, (TF_MEAN, TF_STD)) for a in W.LITE_PACKAGES},
    **{a: (_torchvision, (IMAGENET_MEAN, IMAGENET_STD)) for a in TORCHVISION_RESNETS},
}
OFFLINE_ARCHS = tuple(W.LITE_PACKAGES)


def check_arch(arch: str) -> str:
    """Return `arch` if germinate can build it, else a GerminateError listing valid names."""
    import timm

    if arch in REGISTRY or timm.is_model(arch):
        return arch
    raise GerminateError(f"Invalid arch {arch!r}; valid: {', '.join(REGISTRY)}, or any timm model name")


def create_imagenet_model(arch: str, pretrained: bool = True, weights_file: str | None = None) -> nn.Module:
    """The whole ImageNet classifier for `arch` (1000 classes), with its pretrained weights."""
    check_arch(arch)
    builder = REGISTRY[arch][0] if arch in REGISTRY else _timm
    model = builder(arch, pretrained and weights_file is None)
    if weights_file is not None:
        W.load_weights_file(model, weights_file, arch)
    return model


DROP_PATH_SLOTS = ("drop_path", "drop_path1", "drop_path2")  # where timm's residual blocks keep theirs


def set_drop_path(body: nn.Module, rate: float) -> int:
    """Stochastic depth: while training, each residual block's branch is skipped for a whole image
    with a probability rising linearly with depth, from 0 at the first block to `rate` at the last
    (the rule of Huang et al. and timm). The blocks are timm's, which keep an empty slot for it;
    returns how many took it (0 for a model without such slots, e.g. torchvision's ResNets)."""
    from timm.layers import DropPath

    slots = ((m, [a for a in DROP_PATH_SLOTS if isinstance(getattr(m, a, None), (nn.Identity, DropPath))])
             for m in body.modules())
    blocks = [(m, names) for m, names in slots if names]
    for i, (block, names) in enumerate(blocks):
        p = rate * i / max(len(blocks) - 1, 1)
        for a in names:
            setattr(block, a, DropPath(p) if p > 0 else nn.Identity())
    return len(blocks)


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batchnorm layer inside `module`."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_eps(model: nn.Module) -> float | None:
    """The eps every batchnorm layer of `model` shares; None if it has none, or several."""
    found = {m.eps for m in batchnorm_layers(model)}
    return found.pop() if len(found) == 1 else None


def set_batchnorm_eps(model: nn.Module, eps: float) -> None:
    for m in batchnorm_layers(model):
        m.eps = eps


def recorded_bn_eps(arch: str, eps: float | None) -> float | None:
    """The batchnorm eps to rebuild a saved `arch` with, from the one saved with it (None: the
    builder's). Files from before germinate saved it hold Lite bodies built with LEGACY_LITE_BN_EPS."""
    return LEGACY_LITE_BN_EPS if eps is None and arch in OFFLINE_ARCHS else eps


def create_backbone(arch: str, pretrained: bool = True, weights_file: str | None = None,
                    bn_eps: float | None = None) -> Backbone:
    """Build `arch`, load its weights, drop its classifier and split it into layer groups.
    `bn_eps`: every batchnorm layer's eps, instead of the one `arch` is built with (an exported
    model is rebuilt with the eps it was trained with)."""
    model = create_imagenet_model(arch, pretrained, weights_file)
    if bn_eps is not None:
        set_batchnorm_eps(model, bn_eps)
    if arch in TORCHVISION_RESNETS:
        groups, blocks = _resnet_groups(model), _resnet_blocks(model)
        num_features = model.fc.in_features
        body = nn.Sequential(*list(model.children())[:-2])  # everything before avgpool and fc
        mean, std = REGISTRY[arch][1]
    else:
        groups, blocks = _timm_groups(model), _timm_blocks(model)
        num_features = model.num_features
        mean, std = REGISTRY[arch][1] if arch in REGISTRY else _timm_norm(model)
        body = TimmBody(model)
    return Backbone(arch, body, num_features, groups, mean, std, blocks)
