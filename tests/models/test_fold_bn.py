import copy

import pytest
import torch
from torch import nn

from germinate.models.fold_bn import conv_bn_pairs, fold_batchnorm
from germinate.models.network import create_network, sync_batchnorm


def _norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _randomise_statistics(net: nn.Module) -> None:
    """Batchnorm statistics far from the identity, so that a pair folded wrongly shows."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18"])
@torch.no_grad()
def test_folded_copy_computes_the_same_without_batchnorm_and_leaves_the_network_alone(arch):
    net = create_network(arch, 5, pretrained=False).use_channels_last()
    _randomise_statistics(net)
    net.fix_blocks(2)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n_norms = _norms(net.body)
    rng = torch.get_rng_state()

    folded = fold_batchnorm(net, 64)

    assert torch.equal(torch.get_rng_state(), rng)  # dropout draws from it: runs must repeat exactly
    assert _norms(folded.body) == 0 and n_norms > 0  # every convolution-batchnorm pair folded
    assert not folded.training
    assert net.training and _norms(net.body) == n_norms  # the network itself: unchanged
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # NHWC weights stay NHWC (the fast layout on CPU and GPU)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in folded.body.modules() if isinstance(m, nn.Conv2d))
    x = torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8)
    want = net.eval()(x)
    torch.testing.assert_close(folded(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # the head's pooled features too (what the head stage trains on)
    torch.testing.assert_close(folded.features(x), net.features(x), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_syncbatchnorm_of_a_sync_bn_run_is_folded_too():
    # Validation under torchrun with --sync-bn folds a network of (timm's) SyncBatchNorm layers.
    net = create_network("efficientnet_lite0", 5, pretrained=False)
    _randomise_statistics(net)
    net = sync_batchnorm(net).eval()
    folded = fold_batchnorm(net, 64)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.body.modules())
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    want = net(x)
    torch.testing.assert_close(folded(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


class _SharedOutput(nn.Module):
    """A convolution whose output feeds its batchnorm and, besides it, the sum: folding the
    batchnorm into the convolution would change the second use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x / 255)
        return self.fc((self.bn(y) + y).mean((2, 3)))


@torch.no_grad()
def test_a_pair_whose_convolution_output_is_used_twice_is_left_unfolded():
    net = _SharedOutput()
    _randomise_statistics(net)
    assert conv_bn_pairs(net, torch.rand(1, 3, 8, 8)) == [("conv", "bn")]  # it looks like a pair
    folded = fold_batchnorm(net, 8)
    assert _norms(folded) == 1  # the check against the original caught it
    x = torch.rand(2, 3, 8, 8) * 255
    torch.testing.assert_close(folded(x), net.eval()(x))


@torch.no_grad()
def test_pairs_are_found_by_data_flow_not_by_order():
    # Two convolutions, then the batchnorm of the first: only that one is a pair.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.a(x)
            return self.b(x) + self.bn(y)

    assert conv_bn_pairs(Net(), torch.rand(1, 3, 4, 4)) == [("a", "bn")]


def _fixed_norms(net) -> list[nn.Module]:
    return [m for unit in net.blocks[: net._n_fixed] for u in unit for m in u.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18"])
def test_training_runs_the_fixed_blocks_folded_and_computes_the_same(arch):
    torch.manual_seed(0)
    net = create_network(arch, 5, pretrained=False, dropout=0.0).use_channels_last()
    net.fix_blocks(2)
    for unit in net.blocks[: net._n_fixed]:
        _randomise_statistics(unit)  # far from the identity, so that a wrong fold shows
    reference = copy.deepcopy(net)
    reference.fold_fixed = False
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():  # the first training step builds the folded view (an evaluation of 2 images)
        net.train()(x), reference.train()(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []
    for m in _fixed_norms(net):
        m.register_forward_hook(lambda *_: calls.append(1))
    assert _fixed_norms(net)

    out, want = net(x), reference(x)

    assert calls == []  # no batchnorm layer of the fixed blocks ran: they are folded
    torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-3 * float(want.detach().abs().max()))
    # the training layers' statistics moved as without folding; the fixed ones' and the saved names did not
    after, moved = net.state_dict(), reference.state_dict()
    assert after.keys() == before.keys()
    for k, v in after.items():
        torch.testing.assert_close(v, moved[k], rtol=1e-3, atol=1e-4)
    assert any(not torch.equal(v, before[k]) for k, v in after.items() if "running_mean" in k)
    # The same gradients, up to rounding: compared with every batchnorm on its running statistics
    # (--freeze-bn), since batch statistics of 8 small images magnify rounding, and as one vector,
    # since an activation's kink flips an element here and there. In this random Lite0 the folded
    # gradient is 0.3% off, as is the unfolded one's after a 1e-6 change of the stem's weights; a
    # wrong fold is off by far more.
    for n in (net, reference):
        n.freeze_bn()(x).square().sum().backward()
    assert [p.grad is None for p in net.parameters()] == [p.grad is None for p in reference.parameters()]
    got, want = (torch.cat([p.grad.flatten() for p in n.parameters() if p.grad is not None]) for n in (net, reference))
    assert float((got - want).norm() / want.norm()) < 2e-2
    assert calls == []
    with torch.no_grad():
        net.eval()(x)
    assert calls  # evaluation keeps its own path (fold_batchnorm's copy, or the layers as they are)


def test_the_folded_blocks_follow_loaded_weights_and_swapped_modules():
    net = create_network("efficientnet_lite0", 5, pretrained=False, dropout=0.0)
    net.fix_blocks(2)
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        net.train()(x)  # the folded view is built from the statistics it has now
        other = copy.deepcopy(net)
        for unit in other.blocks[: other._n_fixed]:
            _randomise_statistics(unit)  # new values for the fixed blocks' statistics, loaded into net
        net.load_state_dict(other.state_dict())
        other.fold_fixed = False
        want = other.train()(x)
        torch.testing.assert_close(net(x), want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
        synced, other_synced = sync_batchnorm(net), sync_batchnorm(other)  # new modules, the same tensors
        want = other_synced.train()(x)
        torch.testing.assert_close(synced.train()(x), want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
