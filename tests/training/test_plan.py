"""The plan a config asks for, the LR convention, and warm-up that never warms a restart."""

import json

import pytest

from germinate.config import TrainConfig
from germinate.training.plan import Stage, describe, fit_cycles, lr_for_suggestion, plan_stages, stage_lrs
from germinate.training.schedule import sgdr_cycle_lengths


def recipe(**kw) -> TrainConfig:
    """The course recipe (head stage, SGDR, range tests), which these tests of its plan assume."""
    return TrainConfig.from_preset("recipe", **kw)


def test_the_default_plan_is_one_cosine_over_the_whole_network_at_one_lr():
    cfg = TrainConfig()
    (unfrozen,) = plan_stages(cfg)
    assert (unfrozen.name, unfrozen.frozen_groups, unfrozen.schedule, unfrozen.n_epochs(), unfrozen.lrs) == (
        "unfrozen", 0, "cosine", 12, (1e-3,) * 3)
    assert cfg.fixed_blocks == 3  # the stem and the first 3 blocks stay as pretrained: 1.3x faster epochs
    assert TrainConfig.from_preset("recipe").fixed_blocks == 0 and TrainConfig.from_preset("best").fixed_blocks == 3


def test_a_stage_validates_every_nth_epoch_and_its_last():
    stage = Stage("unfrozen", 0, epochs=7)
    assert [e + 1 for e in range(7) if stage.validates(e, 3)] == [3, 6, 7]
    assert [e + 1 for e in range(7) if stage.validates(e, 1)] == list(range(1, 8))
    sgdr = Stage("unfrozen", 0, schedule="sgdr", cycles=2, cycle_len=1, cycle_mult=2)  # 1 + 2 epochs
    assert [e + 1 for e in range(3) if sgdr.validates(e, 2)] == [2, 3]


def test_the_default_warms_up_over_a_tenth_of_its_cosine_and_recipe_and_best_do_not():
    (unfrozen,) = plan_stages(TrainConfig())
    sched = unfrozen.make_schedule(100)  # 1,200 steps: a linear climb over the first 120, the cosine throughout
    mults = [sched.lr_mult(step) for step in range(1200)]
    assert mults[0] == pytest.approx(1 / 121) and mults[59] == pytest.approx(60 / 121, rel=0.01)
    assert all(a < b for a, b in zip(mults[:120], mults[1:121]))  # climbing to the 121st step
    assert mults[120] > 0.95 and all(a >= b for a, b in zip(mults[120:], mults[121:])) and mults[-1] < 1e-4
    for preset in ("recipe", "best"):  # measured without one
        assert all(s.make_schedule(100).lr_mult(0) == pytest.approx(1.0) for s in plan_stages(TrainConfig.from_preset(preset)))


def test_the_recipe_preset_is_the_course_recipe():
    head, unfrozen = plan_stages(TrainConfig.from_preset("recipe"))
    assert (head.name, head.frozen_groups, head.n_epochs(), head.cycles, head.precompute, head.lrs) == ("head", 2, 4, 4, True, None)
    assert (unfrozen.frozen_groups, unfrozen.n_epochs(), unfrozen.cycles, unfrozen.cycle_len, unfrozen.cycle_mult,
            unfrozen.lrs) == (0, 7, 3, 1, 2, None)  # None: the range test's LRs, then lr/9, lr/3, lr


def test_the_best_preset_plans_the_default_loop_twice_as_long_in_two_sizes():
    best = plan_stages(TrainConfig.from_preset("best"))
    assert [(s.name, s.frozen_groups, s.schedule, s.n_epochs(), s.size, s.lrs) for s in best] == [
        ("unfrozen-128", 0, "cosine", 12, 128, (1e-3,) * 3), ("unfrozen-192", 0, "cosine", 12, 192, (1e-3,) * 3)]


def test_a_given_lr_is_the_heads_peak_and_earlier_groups_learn_slower():
    head, unfrozen = plan_stages(recipe(lr=9e-3, lr_ratio=3))
    assert head.lrs == (9e-3,) * 3
    assert unfrozen.lrs == pytest.approx((1e-3, 3e-3, 9e-3))
    assert plan_stages(recipe(lrs=[1e-5, 2e-5, 3e-5]))[1].lrs == (1e-5, 2e-5, 3e-5)


def test_stages_of_zero_epochs_are_left_out():
    assert [s.name for s in plan_stages(recipe(freeze_epochs=0))] == ["unfrozen"]
    assert [s.name for s in plan_stages(recipe(cycles=0))] == ["head"]
    assert [s.name for s in plan_stages(recipe(epochs=0))] == ["head"]


@pytest.mark.parametrize("epochs,cycles,lengths", [
    (15, 4, [1, 2, 4, 8]), (3, 2, [1, 2]), (1, 1, [1]), (30, 4, [2, 4, 8, 16]), (10, 3, [10 / 7, 20 / 7, 40 / 7]),
])
def test_epochs_are_filled_with_sgdr_cycles(epochs, cycles, lengths):
    stage = plan_stages(recipe(epochs=epochs, cycles=4))[1]
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


# ---- progressive resizing --------------------------------------------------------------------------
from germinate.errors import GerminateError  # noqa: E402
from germinate.training.plan import split_cycles  # noqa: E402


@pytest.mark.parametrize("cycles,length,mult,parts", [(4, 1, 2, 3), (4, 1, 2, 2), (3, 10 / 7, 2, 2), (5, 1, 1, 5),
                                                      (4, 2, 2, 4), (3, 1.5, 3, 2)])
def test_split_cycles_keeps_every_cycle_and_the_total_in_whole_epochs(cycles, length, mult, parts):
    split = split_cycles(cycles, length, mult, parts)
    assert len(split) == parts and sum(n for n, _ in split) == cycles
    assert [n for n, _ in split[1:]] == [1] * (parts - 1)  # the later sizes get one cycle each
    epochs = [sum(sgdr_cycle_lengths(n, first, mult)) for n, first in split]
    assert all(e == pytest.approx(round(e)) and round(e) >= 1 for e in epochs)
    assert sum(epochs) == pytest.approx(round(sum(sgdr_cycle_lengths(cycles, length, mult))))


def test_sizes_give_one_unfrozen_stage_per_size_the_head_at_the_first():
    head, *stages = plan_stages(recipe(sizes=[96, 128, 160], cycles=4))
    assert head.size == 96 and head.head_only
    assert [(s.name, s.size, s.n_epochs(), s.cycles, s.lrs) for s in stages] == [
        ("unfrozen-96", 96, 3, 2, None), ("unfrozen-128", 128, 4, 1, None), ("unfrozen-160", 160, 8, 1, None)]
    cfg = recipe(sizes=[96, 128, 160], cycles=4, size=64)
    assert (cfg.final_size, cfg.eval_size, cfg.cache_px) == (160, 200, 200)  # --size is replaced
    # other schedules: the epochs shared out, later sizes getting the spare ones
    stages = plan_stages(recipe(sizes=[64, 96], schedule="cosine", epochs=5))[1:]
    assert [(s.size, s.n_epochs(), s.schedule) for s in stages] == [(64, 2, "cosine"), (96, 3, "cosine")]
    # a given LR applies to every size's stage
    for stage in plan_stages(recipe(sizes=[64, 96], lr=9e-3))[1:]:
        assert stage.lrs == pytest.approx((1e-3, 3e-3, 9e-3))


def test_size_epochs_and_resize_lr_shape_each_sizes_stage():
    cfg = TrainConfig.from_preset("best", sizes=[128, 160, 224], size_epochs=[6, 3, 2], resize_lr=0.3, lr_ratio=2)
    stages = plan_stages(cfg.validate())
    assert [(s.size, s.n_epochs(), s.schedule) for s in stages] == [(128, 6, "cosine"), (160, 3, "cosine"),
                                                                     (224, 2, "cosine")]
    # each later size peaks at 0.3x the one before, every group alike (the differential ratio kept)
    for i, stage in enumerate(stages):
        assert stage.lrs == pytest.approx(tuple(x * 0.3 ** i for x in (2.5e-4, 5e-4, 1e-3)))
    assert cfg.epochs == cfg.unfrozen_epochs() == 11  # --size-epochs instead of the preset's --epochs (best's 24)
    assert "--epochs 11 --size-epochs 6,3,2" in cfg.command("r")  # which the recorded command repeats
    # --lrs are scaled alike
    stages = plan_stages(TrainConfig(sizes=[64, 96], lrs=[1e-4, 2e-4, 4e-4], resize_lr=0.5).validate())
    assert [s.lrs for s in stages] == [pytest.approx((1e-4, 2e-4, 4e-4)), pytest.approx((5e-5, 1e-4, 2e-4))]


@pytest.mark.parametrize("kw,message", [
    ({"size_epochs": [4, 4]}, "--size-epochs takes one epoch count per size"),
    ({"sizes": [64, 96], "size_epochs": [4]}, "--size-epochs takes one epoch count per size"),
    ({"sizes": [64, 96], "size_epochs": [1, 2], "schedule": "sgdr"}, "not with --schedule sgdr"),
    ({"sizes": [64, 96], "resize_lr": 0.5, "lr": "auto"}, "--resize-lr 0.5 needs --sizes and a fixed --lr"),
    ({"resize_lr": 0.5}, "--resize-lr 0.5 needs --sizes"),
    ({"sizes": [64, 96], "size_epochs": [2, 2], "epochs": 5}, "--epochs 5 and --size-epochs 2,2 disagree"),
])
def test_size_epochs_and_resize_lr_are_refused_where_they_cannot_apply(kw, message):
    with pytest.raises(GerminateError, match=message):
        TrainConfig(**kw).validate()


@pytest.mark.parametrize("sizes,kw", [([128], {}), ([160, 128], {}), ([64, 96, 128], {"cycles": 2}),
                                      ([64, 96, 128, 160], {"epochs": 3}), ([64, 96], {"schedule": "cosine", "epochs": 1})])
def test_impossible_sizes_are_refused_in_one_line(sizes, kw):
    with pytest.raises(GerminateError, match="--sizes takes two or more increasing sizes"):
        recipe(sizes=sizes, **kw).validate()


def test_a_cut_stage_keeps_its_plan_and_round_trips_through_json():
    stage = plan_stages(TrainConfig(epochs=20, lr=1e-3))[-1]
    cut = stage.cut_to(8, 15).cut_to(10, 13)
    assert (cut.epochs, cut.n_epochs(), cut.cuts) == (20, 13, ((8, 15), (10, 13)))
    sched = cut.make_schedule(7)
    assert sched.total_steps == 13 * 7 and sched.warmup_steps == stage.make_schedule(7).warmup_steps  # the plan's warm-up
    assert Stage.from_dict(json.loads(json.dumps(cut.to_dict()))) == cut
    assert "13 epoch(s) (planned 20, cut to 15 after epoch 8, cut to 13 after epoch 10)" in describe(cut)
    back = cut.cut_to(11, 20)  # the pace recovered: the epochs the cuts took given back
    assert back.n_epochs() == 20 and back.make_schedule(7).total_steps == 20 * 7
    assert "20 epoch(s) (planned 20, cut to 15 after epoch 8, cut to 13 after epoch 10, lengthened to 20 after " \
           "epoch 11)" in describe(back)


from germinate.training.plan import HEAD_ONLY, sam_epochs, takes_sam  # noqa: E402


def _sams(plan: list[Stage], share: float) -> list[list[bool]]:
    return [[takes_sam(plan, i, e, share) for e in range(s.n_epochs())] for i, s in enumerate(plan)]


def test_sam_last_takes_the_last_share_of_the_unfrozen_epochs_rounded_up():
    plan = plan_stages(TrainConfig(train_dir="x", epochs=15))
    assert sam_epochs(plan, 0.3) == 5 and sam_epochs(plan, 0.01) == 1 and sam_epochs(plan, 0.99) == 15
    assert _sams(plan, 0.3) == [[False] * 10 + [True] * 5]
    assert sam_epochs(plan_stages(TrainConfig(train_dir="x", epochs=10)), 0.3) == 3  # not 4 by float rounding
    assert _sams(plan, 1.0) == [[True] * 15]


def test_sam_last_counts_over_the_sizes_stages_and_skips_the_head():
    plan = plan_stages(TrainConfig(train_dir="x", sizes=[128, 192], epochs=24, freeze_epochs=2))
    assert [(s.head_only, s.n_epochs()) for s in plan] == [(True, 2), (False, 12), (False, 12)]
    # 0.6 of 24 is 14.4: 15 epochs, the last 3 at 128 px and all 12 at 192; the head plain
    assert _sams(plan, 0.6) == [[False] * 2, [False] * 9 + [True] * 3, [True] * 12]
    assert _sams(plan, 1.0)[0] == [True] * 2  # every epoch, as --sam always was
    # a time budget's cut of the last stage moves the start with it
    cut = [*plan[:2], plan[2].cut_to(4, 8)]
    assert _sams(cut, 0.25) == [[False] * 2, [False] * 12, [False] * 3 + [True] * 5]
    assert plan[0].frozen_groups == HEAD_ONLY
