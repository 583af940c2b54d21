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


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_a_cut_squeezes_the_rest_of_the_shape_into_the_steps_left(kind: str):
    planned = Schedule(kind, SPE, 20, warmup_steps=30)
    cut = Schedule(kind, SPE, 20, warmup_steps=30, cuts=((100, 150),))
    assert cut.total_steps == 150 and cut.planned_steps == 200 and cut.cycle_bounds() == [(0, 150)]
    assert [cut.lr_mult(i) for i in range(101)] == [planned.lr_mult(i) for i in range(101)]  # taken as planned
    assert cut.lr_mult(149) == pytest.approx(planned.lr_mult(199))  # and it still ends where the plan ends
    # halfway through what is left, halfway through what was left
    assert cut.lr_mult(100 + 49 / 2) == pytest.approx(planned.lr_mult(100 + 99 / 2))
    if kind == "onecycle":
        assert cut.momentum(149) == pytest.approx(planned.momentum(199))
    # a second cut squeezes what the first left: no jump where it is made, the same end
    twice = Schedule(kind, SPE, 20, warmup_steps=30, cuts=((100, 150), (120, 140)))
    assert [twice.lr_mult(i) for i in range(121)] == [cut.lr_mult(i) for i in range(121)]
    assert twice.lr_mult(139) == pytest.approx(planned.lr_mult(199)) and twice.total_steps == 140
    # no jump at the cut: its first step moves the LR no more than the next (squeezed) one does
    m = [twice.lr_mult(i) for i in (120, 121, 122)]
    assert abs(m[1] - m[0]) <= 1.2 * abs(m[2] - m[1])


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_a_lengthened_stage_stretches_the_rest_of_the_shape_over_the_steps_added(kind: str):
    planned = Schedule(kind, SPE, 20, warmup_steps=30)
    longer = Schedule(kind, SPE, 20, warmup_steps=30, cuts=((100, 260),))
    assert longer.total_steps == 260 and longer.cycle_bounds() == [(0, 260)]
    assert [longer.lr_mult(i) for i in range(101)] == [planned.lr_mult(i) for i in range(101)]
    assert longer.lr_mult(259) == pytest.approx(planned.lr_mult(199))  # the same end, later
    assert longer.lr_mult(100 + 159 / 2) == pytest.approx(planned.lr_mult(100 + 99 / 2))
    # a cut that a later lengthening partly gives back: the LR goes on from where it was
    back = Schedule(kind, SPE, 20, warmup_steps=30, cuts=((100, 150), (120, 180)))
    assert [back.lr_mult(i) for i in range(121)] == [Schedule(kind, SPE, 20, warmup_steps=30, cuts=((100, 150),))
                                                     .lr_mult(i) for i in range(121)]
    assert back.lr_mult(179) == pytest.approx(planned.lr_mult(199)) and back.total_steps == 180
    m = [back.lr_mult(i) for i in (120, 121, 122)]
    assert abs(m[1] - m[0]) <= 1.2 * abs(m[2] - m[1])
    mults = [back.lr_mult(i) for i in range(180)]
    if kind == "cosine":  # after the warm-up, still one cosine down: never up again
        assert all(a >= b for a, b in zip(mults[31:], mults[32:]))


@pytest.mark.parametrize("kind, cuts", [("sgdr", ((10, 15),)), ("cosine", ((10, 10),)), ("cosine", ((10, 200),)),
                                        ("cosine", ((200, 300),)), ("cosine", ((10, 150), (160, 170))),
                                        ("cosine", ((10, 150), (9, 140))), ("cosine", ((10, 150), (20, 150)))])
def test_cuts_that_would_not_change_one_cycle_before_its_end_are_refused(kind: str, cuts):
    with pytest.raises(ValueError, match="cannot cut"):
        Schedule(kind, SPE, 20, cycles=2, cuts=cuts)
