"""--class-weights: rarer classes weigh more in the training loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from germinate import TrainConfig, create_learner
from germinate.training.class_weights import class_weights
from tests.conftest import make_labelled


def test_balanced_weights_make_every_class_count_equally():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    w = class_weights(labels, 4, "balanced")
    counts = np.bincount(labels, minlength=4)
    # each present class's total weight is the same: n / n_classes_present
    assert np.allclose((w * counts)[:3], len(labels) / 3)
    assert w[3] == 1.0  # absent from training: left at 1
    assert np.allclose(class_weights(labels, 4, "sqrt"), np.sqrt(w))
    assert class_weights(labels, 4, "none") is None


def test_the_learner_weights_its_loss_by_the_training_split(tmp_path: Path):
    train_dir = make_labelled(tmp_path / "train", per_class=12)
    for f in sorted((train_dir / "Red leaf").iterdir())[4:]:
        f.unlink()  # Red leaf: 4 images, the other classes 12
    cfg = TrainConfig(train_dir=str(train_dir), size=32, bs=8, quiet=True, class_weights="balanced")
    learn = create_learner(cfg)
    labels = learn.data.train.labels
    red = learn.data.classes.index("Red leaf")
    w = learn.loss_fn.weight.cpu().numpy()
    assert w[red] == pytest.approx(max(w)) and w[red] > 2 * min(w)
    assert np.allclose(w, len(labels) / (len(w) * np.bincount(labels)))
    # one weighted step's loss equals the weighted mean by hand
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, red])
    by_hand = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * learn.loss_fn.weight.cpu()[y]).sum()
    assert float(learn.loss_fn.cpu()(logits, y)) == pytest.approx(float(by_hand / learn.loss_fn.weight.cpu()[y].sum()), rel=1e-5)
    assert create_learner(TrainConfig(train_dir=str(train_dir), size=32, bs=8, quiet=True)).loss_fn.weight is None
