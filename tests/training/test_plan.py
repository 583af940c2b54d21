"""The plan a config asks for, the LR convention, and warm-up that never warms a restart."""

import pytest

from germinate.config import TrainConfig
from germinate.training.plan import Stage, fit_cycles, lr_for_suggestion, plan_stages, stage_lrs
from germinate.training.schedule import sgdr_cycle_lengths


def test_default_plan_is_the_course_recipe():
    head, unfrozen = plan_stages(TrainConfig())
    assert (head.name, head.frozen_groups, head.n_epochs(), head.cycles, head.precompute, head.lrs) == ("head", 2, 2, 2, True, None)
    assert (unfrozen.frozen_groups, unfrozen.n_epochs(), unfrozen.cycles, unfrozen.cycle_len, unfrozen.cycle_mult) == (0, 15, 4, 1, 2)


def test_a_given_lr_is_the_heads_peak_and_earlier_groups_learn_slower():
    head, unfrozen = plan_stages(TrainConfig(lr=9e-3, lr_ratio=3))
    assert head.lrs == (9e-3,) * 3
    assert unfrozen.lrs == pytest.approx((1e-3, 3e-3, 9e-3))
    assert plan_stages(TrainConfig(lrs=[1e-5, 2e-5, 3e-5]))[1].lrs == (1e-5, 2e-5, 3e-5)


def test_stages_of_zero_epochs_are_left_out():
    assert [s.name for s in plan_stages(TrainConfig(freeze_epochs=0))] == ["unfrozen"]
    assert [s.name for s in plan_stages(TrainConfig(cycles=0))] == ["head"]
    assert [s.name for s in plan_stages(TrainConfig(epochs=0))] == ["head"]


@pytest.mark.parametrize("epochs,cycles,lengths", [
    (15, 4, [1, 2, 4, 8]), (3, 2, [1, 2]), (1, 1, [1]), (30, 4, [2, 4, 8, 16]), (10, 3, [10 / 7, 20 / 7, 40 / 7]),
])
def test_epochs_are_filled_with_sgdr_cycles(epochs, cycles, lengths):
    stage = plan_stages(TrainConfig(epochs=epochs))[1]
    assert stage.n_epochs() == epochs and stage.cycles == cycles
    assert sgdr_cycle_lengths(stage.cycles, stage.cycle_len, stage.cycle_mult) == pytest.approx(lengths)
    sched = stage.make_schedule(10)
    assert sched.total_steps == epochs * 10  # the last cycle ends on the stage's last step


def test_fit_cycles_respects_the_cycle_count_and_mult():
    assert fit_cycles(7, 1, 1, 4) == (4, 7 / 4)
    assert fit_cycles(2, 5, 2, 4) == (1, 2.0)


def test_the_range_test_suggestion_goes_to_the_earliest_training_group():
    for frozen in (0, 1, 2):
        lr = lr_for_suggestion(1e-4, frozen, 3.0)
        lrs = stage_lrs(lr, frozen, 3.0)
        assert lrs[min(frozen, 2)] == pytest.approx(1e-4)  # the first group that trains gets the suggestion
        assert lrs[2] == pytest.approx(lr)  # and "the LR" is the head's
    assert lr_for_suggestion(1e-4, 0, 3.0) == pytest.approx(9e-4)
    assert lr_for_suggestion(1e-4, 2, 3.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("pct", [0.1, 0.5, 0.99])
def test_warmup_never_warms_a_restart(pct):
    stage = Stage("s", 0, "sgdr", cycles=3, cycle_len=1, cycle_mult=2, warmup_pct=pct, lrs=(1.0, 1.0, 1.0))
    sched = stage.make_schedule(20)
    assert sched.lr_mult(0) < 1.0  # it does warm the start
    for start, _ in sched.cycle_bounds()[1:]:
        assert sched.lr_mult(start) == 1.0


def test_old_plans_with_a_frozen_flag_still_load():
    s = Stage.from_dict({"name": "head", "frozen": True, "schedule": "sgdr", "epochs": 2, "cycles": 2, "cycle_len": 1,
                         "cycle_mult": 1, "warmup_pct": 0.0, "lrs": [1e-3] * 3, "precompute": True})
    assert s.frozen_groups == 2 and s.head_only and s.lrs == (1e-3,) * 3
