"""An exported model as ONNX: uint8 images in (normalisation inside), class probabilities out,
any batch size. For runtimes without PyTorch (onnxruntime, and `germinate serve --onnx`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from germinate.errors import GerminateError
from germinate.models.export import load_model
from germinate.utils import atomic_path

OPSET = 17


class Probabilities(nn.Module):
    """The network followed by softmax, averaged over its snapshot models if it has any."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(images).softmax(1) for net in self.nets]).mean(0)


def export_onnx(run_dir: str | Path, path: str | Path) -> Path:
    """Write the run's model (with its snapshots, averaged) as ONNX to `path`, and a sidecar
    `<path>.json` saying what goes in: (N, 3, S, S) uint8 RGB, S the model's test size, images
    prepared as germinate prepares them (centre square, resized)."""
    nets, info = load_model(run_dir, snapshots=True)
    model = Probabilities([n.float().eval() for n in nets]).eval()
    s = info.eval_size
    example = torch.zeros(2, 3, s, s, dtype=torch.uint8)
    path = Path(path)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["probs"],
                              dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}}, opset_version=OPSET,
                              dynamo=False)
    except Exception as e:  # the exporter's own complaint about an operator, whatever its type
        raise GerminateError(f"{info.arch} could not be exported to ONNX: {str(e).splitlines()[0][:160]}") from e
    sidecar = {"input": "images", "shape": ["N", 3, s, s], "dtype": "uint8", "output": "probs",
               "classes": info.classes, "test_size": s, "source_px": info.source_px, "flip": info.flip,
               "arch": info.arch, "opset": OPSET, "weights_sha256": info.files}
    from germinate.utils import write_text_atomic

    write_text_atomic(str(path) + ".json", json.dumps(sidecar, indent=2))
    return path


def ensure_onnx(run_dir: str | Path) -> Path:
    """RUN_DIR/model.onnx, exported again when missing or made from other weights."""
    run_dir = Path(run_dir)
    path, sidecar = run_dir / "model.onnx", run_dir / "model.onnx.json"
    from germinate.models.export import read_info

    info = read_info(run_dir)
    try:
        if path.is_file() and json.loads(sidecar.read_text()).get("weights_sha256") == info.files:
            return path
    except (OSError, ValueError):
        pass
    return export_onnx(run_dir, path)
