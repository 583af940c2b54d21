"""The model, loaded once, answering for image bytes: decode as germinate decodes for `predict`,
the flip policy's fixed TTA views, PyTorch or ONNX Runtime, top classes with their margin."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from germinate.data.augment import dihedral, eval_transform
from germinate.data.images import read_image
from germinate.errors import GerminateError
from germinate.evaluate.predict import tta_views
from germinate.models.export import load_model, read_info
from germinate.models.fold_bn import fold_batchnorm
from germinate.utils import resolve_device

FORWARD_BATCH = 32  # images per forward pass (views included)
DEFAULT_MARGIN = 0.2  # top-1 minus top-2 below this: "ambiguous" (RUN_DIR/serve.json can change it)


@dataclass(frozen=True)
class Limits:
    """What one request may send."""

    max_bytes: int = 10 * 2**20  # per image
    max_pixels: int = 40_000_000  # per image, checked from the header before decoding
    max_files: int = 16


def rank(probs: np.ndarray, classes: list[str], k: int, ambiguous_below: float) -> dict:
    """One image's answer: the top `k` classes by score, the margin between the first two, and
    whether that margin is below `ambiguous_below`."""
    order = np.argsort(-probs, kind="stable")
    margin = float(probs[order[0]] - probs[order[1]]) if len(order) > 1 else 1.0
    return {"top": [{"label": classes[i], "score": round(float(probs[i]), 6)} for i in order[:k]],
            "margin": round(margin, 6), "ambiguous": margin < ambiguous_below}


class Predictor:
    """Decode and classify images with a run's exported model (or its ONNX export)."""

    def __init__(self, run_dir: str | Path, tta: int | None = None, onnx: str | Path | None = None,
                 device: str = "cpu"):
        self.run_dir = Path(run_dir)
        self.info = read_info(self.run_dir)
        # Serving uses the policy's fixed views only: deterministic answers, no per-request seeds.
        self.views = [v.dihedral for v in tta_views(self.info.flip, tta) if v.random is None]
        self.resize = eval_transform(self.info.eval_size)
        self.device = resolve_device(device)  # --device cuda without a GPU: one line, not a traceback
        self.backend = "onnxruntime" if onnx else "pytorch"
        if onnx:
            self.session = _onnx_session(Path(onnx), self.info.classes)
        else:
            nets, _ = load_model(self.run_dir, snapshots=True)
            # Batchnorm folded into the convolutions once, here: the same function, faster.
            self.nets = [fold_batchnorm(n.to(self.device).use_channels_last(), self.info.eval_size) for n in nets]
        self.ambiguous_below = _margin(self.run_dir)

    def decode(self, data: bytes, max_pixels: int) -> torch.Tensor:
        """Image bytes -> (3, S, S) uint8 at the model's test size; UnreadableImage if they are not."""
        arr = read_image(io.BytesIO(data), self.info.source_px, max_pixels)
        return self.resize(torch.from_numpy(arr).permute(2, 0, 1))

    @torch.no_grad()
    def probabilities(self, images: list[torch.Tensor]) -> np.ndarray:
        """(N, classes): the mean over the TTA views (and snapshot models) of each image's softmax."""
        x = torch.stack(images)
        # The views of several images in one forward pass: a single image's 8 views make a
        # batch of 8, far faster than 8 passes of one image; at most FORWARD_BATCH at a time,
        # since larger batches were slower again on a CPU.
        views = torch.cat([dihedral(x, k) for k in self.views])
        probs = np.concatenate([self._forward(views[i:i + FORWARD_BATCH])
                                for i in range(0, len(views), FORWARD_BATCH)])
        return probs.reshape(len(self.views), len(images), -1).mean(0)

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        if self.backend == "onnxruntime":
            return self.session.run(None, {"images": x.contiguous().numpy()})[0]
        x = x.to(self.device)
        return (sum(n(x).float().softmax(1) for n in self.nets) / len(self.nets)).cpu().numpy()

    def describe(self) -> dict:
        """What GET /model says."""
        final = self.run_dir / "final.json"
        scores = json.loads(final.read_text()) if final.exists() else None
        return {
            "classes": self.info.classes, "arch": self.info.arch, "train_size": self.info.size,
            "test_size": self.info.eval_size, "flip": self.info.flip, "mask": self.info.mask, "tta_views": len(self.views),
            "germinate_version": self.info.germinate_version, "weights_sha256": self.info.files,
            "snapshots": len(self.info.snapshots), "backend": self.backend, "ambiguous_below": self.ambiguous_below,
            "validation_f1_micro": scores and {"plain": scores["plain"]["f1_micro"], "tta": scores["tta"]["f1_micro"]},
        }


def _margin(run_dir: Path) -> float:
    path = run_dir / "serve.json"
    if not path.exists():
        return DEFAULT_MARGIN
    try:
        value = float(json.loads(path.read_text())["ambiguous_margin"])
    except (ValueError, KeyError, TypeError) as e:
        raise GerminateError(f"{path} must hold {{\"ambiguous_margin\": <a number in [0, 1]>}}: {e}") from e
    if not 0 <= value <= 1:
        raise GerminateError(f"{path}: ambiguous_margin must be in [0, 1], got {value}")
    return value


def _onnx_session(path: Path, classes: list[str]):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise GerminateError("--onnx needs onnxruntime: pip install 'germinate[serve]'") from e
    if not path.is_file():
        raise GerminateError(f"ONNX model {str(path)!r} does not exist (write it with germinate export RUN_DIR --onnx FILE)")
    sidecar = Path(str(path) + ".json")
    if sidecar.exists() and json.loads(sidecar.read_text()).get("classes") != classes:
        raise GerminateError(f"{path} was exported from another model (its classes differ from the run's)")
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own error types
        raise GerminateError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0][:160]}") from e
