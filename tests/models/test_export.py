"""Export then load: identical predictions, nothing unpickled, tampering refused."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from germinate.errors import GerminateError
from germinate.models.backbones import LEGACY_LITE_BN_EPS, LITE_BN_EPS, batchnorm_eps
from germinate.models.export import ModelInfo, export_model, load_model
from germinate.models.network import create_network


def _export(tmp_path: Path, arch: str = "efficientnet_lite0", n: int = 4) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    net = create_network(arch, n, pretrained=False).eval()
    info = ModelInfo(arch, [f"c{i}" for i in range(n)], 32, 40, [0.5] * 3, [0.5] * 3, "top-down")
    export_model(net, tmp_path, info)
    return net, tmp_path


def test_export_then_load_gives_identical_predictions(tmp_path: Path):
    net, folder = _export(tmp_path)
    loaded, info = load_model(folder)
    x = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    meta = json.loads((folder / "model.json").read_text())
    assert meta["classes"] == ["c0", "c1", "c2", "c3"] and meta["arch"] == "efficientnet_lite0"
    assert meta["size"] == 32 and meta["mean"] == [0.5] * 3 and meta["germinate_version"]


def test_tampered_weights_are_refused(tmp_path: Path):
    _, folder = _export(tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(GerminateError, match="checksum"):
        load_model(folder)


def test_truncated_weights_are_refused(tmp_path: Path):
    _, folder = _export(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    info = json.loads((folder / "model.json").read_text())
    info["files"] = {}  # even without a checksum to compare, the file itself is refused
    (folder / "model.json").write_text(json.dumps(info))
    with pytest.raises(GerminateError, match="not a readable safetensors file"):
        load_model(folder)


def test_weights_of_another_architecture_or_class_count_name_both(tmp_path: Path):
    _, a = _export(tmp_path / "a", "efficientnet_lite0", 4)
    _, b = _export(tmp_path / "b", "resnet18", 7)
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    info = json.loads((a / "model.json").read_text())
    info["files"] = {}
    (a / "model.json").write_text(json.dumps(info))
    with pytest.raises(GerminateError, match="resnet18 with 7 classes.*efficientnet_lite0 with 4 classes"):
        load_model(a)


def test_missing_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(GerminateError, match="no exported model"):
        load_model(tmp_path)


def test_test_size_is_stored_and_older_files_fall_back_to_the_training_size(tmp_path: Path):
    from dataclasses import replace

    torch.manual_seed(0)
    net = create_network("efficientnet_lite0", 2, pretrained=False).eval()
    info = ModelInfo("efficientnet_lite0", ["a", "b"], 32, 48, [0.5] * 3, [0.5] * 3, "top-down", test_size=40)
    export_model(net, tmp_path / "new", info)
    assert load_model(tmp_path / "new")[1].eval_size == 40
    export_model(net, tmp_path / "old", replace(info, test_size=None))
    meta = json.loads((tmp_path / "old" / "model.json").read_text())
    meta.pop("test_size")  # as written before the field existed
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    assert load_model(tmp_path / "old")[1].eval_size == 32


def test_the_batchnorm_eps_is_recorded_and_an_older_germinate_refuses_lite_models(tmp_path: Path):
    lite, folder = _export(tmp_path / "lite")
    meta = json.loads((folder / "model.json").read_text())
    assert batchnorm_eps(lite.body) == meta["bn_eps"] == LITE_BN_EPS
    assert meta["format_version"] == 3  # a germinate before the field would rebuild it with 1e-5
    assert batchnorm_eps(load_model(folder)[0].body) == LITE_BN_EPS
    resnet, folder = _export(tmp_path / "resnet", "resnet18")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["bn_eps"] == 1e-5 and meta["format_version"] == 1  # built as it always was


def test_older_lite_models_are_rebuilt_with_the_eps_they_were_trained_with(tmp_path: Path):
    torch.manual_seed(0)
    net = create_network("efficientnet_lite0", 3, pretrained=False, bn_eps=LEGACY_LITE_BN_EPS).eval()
    for m in net.body.modules():  # near-zero variances, as the offline weights have, make the eps count
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0, 1e-3)
    export_model(net, tmp_path, ModelInfo("efficientnet_lite0", ["a", "b", "c"], 32, 40, [0.5] * 3, [0.5] * 3, "top-down"))
    meta = json.loads((tmp_path / "model.json").read_text())
    meta.pop("bn_eps")  # as written before the field existed
    meta["format_version"] = 1
    (tmp_path / "model.json").write_text(json.dumps(meta))
    loaded, _ = load_model(tmp_path)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)
        today = create_network("efficientnet_lite0", 3, pretrained=False).eval()
        today.load_state_dict(net.state_dict())
        assert not torch.allclose(today(x), net(x), atol=1e-3)  # today's eps would compute something else
