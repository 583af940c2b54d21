"""Suggestion rules on synthetic curves with known answers."""

import numpy as np
import pytest

from germinate.errors import GerminateError
from germinate.training.lr_find import (
    LRFindError,
    LRFindResult,
    exp_lrs,
    run_range_test,
    suggest,
    usable_curve,
)

LRS = exp_lrs(1e-7, 10, 100)


def curve(min_lr: float = 1e-2, width: float = 1.5, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """High and flat at small LRs, a smooth valley down to a minimum at `min_lr`, then a blow-up."""
    x = np.log10(LRS)
    m = np.log10(min_lr)
    loss = 2.5 - 2.0 / (1 + np.exp(-(x - (m - width)) * 3))  # falls on the way to the minimum
    loss = np.where(x > m, loss[np.argmin(np.abs(x - m))] + 3 * (x - m) ** 2, loss)  # rises after it
    return loss + np.random.default_rng(seed).normal(0, noise, len(x))


def test_minimum_is_a_tenth_of_the_lowest_point():
    lr = suggest(LRS, curve(1e-2), "minimum")
    assert 0.5e-3 < lr < 2e-3


def test_valley_lies_a_little_below_the_minimum():
    lr = suggest(LRS, curve(1e-2), "valley")
    assert 1e-4 < lr < 5e-3


def test_steepest_is_where_the_loss_falls_fastest():
    lr = suggest(LRS, curve(1e-2, width=1.5), "steepest")
    # The fall is centred 1.5 decades below the minimum; smoothing delays it a little.
    assert 10 ** -3.9 < lr < 10 ** -2.8


def test_rules_follow_the_minimum():
    for rule in ("valley", "minimum", "steepest"):
        low, high = suggest(LRS, curve(1e-3), rule), suggest(LRS, curve(1e-1), rule)
        assert high / low > 30, rule


def test_noise_barely_moves_the_suggestion():
    clean = suggest(LRS, curve(1e-2), "valley")
    for seed in range(5):
        noisy = suggest(LRS, curve(1e-2, noise=0.15, seed=seed), "valley")
        assert 1 / 4 < noisy / clean < 4


def test_nan_tail_is_cut_not_fatal():
    losses = curve(1e-2)
    losses[85:] = np.nan
    lr = suggest(LRS, losses, "valley")
    assert np.isfinite(lr) and 1e-4 < lr < 5e-3
    losses[87] = np.inf
    assert suggest(LRS, losses, "minimum") > 0


def test_early_spike_is_ignored():
    losses = curve(1e-2)
    losses[:5] = 50.0  # the first tenth is trimmed, and the valley is read after its maximum
    assert 1e-4 < suggest(LRS, losses, "valley") < 5e-3


def test_short_flat_and_all_nan_curves_give_clear_errors():
    with pytest.raises(LRFindError, match="only 3 usable point"):
        suggest(LRS[:3], curve()[:3])
    with pytest.raises(LRFindError, match="flat"):
        suggest(LRS, np.full(100, 2.0))
    with pytest.raises(LRFindError, match="usable point"):
        suggest(LRS, np.full(100, np.nan))
    with pytest.raises(GerminateError, match="valid: valley, minimum, steepest"):
        suggest(LRS, curve(), "best")


def test_result_keeps_the_curve_when_no_suggestion(tmp_path):
    r = LRFindResult.from_curve(LRS, np.full(100, 2.0))
    assert r.suggestion is None and "flat" in r.error
    r.to_csv(tmp_path / "f.csv")
    r.plot(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_range_test_stops_on_divergence_and_nan():
    losses = run_range_test(lambda lr: 1.0 if lr < 1e-2 else 100.0, LRS, stop_div=4)
    assert len(losses) < 100 and losses[-1] == 100.0
    losses = run_range_test(lambda lr: float("nan") if lr > 1e-3 else 1.0, LRS)
    assert np.isnan(losses[-1]) and len(losses) < 100


def test_usable_curve_trims_the_start_and_ends_where_the_loss_diverges():
    lrs, sm = usable_curve(LRS, curve(1e-2))
    assert lrs[0] >= LRS[10]  # the first tenth is gone
    assert 1e-2 < lrs[-1] < 1e-1  # cut where the loss passed 4x its minimum, shortly after it
    assert lrs[0] >= lrs[-1] / 1e3 * 0.99  # and only the last three decades are read


def test_a_dip_far_below_the_divergence_is_ignored():
    losses = curve(1e-2)
    losses[15:20] = 0.1  # a deep but spurious dip at ~5e-7, six decades below the real valley
    assert 1e-4 < suggest(LRS, losses, "valley") < 5e-3
    assert 0.5e-3 < suggest(LRS, losses, "minimum") < 3e-3


def test_valley_lands_on_the_known_answer_of_a_piecewise_curve():
    # Flat at 3 up to 1e-4, straight down (in log LR) to 1 at 1e-2, then a parabola up. The valley
    # starts where the loss was last 2/3 of the way up from the minimum (3 - 2/3 * 2 = 1.667 above
    # it: at 10^-3.667) and ends at the minimum (1e-2): its log-middle is 10^-2.833 = 1.47e-3.
    x = np.log10(LRS)
    loss = np.where(x < -4, 3.0, np.where(x < -2, 3.0 - (x + 4), 1.0 + 8 * (x + 2) ** 2))
    # Within the smoothing window (9 of 100 points: +-0.36 decades), which moves a lopsided minimum.
    assert abs(np.log10(suggest(LRS, loss, "valley")) - -2.833) < 0.2
    assert abs(np.log10(suggest(LRS, loss, "minimum")) - -3.0) < 0.2
