"""The offline weights are real ImageNet weights, mapped correctly; heads are replaced."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from germinate.errors import GerminateError
from germinate.models.backbones import (
    LITE_BN_EPS,
    batchnorm_eps,
    check_arch,
    create_backbone,
    create_imagenet_model,
)
from germinate.models.head import ConcatPool
from germinate.models.network import create_network, sync_batchnorm
from germinate.models.weights import load_by_order, load_weights_file, read_state_file


def _chelsea(size: int = 224) -> torch.Tensor:
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    img = Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()  # a writable copy


@pytest.mark.parametrize("arch", ["efficientnet_lite0"])
def test_offline_weights_classify_a_cat_photo(arch: str):
    model = create_imagenet_model(arch).eval()
    x = (_chelsea() / 255 - 0.5) / 0.5  # the lite weights expect TF-style [-1, 1] inputs
    with torch.no_grad():
        top = model(x).softmax(1)[0].topk(3)
    assert 281 <= int(top.indices[0]) <= 285  # ImageNet's cat classes (tabby .. Egyptian cat)
    assert float(top.values[:3].sum()) > 0.5


def test_the_packaged_file_maps_tensor_by_tensor():
    from germinate.models.weights import lite_weights_path

    state = torch.load(lite_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = create_imagenet_model("efficientnet_lite0")
    assert len(state) == len(model.state_dict()) == 296
    for (k_src, v_src), (k_dst, v_dst) in zip(state.items(), model.state_dict().items()):
        assert torch.equal(v_src, v_dst), (k_src, k_dst)


def test_the_offline_weights_keep_the_batchnorm_eps_they_were_trained_with():
    # TensorFlow's 1e-3, not timm's 1e-5: the weights hold channels whose running variance is
    # near zero, and there the eps decides what a layer computes
    model = create_imagenet_model("efficientnet_lite0")
    assert batchnorm_eps(model) == LITE_BN_EPS == 1e-3
    near_zero = sum(int((m.running_var < 1e-3).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert near_zero > 100
    x = (_chelsea(128) / 255 - 0.5) / 0.5
    with torch.no_grad():
        ours = model.eval()(x)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-5
        assert not torch.allclose(model(x), ours, atol=1e-2)


def test_load_by_order_fails_loudly_on_a_mismatch():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = OrderedDict((f"x{i}", torch.zeros_like(v)) for i, v in enumerate(model.state_dict().values()))
    load_by_order(model, good, "test")
    bad = OrderedDict(good)
    bad["x0"] = torch.zeros(5, 3)
    with pytest.raises(GerminateError, match=r"x0 \(5, 3\) does not fit 0.weight \(4, 3\)"):
        load_by_order(model, bad, "test")
    short = OrderedDict(list(good.items())[:3])
    with pytest.raises(GerminateError, match="has 3 tensors but"):
        load_by_order(model, short, "test")


def test_a_weights_file_that_is_not_tensors_alone_is_refused_without_unpickling_it(tmp_path):
    import datetime

    garbage, pickled = tmp_path / "garbage.pth", tmp_path / "pickled.pth"
    garbage.write_bytes(b"not a checkpoint at all\n")
    torch.save({"conv.weight": torch.zeros(1), "saved": datetime.date(2026, 1, 1)}, pickled)  # a class's pickle
    for path in (garbage, pickled):
        with pytest.raises(GerminateError) as e:
            read_state_file(path)
        message = str(e.value)
        assert "not a safetensors file or a PyTorch file of tensors alone" in message, message
        assert "weights_only" not in message and len(message.splitlines()) == 1


def test_weights_file_for_another_architecture_names_both(tmp_path):
    from safetensors.torch import save_file

    other = create_imagenet_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    target = create_imagenet_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(GerminateError, match="resnet18.safetensors.*efficientnet_lite0"):
        load_weights_file(target, path, "efficientnet_lite0")


def test_head_replacement():
    net = create_network("efficientnet_lite0", n_classes=12, pretrained=False)
    assert isinstance(net.pool, ConcatPool)
    assert net.head[0].num_features == 2 * 1280  # avg + max pooled features
    assert net.head[-1].out_features == 12
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in net.modules())
    out = net.eval()(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8))
    assert out.shape == (2, 12)


def test_three_layer_groups_cover_every_parameter_once():
    for arch in ("efficientnet_lite0", "resnet18", "mobilenetv3_small_050"):
        net = create_network(arch, 5, pretrained=False)
        ids = [id(p) for g in net.layer_groups for p in g]
        assert len(net.layer_groups) == 3 and all(net.layer_groups)
        assert sorted(ids) == sorted(id(p) for p in net.parameters())


def test_blocks_are_the_stem_then_each_block_from_the_input_on():
    for arch, n_blocks in (("efficientnet_lite0", 16), ("resnet18", 8), ("mobilenetv3_small_050", 12)):
        net = create_network(arch, 5, pretrained=False)
        assert len(net.blocks) == n_blocks + 1
        order = {id(m): i for i, m in enumerate(net.body.modules())}
        places = [[order[id(m)] for m in unit.modules() if id(m) in order] for unit in net.blocks]
        assert all(max(a) < min(b) for a, b in zip(places, places[1:]))  # one after another, no overlap
        stem = [m for m in net.blocks[0].modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(stem) == 1 and stem[0].in_channels == 3  # the first convolution, on the image
    net = create_network("efficientnet_lite0", 3, pretrained=False)
    net.fix_blocks(2)
    net = sync_batchnorm(net)  # as --sync-bn swaps the modules under torchrun
    stem_bn = net.train().blocks[0][1]
    assert isinstance(stem_bn, nn.SyncBatchNorm) and not stem_bn.training and not stem_bn.weight.requires_grad
    assert net.blocks[3][0].bn1.training  # the first block not fixed
    vit = create_network("vit_tiny_patch16_224", 3, pretrained=False)
    assert vit.blocks == [] and vit.fix_blocks(3) == 0 and not vit.fixed_params  # not known: nothing fixed


@torch.no_grad()
def test_sync_batchnorm_keeps_what_the_network_computes():
    # EfficientNet's batchnorm layers carry their activation (timm's BatchNormAct2d): a plain
    # SyncBatchNorm in their place would drop every ReLU6. In eval mode SyncBatchNorm needs no
    # process group, so the function can be compared on the CPU.
    for arch in ("efficientnet_lite0", "resnet18"):
        net = create_network(arch, 4, pretrained=False).eval()
        for m in net.modules():  # statistics that are not the identity, so that a lost layer shows
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        x = torch.randint(0, 256, (2, 3, 64, 64)).float()
        want = net(x)
        synced = sync_batchnorm(net).eval()
        assert not any(type(m) is nn.BatchNorm2d for m in synced.body.modules())
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.body.modules())
        torch.testing.assert_close(synced(x), want, rtol=1e-4, atol=1e-4)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(GerminateError, match="Invalid arch 'resnet9000'; valid: efficientnet_lite0"):
        check_arch("resnet9000")


def test_missing_offline_weights_explain_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no network here

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(GerminateError, match="resnet50 offline: put https://.*resnet50.*--weights FILE"):
        create_backbone("resnet50")


def test_vision_transformers_pool_their_tokens_at_any_size():
    import torch

    from germinate.models.network import create_network

    for arch in ("vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"):
        net = create_network(arch, 3, pretrained=False, probe_size=64).eval()
        with torch.no_grad():
            assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_a_backbone_that_cannot_take_the_size_is_refused_at_start(tmp_path, capsys):
    from germinate.cli import main
    from tests.conftest import make_labelled

    train_dir = make_labelled(tmp_path / "train", per_class=4)
    # MLP-Mixer has a fixed number of tokens: 224 px only.
    code = main(["train", str(train_dir), "--out", str(tmp_path / "r"), "--arch", "mixer_s16_224", "--no-pretrained",
                 "--size", "64", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backbone mixer_s16_224 cannot take 64 px images" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written: the same --out works once fixed


def test_drop_path_skips_blocks_while_training_only():
    from timm.layers import DropPath

    plain = create_network("efficientnet_lite0", 3, pretrained=False)
    net = create_network("efficientnet_lite0", 3, pretrained=False, drop_path=0.5)
    net.load_state_dict(plain.state_dict())  # stochastic depth adds no weights
    rates = [m.drop_prob for m in net.body.modules() if isinstance(m, DropPath)]
    n = len(rates) + 1  # the first block's rate is 0: no module
    assert n == len(net.blocks) - 1  # every block of Lite0 but the stem
    np.testing.assert_allclose(rates, np.linspace(0, 0.5, n)[1:])  # rising with depth to 0.5
    assert not any(isinstance(m, DropPath) for m in plain.body.modules())
    x = torch.randint(0, 256, (4, 3, 64, 64)).float()
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), plain.eval()(x))  # prediction: no block skipped
        net.train(), plain.train()
        torch.manual_seed(0)
        a, b = net.features(x), net.features(x)
        assert (a - b).abs().max() > 1e-2  # training: other blocks skipped on each pass
        torch.testing.assert_close(plain.features(x), plain.features(x))
    with pytest.raises(GerminateError, match="--drop-path needs .* resnet18 has none"):
        create_network("resnet18", 3, pretrained=False, drop_path=0.1)
