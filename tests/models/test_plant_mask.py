"""--mask green: the soil blacked out inside the network, so exported and ONNX models mask too."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from germinate.errors import GerminateError
from germinate.models.export import ModelInfo, export_model, load_model
from germinate.models.network import create_network
from germinate.models.plant_mask import apply_mask, green_mask

SOIL, LEAF = (120, 100, 80), (60, 150, 50)


def _seedling(px: int = 75, soil=SOIL) -> torch.Tensor:
    """(1, 3, px, px) uint8: soil with grains of light and shade, and a green square leaf at [30:45, 30:45]."""
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(soil, dtype=torch.float32).view(1, 3, 1, 1) + torch.randint(-40, 40, (1, 1, px, px), generator=g)
    x[:, :, 30:45, 30:45] = torch.tensor(LEAF, dtype=torch.float32).view(1, 3, 1, 1)
    return x.clamp(0, 255).to(torch.uint8)


def test_the_mask_keeps_the_leaf_and_its_edge_and_blacks_out_the_soil():
    x = _seedling()
    m = green_mask(x)[0, 0]
    assert m.shape == (75, 75) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[30:45, 30:45].all()  # the leaf
    assert m[29, 30:45].all() and m[30:45, 45].all()  # one pixel round it (radius 1 at 75 px)
    assert not m[:27].any() and not m[48:].any()  # the soil
    # a darker or brighter photo gives the same mask: the index is on chromaticity
    assert torch.equal(green_mask((x.float() * 0.5).round()), green_mask(x))
    masked = apply_mask(x, "green")
    assert masked[0, :, 0, 0].eq(0).all() and torch.equal(masked[0, :, 35, 35], torch.tensor(LEAF, dtype=torch.float32))
    assert apply_mask(x, "none") is x
    with pytest.raises(ValueError):
        apply_mask(x, "blue")


def test_on_real_seedlings_the_mask_keeps_the_green_part_of_each_photo(data_dir: Path):
    from PIL import Image

    kept = []
    for cls in sorted(p.name for p in (data_dir / "train").iterdir()):
        f = sorted((data_dir / "train" / cls).iterdir())[0]
        x = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None]
        m = green_mask(x)[0, 0].bool()
        g = x[0].float() / (x[0].float().sum(0, keepdim=True) + 1)  # chromaticity
        assert g[1][m].mean() > g[1][~m].mean() + 0.015, cls  # what is kept is greener (the thin grasses least)
        kept.append(float(m.float().mean()))
    assert 0.05 < np.median(kept) < 0.7  # seedlings fill a part of each photo, not none or all of it


def test_a_masked_network_does_not_see_the_soil_and_an_export_keeps_the_mask(tmp_path: Path):
    torch.manual_seed(0)
    net = create_network("efficientnet_lite0", 3, pretrained=False).eval()
    x = _seedling()
    # other soil wherever the mask drops a pixel (the ring it keeps round the leaf stays)
    other_soil = torch.where(green_mask(x).bool(), x, _seedling(soil=(90, 90, 100)))
    with torch.no_grad():
        assert not torch.allclose(net(x), net(other_soil), atol=1e-4)  # unmasked, the soil counts
        net.use_mask("green")
        assert torch.allclose(net(x), net(other_soil), atol=1e-5)  # masked, only the leaf does
    with pytest.raises(ValueError):
        net.use_mask("blue")
    assert net.mask == "green"  # refused, and the mask it had is kept
    info = ModelInfo("efficientnet_lite0", ["a", "b", "c"], 64, 90, [0.5] * 3, [0.5] * 3, "top-down", mask="green")
    export_model(net, tmp_path, info)
    loaded, read = load_model(tmp_path)
    assert read.mask == "green" and loaded.mask == "green"
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["mask"] == "green" and meta["format_version"] >= 2  # a germinate that cannot mask refuses it
    meta["mask"] = "blue"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(GerminateError, match="mask"):
        load_model(tmp_path)


def test_a_run_with_a_mask_records_it_and_its_onnx_export_masks_too(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from germinate import TrainConfig, train
    from germinate.models.onnx_export import export_onnx
    from tests.conftest import make_labelled

    train_dir = make_labelled(tmp_path / "train", per_class=8)
    cfg = TrainConfig(train_dir=str(train_dir), size=32, bs=8, epochs=1, quiet=True, mask="green")
    train(cfg, tmp_path / "run")
    net, info = load_model(tmp_path / "run")
    assert info.mask == "green" and "--mask green" in json.loads((tmp_path / "run" / "config.json").read_text())["command"]
    onnx = export_onnx(tmp_path / "run", tmp_path / "model.onnx")
    one = _seedling(info.eval_size)
    x = torch.cat([one, torch.where(green_mask(one).bool(), one, _seedling(info.eval_size, soil=(90, 90, 100)))])
    with torch.no_grad():
        expected = net.eval()(x).softmax(1).numpy()
    got = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - expected).max() <= 2e-4  # ONNX Runtime's kernels against PyTorch's
    assert np.abs(got[0] - got[1]).max() <= 2e-4  # and it too ignores the soil


def test_show_batch_with_a_mask_draws_what_the_network_sees(tmp_path: Path):
    from PIL import Image

    from germinate.cli import main
    from tests.conftest import make_labelled

    train_dir = make_labelled(tmp_path / "train", per_class=4)
    black = {}
    for mask in ("none", "green"):
        out = tmp_path / f"{mask}.png"
        assert main(["show-batch", str(train_dir), "--out", str(out), "--size", "48", "--n", "6", "--mask", mask]) == 0
        grid = np.array(Image.open(out).convert("RGB"))
        black[mask] = float((grid.max(2) < 8).mean())
    assert black["green"] > black["none"] + 0.05  # the red and blue classes' images are blacked out
