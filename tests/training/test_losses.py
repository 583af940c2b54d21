"""The training loss: plain cross-entropy, or Poly-1 (`--poly EPS`)."""

import pytest
import torch
from torch import nn

from germinate import TrainConfig, create_learner
from germinate.training.losses import PolyLoss, make_loss


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])


def test_poly1_adds_eps_times_the_mean_missing_probability_to_cross_entropy():
    logits, y = _batch()
    loss = make_loss(poly=2.0)(logits, y)
    p = torch.softmax(logits, 1)
    by_hand = -p[range(6), y].log().mean() + 2.0 * (1 - p[range(6), y]).mean()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_poly1_takes_soft_and_smoothed_targets_as_they_are():
    logits, y = _batch()
    soft = torch.nn.functional.one_hot(y, 5).float() * 0.7 + 0.3 * torch.nn.functional.one_hot(y.roll(1), 5).float()
    p = torch.softmax(logits, 1)
    loss = PolyLoss(1.0)(logits, soft)  # mixup's labels: p_t is the mixed share of the softmax
    expected = -(soft * p.log()).sum(1).mean() + (1 - (soft * p).sum(1)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    smoothed = PolyLoss(1.0, label_smoothing=0.1)(logits, y)
    target = torch.nn.functional.one_hot(y, 5).float() * 0.9 + 0.02
    expected = -(target * p.log()).sum(1).mean() + (1 - (target * p).sum(1)).mean()
    assert float(smoothed) == pytest.approx(float(expected), rel=1e-5)


def test_poly1_gradient_keeps_pushing_a_right_image_that_cross_entropy_has_nearly_left():
    # An image the model already gets right (p_t about 0.82): cross-entropy's pull on its logit is
    # 1 - p_t; Poly-1's is (1 - p_t)(1 + eps p_t), larger for eps > 0.
    logits = torch.tensor([[3.0, 0.8, 0.8]], requires_grad=True)
    y = torch.tensor([0])
    pulls = []
    for loss_fn in (make_loss(), make_loss(poly=1.0)):
        (g,) = torch.autograd.grad(loss_fn(logits, y), logits)
        pulls.append(-float(g[0, 0]))
    pt = float(torch.softmax(logits.detach(), 1)[0, 0])
    assert pulls[0] == pytest.approx(1 - pt, rel=1e-5)
    assert pulls[1] == pytest.approx((1 - pt) * (1 + pt), rel=1e-5)


def test_the_learner_trains_with_poly1_only_when_asked(labelled):
    base = dict(train_dir=str(labelled), size=32, bs=8, quiet=True, seed=5, precompute="off")
    assert type(create_learner(TrainConfig(**base)).loss_fn) is nn.CrossEntropyLoss
    learn = create_learner(TrainConfig(**base, poly=1.5))
    assert isinstance(learn.loss_fn, PolyLoss) and learn.loss_fn.eps == 1.5
