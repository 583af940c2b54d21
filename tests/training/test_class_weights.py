"""--class-weights: rarer classes weigh more in the training loss; --sampler: or are drawn more often;
--logit-adjust: or are predicted more often by the exported model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from germinate import TrainConfig, create_learner
from germinate.data.loaders import EpochBatches
from germinate.training.class_weights import class_weights, logit_shift, sample_weights
from tests.conftest import make_labelled, read_rows


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


def test_a_balanced_epoch_draws_every_class_about_equally_often():
    labels = np.array([0] * 300 + [1] * 100 + [2] * 600)
    counts = {}
    for mode in ("shuffle", "balanced", "sqrt"):
        order = EpochBatches(len(labels), 50, seed=3, weights=sample_weights(labels, 3, mode))
        order.set_epoch(("e", 0))
        idx = np.concatenate(order.batches())
        assert len(idx) == len(labels)  # an epoch is as long as the split, whatever the sampler
        counts[mode] = np.bincount(labels[idx], minlength=3) / len(idx)
        again = EpochBatches(len(labels), 50, seed=3, weights=sample_weights(labels, 3, mode))
        again.set_epoch(("e", 0), start=4)  # resuming mid-epoch gives the same batches from there
        assert [b.tolist() for b in again] == [b.tolist() for b in order.batches()[4:]]
    assert np.allclose(counts["shuffle"], [0.3, 0.1, 0.6])  # each image once
    assert np.allclose(counts["balanced"], 1 / 3, atol=0.05)  # 1000 draws: a few points of noise
    root = np.sqrt([300, 100, 600])
    assert np.allclose(counts["sqrt"], root / root.sum(), atol=0.05)
    assert sample_weights(labels, 3, "shuffle") is None


def test_the_learner_draws_its_epochs_by_the_sampler(tmp_path: Path):
    train_dir = make_labelled(tmp_path / "train", per_class=12)
    for f in sorted((train_dir / "Red leaf").iterdir())[3:]:
        f.unlink()  # Red leaf: 3 images, the other classes 12
    labels_seen = {}
    for sampler in ("shuffle", "balanced"):
        cfg = TrainConfig(train_dir=str(train_dir), size=32, bs=4, quiet=True, valid_pct=0.25, sampler=sampler)
        learn = create_learner(cfg)
        red = learn.data.classes.index("Red leaf")
        ys = torch.cat([y for key in range(20) for _, y in learn._train_batches(("e", key), 0, precompute=True)])
        labels_seen[sampler] = float((ys == red).float().mean())
        assert learn.steps_per_epoch() == len(learn.data.train) // 4
    share = float(np.mean(learn.data.train.labels == red))
    assert labels_seen["shuffle"] <= share + 1e-6  # each image at most once an epoch (ragged batch dropped)
    assert labels_seen["balanced"] > 2 * share  # the rare class drawn about a third of the time


def test_the_logit_shift_raises_rare_classes_by_the_log_of_their_share():
    labels = np.array([0] * 40 + [1] * 10 + [2] * 20)
    shift = logit_shift(labels, 4, 0.5)
    assert shift.mean() == pytest.approx(0, abs=1e-12)  # centred: softmax ignores a common offset
    # class 1 has a quarter of class 0's images: its logit rises by 0.5 x log 4 more
    assert shift[1] - shift[0] == pytest.approx(0.5 * np.log(4))
    assert shift[2] - shift[0] == pytest.approx(0.5 * np.log(2))
    assert shift[3] == max(shift)  # absent from training: counted as one image
    assert np.allclose(logit_shift(labels, 4, 1.0), 2 * shift)
    assert logit_shift(labels, 4, 0.0) is None


def test_a_logit_adjusted_run_trains_the_same_and_exports_the_shifted_model(tmp_path: Path):
    from germinate import train
    from germinate.models.export import load_model

    train_dir = make_labelled(tmp_path / "train", per_class=12)
    for f in sorted((train_dir / "Red leaf").iterdir())[4:]:
        f.unlink()  # Red leaf: 4 images, the other classes 12
    base = dict(train_dir=str(train_dir), size=32, bs=8, quiet=True, seed=5, schedule="sgdr", cycles=2,
                cycle_len=1, cycle_mult=1, epochs=2, snapshot_ensemble=True)
    train(TrainConfig(**base), tmp_path / "plain")
    train(TrainConfig(**base, logit_adjust=1.0), tmp_path / "adjusted")
    plain, adjusted = tmp_path / "plain", tmp_path / "adjusted"
    # Training is untouched: the same losses and per-epoch figures (they are the unshifted model's)
    assert (plain / "metrics.csv").read_text() == (adjusted / "metrics.csv").read_text()
    nets, info = load_model(plain, snapshots=True)
    shifted, _ = load_model(adjusted, snapshots=True)
    assert len(nets) == len(shifted) == 2  # the model and its snapshot, both shifted
    split = read_rows(plain / "split.csv")
    labels = np.array([info.classes.index(r["class"]) for r in split if r["split"] == "train"])
    expected = torch.as_tensor(logit_shift(labels, len(info.classes), 1.0), dtype=torch.float32)
    assert expected[info.classes.index("Red leaf")] == max(expected)
    x = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    for a, b in zip(nets, shifted):
        with torch.no_grad():
            assert torch.allclose(b(x) - a(x), expected.expand(5, -1), atol=1e-4)
    # and the final evaluation is the shifted model's
    assert read_rows(adjusted / "valid_probs.csv") != read_rows(plain / "valid_probs.csv")
