"""--mixup and --cutmix: training batches blended two by two, labels in the same proportion."""

from pathlib import Path

import numpy as np
import pytest
import torch

from germinate import TrainConfig, create_learner
from germinate.training.mixing import make_mixer
from tests.conftest import make_labelled


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])


def test_mixup_blends_each_image_with_the_previous_one_by_its_label_share():
    x, y = _batch()
    torch.manual_seed(0)
    mixed, soft = make_mixer(0.4, 0.0, 5)(x, y)
    lam = float(soft[1, 1])  # image 1 (class 1) blended with image 0 (class 0)
    assert 0 < lam < 1 and torch.allclose(soft.sum(1), torch.ones(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    assert soft[1, 0] == pytest.approx(1 - lam)  # the previous image's class gets the rest


def test_cutmix_pastes_a_box_whose_area_is_the_label_share():
    x, y = _batch()
    torch.manual_seed(1)
    mixed, soft = make_mixer(0.0, 1.0, 5)(x, y)
    own = (mixed == x).all(1)  # pixels kept from the image itself
    pasted = (mixed == x.roll(1, 0)).all(1)
    assert bool((own | pasted).all())  # every pixel is one image's or the other's
    lam = float(soft[1, 1])
    assert float(pasted[1].float().mean()) == pytest.approx(1 - lam, abs=1e-6)
    assert 0 < float(pasted.float().mean()) < 1


def test_both_off_is_no_mixer_and_both_on_picks_one_per_batch():
    assert make_mixer(0.0, 0.0, 5) is None
    x, y = _batch()
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        mixed, soft = make_mixer(0.4, 1.0, 5)(x, y)
        lam = float(soft[1, 1])
        kinds.add("mixup" if torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_a_mixed_run_trains_on_blended_batches_and_repeats_exactly(tmp_path: Path):
    train_dir = make_labelled(tmp_path / "train", per_class=8)
    base = dict(train_dir=str(train_dir), size=32, bs=8, quiet=True, seed=5, precompute="off")

    def one_epoch(**kw) -> tuple[np.ndarray, list[torch.Tensor]]:
        learn = create_learner(TrainConfig(**base, **kw))
        targets, loss_fn = [], learn.loss_fn
        learn.loss_fn = lambda out, target: (targets.append(target), loss_fn(out, target))[1]
        learn.fit(1, 1e-3)
        return torch.cat([p.detach().flatten() for p in learn.net.parameters()]).numpy(), targets

    mixed_a, targets = one_epoch(mixup=0.4)
    mixed_b, _ = one_epoch(mixup=0.4)
    plain, plain_targets = one_epoch()
    assert np.array_equal(mixed_a, mixed_b)  # the mixing draws are seeded per step
    assert not np.allclose(mixed_a, plain)
    soft = torch.cat(targets)
    assert soft.dtype == torch.float32 and torch.allclose(soft.sum(1), torch.ones(len(soft)))
    assert float(soft.max(1).values.min()) < 1  # blended labels reached the loss
    assert all(t.dtype == torch.int64 for t in plain_targets)  # unmixed: class indices
