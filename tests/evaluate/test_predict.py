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


def _changed_copy(run: Path, dest: Path, **info_changes) -> Path:
    """A copy of a run's exported model with other weights (and model.json changes)."""
    from germinate.models.export import save_weights

    dest.mkdir()
    net, _ = load_model(run)
    torch.manual_seed(0)
    for p in net.head.parameters():
        p.data += torch.randn_like(p) * 0.5
    info = {**json.loads((run / "model.json").read_text()), **info_changes}
    info["files"] = {"model.safetensors": save_weights(net, dest / "model.safetensors", len(info["classes"]))}
    (dest / "model.json").write_text(json.dumps(info))
    return dest


def test_an_ensemble_averages_its_models_each_at_its_own_size(tiny_run: Path, unlabelled: Path, labelled: Path,
                                                               tmp_path: Path):
    from germinate.inference import evaluate_folder, predict_folder

    other = _changed_copy(tiny_run, tmp_path / "other", test_size=48, source_px=56)
    _, p1, _ = predict_folder(tiny_run, unlabelled)
    _, p2, _ = predict_folder(other, unlabelled)
    assert np.abs(p1 - p2).max() > 10 * PROB_ATOL  # two different models
    files, both, classes = predict_folder([tiny_run, other], unlabelled)
    assert np.allclose(both, (p1 + p2) / 2, atol=PROB_ATOL)
    result = evaluate_folder([tiny_run, other], labelled, tmp_path / "eval")
    assert result["models"] == 2 and result["n"] == 36


def test_an_ensemble_of_models_with_other_classes_is_refused_in_one_line(tiny_run: Path, unlabelled: Path,
                                                                          tmp_path: Path, capsys):
    from tests.test_cli import assert_one_line_error, run_cli

    info = json.loads((tiny_run / "model.json").read_text())
    other = _changed_copy(tiny_run, tmp_path / "other", classes=list(reversed(info["classes"])))
    code, _, err = run_cli(["predict", tiny_run, other, unlabelled, "--submission", tmp_path / "s.csv"], capsys)
    assert_one_line_error(code, err, "other classes", "same classes")
    assert not (tmp_path / "s.csv").exists()
