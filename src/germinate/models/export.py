"""Exported models: safetensors (tensors only, never code) plus a small JSON saying how to use them.

model.json records the architecture, the class names in order, the image size, normalisation,
flip policy, pooling and head shape, germinate's version, and a SHA-256 of each weights file, so a truncated
or tampered file is refused rather than silently loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from germinate._version import __version__
from germinate.errors import GerminateError
from germinate.models.backbones import LITE_BN_EPS, OFFLINE_ARCHS, batchnorm_eps, recorded_bn_eps
from germinate.models.head import POOLS
from germinate.models.network import Network, create_network
from germinate.models.plant_mask import MASKS
from germinate.utils import atomic_path, write_text_atomic

FORMAT = "germinate-model"
# 2: a model with a --mask. Its model.json says 2 so that a germinate that cannot mask refuses it
# (rather than showing it unmasked images). 3: a Lite model with the weights' own batchnorm eps
# (LITE_BN_EPS), which an older germinate would rebuild with another. 4: a model with --pool gem,
# which an older germinate cannot build. Every other model says 1.
FORMAT_VERSION = 4


@dataclass
class ModelInfo:
    """What model.json holds."""

    arch: str
    classes: list[str]
    size: int
    source_px: int
    mean: list[float]
    std: list[float]
    flip: str
    hidden: int = 512
    dropout: float = 0.5
    test_size: int | None = None  # the size the model is used at; None (older files): `size`
    germinate_version: str = __version__
    files: dict[str, str] = field(default_factory=dict)  # weights file -> sha256
    snapshots: list[str] = field(default_factory=list)  # extra weights files averaged at predict time
    weights: str = "model.safetensors"  # the main weights file (an ensemble's: its first member's)
    mask: str = "none"  # --mask: applied inside the network
    bn_eps: float | None = None  # the body's batchnorm eps (None in older files: see body_bn_eps)
    pool: str = "concat"  # --pool

    @property
    def eval_size(self) -> int:
        return self.test_size or self.size

    @property
    def body_bn_eps(self) -> float | None:
        """The batchnorm eps to rebuild the body with (older files: the one it was built with then)."""
        return recorded_bn_eps(self.arch, self.bn_eps)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(net: Network, path: str | Path, n_classes: int) -> str:
    """Write the network's tensors to a safetensors file atomically; return its SHA-256."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"arch": net.arch, "n_classes": str(n_classes), "format": FORMAT})
    return sha256(Path(path))


def export_model(net: Network, folder: str | Path, info: ModelInfo, snapshots: list[str] = ()) -> Path:
    """Write model.safetensors and model.json into `folder`; `snapshots` names weights files
    already in `folder` (saved with save_weights) to average with it at predict time."""
    folder = Path(folder)
    info.bn_eps = batchnorm_eps(net.body)  # what the weights were trained with, whatever `info` said
    info.files = {"model.safetensors": save_weights(net, folder / "model.safetensors", len(info.classes))}
    info.files.update({name: sha256(folder / name) for name in snapshots})
    info.snapshots = list(snapshots)
    info.weights = "model.safetensors"
    return _write_info(folder, info)


def format_version(info: ModelInfo) -> int:
    """The oldest format that reads `info` right (see FORMAT_VERSION)."""
    if info.pool != "concat":
        return 4
    if info.arch in OFFLINE_ARCHS and info.bn_eps == LITE_BN_EPS:
        return 3
    return 2 if info.mask != "none" else 1


def _write_info(folder: Path, info: ModelInfo) -> Path:
    version = format_version(info)
    write_text_atomic(folder / "model.json", json.dumps({"format": FORMAT, "format_version": version, **asdict(info)}, indent=2))
    return folder / "model.json"


def export_ensemble(folder: str | Path, members: list[str]) -> Path:
    """model.json in `folder` naming the weights of the models in its subfolders `members` (each
    with its snapshots), so that loading `folder` loads them all and predictions average them.
    The members must agree on everything but their weights."""
    folder = Path(folder)
    infos = [read_info(folder / m) for m in members]
    first = infos[0]
    for m, info in zip(members[1:], infos[1:]):
        mine = {k: v for k, v in asdict(info).items() if k not in ("files", "snapshots", "weights")}
        if mine != {k: v for k, v in asdict(first).items() if k not in ("files", "snapshots", "weights")}:
            raise GerminateError(f"the model in {str(folder / m)!r} differs from the one in {str(folder / members[0])!r} "
                                 "in more than its weights: they cannot be one ensemble")
    names = [f"{m}/{name}" for m, info in zip(members, infos) for name in [info.weights, *info.snapshots]]
    files = {f"{m}/{name}": sha for m, info in zip(members, infos) for name, sha in info.files.items()}
    ensemble = ModelInfo(**{**asdict(first), "files": files, "weights": names[0], "snapshots": names[1:]})
    return _write_info(folder, ensemble)


def read_info(folder: str | Path) -> ModelInfo:
    """Read and check model.json in `folder` (a run folder or an exported model folder)."""
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise GerminateError(f"{str(folder)!r} holds no exported model (model.json missing): was training finished?")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise GerminateError(f"{path} is not valid JSON: {e}") from e
    if raw.get("format") != FORMAT:
        raise GerminateError(f"{path} is not a germinate model file")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise GerminateError(f"{path} was written by a newer germinate ({raw.get('germinate_version')}); upgrade")
    fields = ModelInfo.__dataclass_fields__
    try:
        info = ModelInfo(**{k: v for k, v in raw.items() if k in fields})
    except TypeError as e:
        raise GerminateError(f"{path} is missing fields: {e}") from e
    if info.mask not in MASKS:
        raise GerminateError(f"{path} asks for a mask germinate does not know ({info.mask!r}; known: {', '.join(MASKS)})")
    if info.pool not in POOLS:
        raise GerminateError(f"{path} asks for a pooling germinate does not know ({info.pool!r}; known: {', '.join(POOLS)})")
    return info


def load_weights(folder: Path, name: str, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Tensors of one weights file, refused unless its SHA-256 and header match model.json."""
    path = folder / name
    if not path.is_file():
        raise GerminateError(f"{path} is missing")
    expected = info.files.get(name)
    if expected and sha256(path) != expected:
        raise GerminateError(f"{path} does not match its checksum in model.json: the file is truncated or was modified")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise GerminateError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0][:120]}") from e
    if meta.get("arch") not in (None, info.arch) or meta.get("n_classes") not in (None, str(len(info.classes))):
        raise GerminateError(
            f"{path} holds weights for {meta.get('arch')} with {meta.get('n_classes')} classes, "
            f"but model.json describes {info.arch} with {len(info.classes)} classes"
        )
    return state


def load_state_checked(net: Network, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict, with a one-line error naming what did not fit."""
    target = net.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(target[wrong[0]].shape)}"
            if wrong
            else f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
        )
        raise GerminateError(f"{what} does not fit {net.arch} with {net.head[-1].out_features} classes: {detail}")
    net.load_state_dict(state)


def load_model(folder: str | Path, snapshots: bool = False) -> tuple[list[Network] | Network, ModelInfo]:
    """Load an exported model. With `snapshots`, return a list: the model and each snapshot (or
    each member of an ensemble, see export_ensemble)."""
    folder = Path(folder)
    info = read_info(folder)
    names = [info.weights] + (info.snapshots if snapshots else [])
    nets = []
    for name in names:
        net = create_network(info.arch, len(info.classes), pretrained=False, hidden=info.hidden, dropout=info.dropout,
                             bn_eps=info.body_bn_eps, pool=info.pool)
        net.use_mask(info.mask)
        load_state_checked(net, load_weights(folder, name, info), str(folder / name))
        nets.append(net.eval())
    return (nets if snapshots else nets[0]), info
