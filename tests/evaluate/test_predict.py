"""TTA averages exactly the expected views; the policy saved with a model is the one used."""

import json
from pathlib import Path

import numpy as np
import torch

from germinate.data.augment import dihedral, eval_transform
from germinate.data.cache import ArraySource
from germinate.evaluate.predict import View, predict_views, tta_views
from germinate.models.export import ModelInfo, load_model
from germinate.models.network import create_network
from tests.conftest import PROB_ATOL


def test_views_per_policy():
    assert [v.dihedral for v in tta_views("top-down")] == list(range(8))
    assert [v.dihedral for v in tta_views("side-on")] == [0, 4]
    assert tta_views("none") == [View(0)]
    assert tta_views("top-down", 0) == [View(0)]
    assert tta_views("side-on", 3) == [View(0), View(4), View(None, 0), View(None, 1)]


def test_tta_averages_exactly_the_manual_views():
    torch.manual_seed(0)
    net = create_network("efficientnet_lite0", 3, pretrained=False).eval()
    net.head[-1].weight.data *= 100  # a random net is nearly uniform: make its views disagree visibly
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8), np.arange(5))
    info = ModelInfo("efficientnet_lite0", ["a", "b", "c"], 32, 40, [0.5] * 3, [0.5] * 3, "top-down")
    views = tta_views("top-down")
    probs = predict_views([net], source, info, views, bs=2)
    x = torch.stack([eval_transform(32)(source.get(i)) for i in range(5)])
    with torch.no_grad():
        manual = torch.stack([net(dihedral(x, k)).softmax(1) for k in range(8)])
    assert probs.shape == (8, 5, 3)
    assert np.allclose(probs, manual.numpy(), atol=PROB_ATOL)
    assert np.allclose(probs.mean(0), manual.mean(0).numpy(), atol=PROB_ATOL)
    # rot90 twice (k=2) is a real 180-degree turn of the input, not a no-op
    assert np.abs(probs[0] - probs[2]).max() > 10 * PROB_ATOL


def test_policy_saved_with_the_model_is_used_at_predict_time(tiny_run: Path, unlabelled: Path, tmp_path: Path):
    from germinate.inference import predict_folder

    info = json.loads((tiny_run / "model.json").read_text())
    assert info["flip"] == "top-down"
    _, probs_td, _ = predict_folder(tiny_run, unlabelled)
    # The same weights declared side-on must give the side-on average (plain + mirror) instead.
    side = tmp_path / "side"
    side.mkdir()
    for f in ("model.safetensors",):
        (side / f).write_bytes((tiny_run / f).read_bytes())
    info["flip"] = "side-on"
    (side / "model.json").write_text(json.dumps(info))
    _, probs_so, _ = predict_folder(side, unlabelled)
    net, minfo = load_model(side)
    from germinate.data.cache import decode_images
    from germinate.data.folders import scan_unlabelled

    src = decode_images(scan_unlabelled(unlabelled).files, minfo.source_px).source
    x = torch.stack([eval_transform(minfo.eval_size)(src.get(i)) for i in range(len(src))])
    with torch.no_grad():
        expected = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    assert np.allclose(probs_so, expected.numpy(), atol=PROB_ATOL)
    assert np.abs(probs_td - probs_so).max() > 10 * PROB_ATOL
