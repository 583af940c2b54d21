"""Sharpness-aware minimisation (--sam): the move uphill and back, the batchnorm statistics the
second pass leaves alone, and a learner's SAM step on real training batches."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from germinate import TrainConfig, create_learner
from germinate.training.sam import batchnorm_stats_kept, climb, climb_back


def test_climb_moves_every_parameter_together_rho_along_the_gradient_and_back():
    torch.manual_seed(0)
    a, b, c = (torch.randn(2, 3, requires_grad=True), torch.randn(4, requires_grad=True),
               torch.randn(5, requires_grad=True))
    a.grad, b.grad = torch.randn(2, 3), torch.randn(4)  # c has none: frozen, or unused this step
    start = [p.detach().clone() for p in (a, b, c)]
    moved = climb([a, b, c], rho=0.3)
    step = torch.cat([(a - start[0]).flatten(), (b - start[1]).flatten()]).detach()
    grad = torch.cat([a.grad.flatten(), b.grad.flatten()])
    assert torch.linalg.vector_norm(step) == pytest.approx(0.3, rel=1e-5)
    assert torch.allclose(step, 0.3 * grad / torch.linalg.vector_norm(grad), atol=1e-6)
    assert torch.equal(c.detach(), start[2]) and len(moved[0]) == 2
    climb_back(moved)
    for p, s in zip((a, b, c), start):
        assert torch.allclose(p.detach(), s, atol=1e-6)


def test_the_second_gradient_is_the_gradient_at_the_moved_weights():
    # f(w) = sum(d * w^2) / 2 has the gradient d * w, so SAM's is d * (w + rho * g / |g|).
    d = torch.tensor([1.0, 4.0, 9.0])
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    (0.5 * (d * w * w).sum()).backward()
    g = w.grad.clone()
    moved = climb([w], rho=0.1)
    w.grad = None
    (0.5 * (d * w * w).sum()).backward()
    climb_back(moved)
    expected = d * (w.detach() + 0.1 * g / torch.linalg.vector_norm(g))
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert not torch.allclose(w.grad, g, atol=1e-3)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_normalises_by_the_batch_but_keeps_its_statistics_inside(momentum):
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=momentum)).train()
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    bn(x)  # a first batch, so the statistics are not at their initial values
    untouched = copy.deepcopy(bn)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with batchnorm_stats_kept(bn):
        inside = bn(x)
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())  # the batch count too
    assert bn[1].momentum == momentum
    assert torch.allclose(inside, bn(x), atol=1e-6)  # normalised by the batch, as outside
    # afterwards the statistics move on as if the pass inside had never been
    x2 = torch.randn(6, 3, 5, 5)
    untouched(x), untouched(x2), bn(x2)
    assert all(torch.allclose(v, untouched.state_dict()[k], atol=1e-6) for k, v in bn.state_dict().items())
    assert not torch.allclose(before["1.running_mean"], bn[1].running_mean)


def _stats(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def _one_step(labelled: Path, sam: float, lr: float) -> tuple[dict, dict, dict]:
    """(weights before, weights after, batchnorm statistics after) one training step on the
    learner's first batch, from the same pretrained start and head initialisation."""
    learn = create_learner(TrainConfig(train_dir=str(labelled), size=32, bs=8, epochs=1, quiet=True, seed=5, sam=sam))
    learn.unfreeze()
    learn._set_lrs([lr] * len(learn.net.layer_groups))
    x, y = next(learn._train_batches(("sam",), 0, precompute=False))
    before = {k: v.clone() for k, v in learn.net.state_dict().items()}
    learn._set_mode(False)
    torch.manual_seed(1)  # the same dropout in the first pass of both
    learn._step(x, y, precompute=False, sam=True)
    return before, {k: v.clone() for k, v in learn.net.state_dict().items()}, _stats(learn.net)


def test_a_sam_step_moves_the_weights_its_own_way_and_counts_the_batch_once(labelled: Path):
    before, plain, plain_stats = _one_step(labelled, 0.0, 1e-3)
    sam_before, sam, sam_stats = _one_step(labelled, 0.05, 1e-3)
    assert all(torch.equal(v, sam_before[k]) for k, v in before.items())  # the same start
    # the batchnorm statistics moved once, by the first pass, as in a plain step
    assert all(torch.allclose(v, sam_stats[k], atol=1e-6) for k, v in plain_stats.items())
    assert not all(torch.equal(v, before[k]) for k, v in plain_stats.items())
    # the step itself came from another gradient
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    moved = [k for k in weights if not torch.equal(plain[k], before[k])]
    assert moved and any(not torch.allclose(plain[k], sam[k], atol=1e-7) for k in moved)
    assert {k for k in weights if not torch.equal(sam[k], before[k])} == set(moved)  # fixed blocks stay fixed


def test_a_sam_step_at_lr_zero_leaves_the_weights_where_they_were(labelled: Path):
    before, after, _ = _one_step(labelled, 0.5, 0.0)
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(after[k], before[k], atol=1e-6) for k in weights)


def test_sam_last_takes_plain_steps_first_and_sam_steps_in_the_last_share(labelled: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    import germinate.training.learner as learner_module
    from germinate import train

    climbs = []
    real = learner_module.climb
    monkeypatch.setattr(learner_module, "climb", lambda params, rho: climbs.append(rho) or real(params, rho))
    learn = train(TrainConfig(train_dir=str(labelled), size=32, bs=8, epochs=4, quiet=True, sam=0.05,
                              sam_last=0.5, valid_every=4), tmp_path / "run")
    steps = learn.steps_per_epoch()
    assert steps > 1 and climbs == [0.05] * (2 * steps)  # epochs 3 and 4 only


@pytest.mark.parametrize("how", ["fit", "stage"])
def test_sam_last_counts_a_fit_of_its_own_alone(labelled: Path, monkeypatch: pytest.MonkeyPatch, how: str):
    # Learner.fit in a notebook, or fit_stage on a stage outside the plan: --sam-last shares that
    # fit's epochs alone, not the plan's (which holds no such stage, or earlier fits).
    import germinate.training.learner as learner_module
    from germinate.training.plan import Stage

    climbs = []
    real = learner_module.climb
    monkeypatch.setattr(learner_module, "climb", lambda params, rho: climbs.append(rho) or real(params, rho))
    learn = create_learner(TrainConfig(train_dir=str(labelled), size=32, bs=8, epochs=2, quiet=True, sam=0.05,
                                       sam_last=0.5))
    learn.unfreeze()
    steps = learn.steps_per_epoch()
    for _ in range(2):  # the second fit counts its own two epochs, not the first's too
        before = len(climbs)
        if how == "fit":
            learn.fit(2, 1e-4)
        else:
            learn.fit_stage(Stage("alone", 0, "cosine", 2, lrs=(1e-4,) * 3))
        assert len(climbs) - before == steps  # its second epoch only
