"""How the body's feature map is pooled for the head: concat (average and max) or GeM (`--pool`)."""

import json
from pathlib import Path

import pytest
import torch

from germinate import TrainConfig, create_learner
from germinate.errors import GerminateError
from germinate.models.export import ModelInfo, export_model, load_model
from germinate.models.head import ConcatPool, GeMPool
from germinate.models.network import create_network


def _maps() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.rand(3, 5, 4, 6, generator=g) * 4  # non-negative, as after the body's last activation


def test_gem_is_the_power_mean_of_each_map():
    x = _maps()
    by_hand = (x**3).mean(dim=(2, 3)) ** (1 / 3)
    assert torch.allclose(GeMPool()(x), by_hand, rtol=1e-5)


def test_gem_runs_from_average_pooling_at_p_1_towards_max_pooling():
    x = _maps()
    gem = GeMPool(1.0)
    assert torch.allclose(gem(x), x.mean(dim=(2, 3)), rtol=1e-5)
    near_max, top = GeMPool(60.0)(x), x.amax(dim=(2, 3))
    # 24 places: at worst one holds the max and the rest 0, which gives (1/24)^(1/60) = 0.948 of it
    assert bool((near_max >= 0.948 * top).all() and (near_max <= top * (1 + 1e-5)).all())
    # and between the two for the usual p
    mid = GeMPool(3.0)(x)
    assert bool((mid >= x.mean(dim=(2, 3)) - 1e-5).all() and (mid <= x.amax(dim=(2, 3)) + 1e-5).all())


def test_gem_takes_maps_with_zeros_and_gives_p_a_finite_gradient():
    x = _maps()
    x[0, 0] = 0  # a ReLU map that is dead everywhere
    gem = GeMPool()
    gem(x).sum().backward()
    assert torch.isfinite(gem.p.grad) and float(gem.p.grad) != 0


def test_a_gem_network_gives_the_head_one_feature_per_channel_and_trains_p_with_the_head():
    concat = create_network("efficientnet_lite0", 4, pretrained=False)
    gem = create_network("efficientnet_lite0", 4, pretrained=False, pool="gem")
    assert isinstance(concat.pool, ConcatPool) and isinstance(gem.pool, GeMPool)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert gem.eval().features(x).shape[1] * 2 == concat.eval().features(x).shape[1]
    assert any(p is gem.pool.p for p in gem.layer_groups[-1])  # the head group: it learns from the start


def test_a_gem_model_exports_loads_and_is_refused_by_an_older_germinate(tmp_path: Path):
    torch.manual_seed(0)
    net = create_network("efficientnet_lite0", 3, pretrained=False, pool="gem").eval()
    with torch.no_grad():
        net.pool.p.fill_(2.5)  # as learnt: the loaded model must have this one, not a fresh 3
    info = ModelInfo("efficientnet_lite0", ["a", "b", "c"], 32, 40, [0.5] * 3, [0.5] * 3, "top-down", pool="gem")
    export_model(net, tmp_path, info)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["pool"] == "gem" and meta["format_version"] == 4  # a germinate without GeM cannot build it
    loaded, info = load_model(tmp_path)
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5) and float(loaded.pool.p) == 2.5
    meta["pool"] = "median"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(GerminateError, match="pooling germinate does not know"):
        load_model(tmp_path)


def test_the_learner_moves_gem_p_when_the_body_trains(labelled: Path):
    learn = create_learner(TrainConfig(train_dir=str(labelled), size=32, bs=8, quiet=True, seed=5,
                                       pretrained=False, pool="gem"))
    learn.unfreeze()
    learn.fit(1, 1e-2)
    p = float(learn.net.pool.p.detach())
    assert p != 3.0 and torch.isfinite(torch.tensor(p))
