"""Schedules pinned at exact steps."""

import math

import pytest

from germinate.training.schedule import (
    Schedule,
    differential_lrs,
    group_lrs,
    sgdr_epochs,
)

SPE = 10  # steps per epoch


def cos_mult(pos: float) -> float:
    return (1 + math.cos(math.pi * pos)) / 2


def test_sgdr_length():
    assert sgdr_epochs(3, 1, 2) == 7
    assert sgdr_epochs(3, 1, 1) == 3
    assert sgdr_epochs(2, 2, 3) == 8
    assert Schedule("sgdr", SPE, 0, cycles=3, cycle_len=1, cycle_mult=2).total_steps == 70


@pytest.mark.parametrize("mult,bounds", [(1, [(0, 10), (10, 20), (20, 30)]), (2, [(0, 10), (10, 30), (30, 70)])])
def test_sgdr_restarts_land_exactly_on_cycle_boundaries(mult, bounds):
    s = Schedule("sgdr", SPE, 0, cycles=3, cycle_len=1, cycle_mult=mult)
    assert s.cycle_bounds() == bounds
    for start, end in bounds:
        length = end - start
        assert s.lr_mult(start) == 1.0  # each cycle starts at the peak
        assert s.lr_mult(start + length // 2) == pytest.approx(cos_mult(0.5))  # middle: half the peak
        assert s.lr_mult(end - 1) == pytest.approx(cos_mult((length - 1) / length))  # end: near zero
        if end < bounds[-1][1]:
            assert s.lr_mult(end) == 1.0 and s.lr_mult(end - 1) < 0.03


def test_each_group_follows_the_same_shape_at_its_own_peak():
    s = Schedule("sgdr", SPE, 0, cycles=2, cycle_len=1, cycle_mult=2)
    peaks = differential_lrs(1e-2, 3)
    assert peaks == pytest.approx([1e-2 / 9, 1e-2 / 3, 1e-2])
    for step in (0, 5, 9, 10, 20, 29):
        lrs = group_lrs(peaks, s, step)
        assert lrs == pytest.approx([p * s.lr_mult(step) for p in peaks])
        assert lrs[2] / lrs[0] == pytest.approx(9)
    assert group_lrs(peaks, s, 20) == pytest.approx([p * 0.5 for p in peaks])  # middle of cycle 2 (10..30)


def test_cosine_one_curve_over_the_stage():
    s = Schedule("cosine", SPE, 4)
    assert s.total_steps == 40 and s.cycle_bounds() == [(0, 40)]
    assert s.lr_mult(0) == 1.0
    assert s.lr_mult(20) == pytest.approx(0.5)
    assert s.lr_mult(39) == pytest.approx(cos_mult(39 / 40))
    assert s.momentum(10) is None


def test_onecycle_warms_up_then_anneals_with_inverse_momentum():
    s = Schedule("onecycle", SPE, 4, pct_start=0.25)
    assert s.lr_mult(0) == pytest.approx(1 / 25)
    assert s.lr_mult(10) == pytest.approx(1.0)
    assert s.lr_mult(39) < 0.01
    assert s.momentum(0) == pytest.approx(0.95)
    assert s.momentum(10) == pytest.approx(0.85)
    assert s.momentum(39) > 0.94
    mults = [s.lr_mult(i) for i in range(40)]
    assert mults.index(max(mults)) == 10


def test_warmup_only_at_the_start_of_the_stage():
    s = Schedule("sgdr", SPE, 0, cycles=2, cycle_len=1, cycle_mult=1, warmup_steps=4)
    assert s.lr_mult(0) == pytest.approx(1 / 5)
    assert s.lr_mult(3) == pytest.approx(4 / 5 * cos_mult(0.3))
    assert s.lr_mult(10) == 1.0  # the restart is not warmed up


def test_invalid_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: cosine, sgdr, onecycle, flat"):
        Schedule("linear", SPE, 1)
