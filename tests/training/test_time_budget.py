"""--time: the estimate of a run's time from measured speeds, the epochs that fit, the probe that
measures them and leaves no trace, a budgeted run that repeats as --epochs N, and the deadline
that cuts its last stage short when the machine slows and lengthens it when the epochs run quicker
than the probe said."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import html
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from germinate import TrainConfig, config, create_learner, train
from germinate.config import BEST_MINUTES, DEFAULT_MAX_EPOCHS, DEFAULT_MINUTES
from germinate.errors import GerminateError
from germinate.training.plan import Stage, plan_stages
from germinate.training.plan import takes_sam
from germinate.training.time_budget import (CUT_TARGET, FINISH_SECONDS, RANGE_TEST_PROBE,
                                            SAFETY, Deadline, Speeds, StageClock, deadline_for, epochs_for_budget,
                                            epochs_in_time, forward_s, min_epochs, run_seconds, stage_seconds,
                                            validation_sizes)
from germinate.ui import Reporter

SPEEDS = Speeds(step_s={128: 0.8, 192: 1.8}, image_s={160: 0.004, 240: 0.009}, save_s=0.3,
                steps_per_epoch=100, n_train=3200, n_valid=800)


def _estimate(cfg: TrainConfig, epochs: int, speeds: Speeds = SPEEDS, views: int = 8) -> float:
    return run_seconds(plan_stages(dataclasses.replace(cfg, epochs=epochs)), cfg, speeds, views)


def test_the_estimate_adds_steps_validations_saves_and_the_final_evaluation():
    cfg = TrainConfig(epochs=12)
    epoch = 100 * 0.8 + 800 * 0.004 + 0.3  # the steps, a validation at 160 px, a checkpoint
    final = 8 * 800 * 0.004 + FINISH_SECONDS  # 8 TTA views at 160 px
    assert run_seconds(plan_stages(cfg), cfg, SPEEDS, 8) == pytest.approx(12 * epoch + final)
    # validating every 3rd epoch (and the last) leaves 8 of the 12 validations out
    sparse = dataclasses.replace(cfg, valid_every=3)
    assert run_seconds(plan_stages(sparse), sparse, SPEEDS, 8) == pytest.approx(12 * epoch + final - 8 * 800 * 0.004)


def test_a_range_test_and_a_precomputed_head_stage_are_counted():
    cfg = TrainConfig.from_preset("recipe", epochs=7)  # head stage (precomputed), range tests, SGDR
    plan = plan_stages(cfg)
    assert [s.head_only for s in plan] == [True, False] and all(s.lrs is None for s in plan)
    without = run_seconds(plan_stages(dataclasses.replace(cfg, lr=1e-3)), cfg, SPEEDS, 8)
    range_test = 100 * (0.8 + RANGE_TEST_PROBE * 0.004 * (128 / 160) ** 2)  # --lr-find-steps 100, the default
    assert run_seconds(plan, cfg, SPEEDS, 8) == pytest.approx(without + range_test)
    shorter = dataclasses.replace(cfg, lr_find_steps=25)  # a quarter of the steps, a quarter of the time
    assert run_seconds(plan, shorter, SPEEDS, 8) == pytest.approx(without + range_test / 4)


def test_forward_time_scales_with_pixels_between_measured_sizes():
    assert forward_s(SPEEDS, 160) == 0.004
    assert forward_s(SPEEDS, 320) == pytest.approx(0.009 * (320 / 240) ** 2)
    assert forward_s(SPEEDS, 80) == pytest.approx(0.004 / 4)


def test_validation_sizes_follow_the_training_sizes():
    assert validation_sizes(TrainConfig()) == [160]
    assert validation_sizes(TrainConfig.from_preset("best")) == [160, 240]


@pytest.mark.parametrize("preset", ["fast", "best", "recipe"])
@pytest.mark.parametrize("minutes", [8, 15, 60])
def test_the_most_epochs_that_fit_are_chosen(preset: str, minutes: float):
    cfg = TrainConfig.from_preset(preset, time_budget=minutes)
    epochs, estimate = epochs_for_budget(cfg, SPEEDS, minutes * 60, 8)
    assert epochs >= min_epochs(cfg) and estimate == pytest.approx(_estimate(cfg, epochs))
    assert estimate <= minutes * 60 < _estimate(cfg, epochs + 1)


def test_a_machine_twice_as_fast_trains_about_twice_as_long():
    cfg = TrainConfig()
    slow, _ = epochs_for_budget(cfg, SPEEDS, 15 * 60, 8)
    fast = dataclasses.replace(SPEEDS, step_s={k: v / 2 for k, v in SPEEDS.step_s.items()},
                               image_s={k: v / 2 for k, v in SPEEDS.image_s.items()}, save_s=0.15)
    quick, _ = epochs_for_budget(cfg, fast, 15 * 60, 8)
    assert slow == 10 and quick == 21  # (900 - 35.6) / 83.5 and (900 - 22.8) / 41.75, rounded down


def test_too_short_a_budget_fits_nothing_and_says_how_long_the_least_would_take():
    cfg = TrainConfig.from_preset("best")  # two sizes: at least two epochs
    assert min_epochs(cfg) == 2
    epochs, estimate = epochs_for_budget(cfg, SPEEDS, 60, 8)
    assert epochs == 0 and estimate == pytest.approx(_estimate(cfg, 2))
    sgdr = TrainConfig.from_preset("recipe", sizes=[128, 160])  # one SGDR cycle per size: 1 + 2 epochs
    assert min_epochs(sgdr) == 3


def test_a_given_epochs_caps_what_the_budget_chooses_and_a_presets_does_not():
    capped = TrainConfig.from_preset("fast", time_budget=60, epochs=20)
    assert capped.epochs == 20 and epochs_for_budget(capped, SPEEDS, 60 * 60, 8)[0] == 20
    assert epochs_for_budget(dataclasses.replace(capped, epochs=None), SPEEDS, 60 * 60, 8)[0] > 40
    best = TrainConfig.from_preset("best", time_budget=60)  # best's own 24 epochs yield to the budget
    assert best.epochs is None and epochs_for_budget(best, SPEEDS, 60 * 60, 8)[0] > 24
    assert epochs_for_budget(capped, SPEEDS, 5 * 60, 8)[0] < 20  # a cap is not a floor


def test_the_default_plan_takes_its_own_budget_and_anything_that_fixes_the_epochs_turns_it_off():
    assert TrainConfig().length_budget() == (DEFAULT_MINUTES, DEFAULT_MAX_EPOCHS)
    assert TrainConfig.from_preset("fast", schedule="onecycle", sizes=[96, 128]).length_budget() == (14, 40)
    assert TrainConfig(time_budget=10).length_budget() == (10, None)  # --time alone: no cap
    assert TrainConfig(time_budget=10, epochs=20).length_budget() == (10, 20)
    fixed = [TrainConfig(epochs=12), TrainConfig(epochs=0), TrainConfig.from_preset("recipe"),  # SGDR: its cycles
             TrainConfig(folds=5), TrainConfig(folds=5, fold=2), TrainConfig(sizes=[96, 128], size_epochs=[6, 6])]
    assert [cfg.length_budget() for cfg in fixed] == [None] * len(fixed)
    assert TrainConfig().unfrozen_epochs() == 12  # the plan before the budget chooses (--sizes is checked on it)


def test_best_keeps_to_its_own_budget_until_a_length_is_given_by_hand():
    best = TrainConfig.from_preset("best")
    assert best.length_budget() == (BEST_MINUTES, 24) and best.own_budget()  # its 24 epochs, at most
    # at these speeds (about this 2-core machine's with SAM) all 24 fit; with steps three times as long, fewer
    assert epochs_for_budget(best, SPEEDS, BEST_MINUTES * 60, 8)[0] == 24
    slow = dataclasses.replace(SPEEDS, step_s={px: 3 * s for px, s in SPEEDS.step_s.items()})
    full = run_seconds(plan_stages(best), best, slow, 8)
    assert full > BEST_MINUTES * 60 and 2 <= epochs_for_budget(best, slow, BEST_MINUTES * 60, 8)[0] < 24
    # a length given by hand, or K folds in one go (which a budget cannot share), replace the preset's budget
    for given in ({"epochs": 24}, {"epochs": 30}, {"sizes": [128, 192], "size_epochs": [16, 8]}, {"folds": 5}):
        cfg = TrainConfig.from_preset("best", **given).validate()
        assert cfg.time_budget is None and cfg.length_budget() is None, given
    one_fold = TrainConfig.from_preset("best", folds=5, fold=2)
    assert one_fold.validate().length_budget() == (BEST_MINUTES, 24)  # one fold's run keeps it
    given = TrainConfig.from_preset("best", time_budget=30)  # --time: the user's, and the epochs are free
    assert given.length_budget() == (30, None) and not given.own_budget()
    assert not TrainConfig.from_preset("best", time_budget=30, epochs=24).own_budget()


def test_time_is_refused_with_what_it_cannot_fit():
    with pytest.raises(GerminateError, match="--epochs 0"):
        TrainConfig.from_preset("fast", time_budget=5, epochs=0).validate()
    with pytest.raises(GerminateError, match="--size-epochs"):
        TrainConfig.from_preset("fast", time_budget=5, sizes=[128, 160], size_epochs=[6, 6]).validate()
    with pytest.raises(GerminateError, match="--folds"):
        TrainConfig.from_preset("fast", time_budget=5, folds=3).validate()
    TrainConfig.from_preset("best", time_budget=50, folds=3, fold=2).validate()  # one fold's run: its own budget
    with pytest.raises(GerminateError, match="--time must be"):
        TrainConfig(time_budget=0).validate()


def test_the_speed_probe_leaves_no_trace(labelled: Path):
    cfg = TrainConfig(train_dir=str(labelled), sizes=[32, 48], test_size=56, bs=8, quiet=True, seed=5)
    learn = create_learner(cfg)
    learn.fit(1, 1e-3)  # so that the optimizer has state to disturb
    learn.freeze()
    model = {k: v.clone() for k, v in learn.net.state_dict().items()}
    opt = learn.opt.state_dict()
    opt_state = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in opt["state"].items()}
    lrs, rng, size = [g["lr"] for g in learn.opt.param_groups], torch.get_rng_state().clone(), learn.aug.size
    speeds = learn.measure_speeds(steps=2, warmup=1)
    assert set(speeds.step_s) == {32, 48} and set(speeds.image_s) == {37, 56}
    assert all(s > 0 for s in [*speeds.step_s.values(), *speeds.image_s.values(), speeds.save_s])
    assert (speeds.steps_per_epoch, speeds.n_train, speeds.n_valid) == (3, len(learn.data.train), len(learn.data.valid))
    assert all(torch.equal(v, learn.net.state_dict()[k]) for k, v in model.items())
    after = learn.opt.state_dict()["state"]
    assert all(torch.equal(t, after[k][n]) for k, v in opt_state.items() for n, t in v.items())
    assert [g["lr"] for g in learn.opt.param_groups] == lrs and torch.equal(torch.get_rng_state(), rng)
    assert learn.aug.size == size and learn.is_frozen  # the freeze it found
    assert speeds.sam_step_s == {}  # one kind of step


@pytest.mark.parametrize("sam_last", [0.5, 1.0])
def test_the_probe_times_sam_steps_apart_only_when_epochs_of_both_kinds_follow(labelled: Path, sam_last: float,
                                                                             monkeypatch: pytest.MonkeyPatch):
    import germinate.training.learner as learner_module

    climbs = []
    real = learner_module.climb
    monkeypatch.setattr(learner_module, "climb", lambda params, rho: climbs.append(rho) or real(params, rho))
    learn = create_learner(TrainConfig(train_dir=str(labelled), size=32, bs=8, quiet=True, sam=0.05,
                                       sam_last=sam_last))
    speeds = learn.measure_speeds(steps=2, warmup=1)
    assert set(speeds.sam_step_s) == ({32} if sam_last < 1 else set())
    assert len(climbs) == 3  # SAM steps timed once: as every step (at 1), or apart from the plain ones


def test_a_budgeted_run_records_its_epochs_and_repeats_as_epochs_n(labelled: Path, tmp_path: Path):
    # capped at 4 epochs to keep the test short; 2 minutes hold them with room on any machine we know,
    # so the deadline never cuts them (a cut run would not repeat as --epochs N: half a minute was
    # once cut from 4 to 3 on a busy machine)
    cfg = TrainConfig(train_dir=str(labelled), size=32, bs=8, quiet=True, seed=5, time_budget=2, epochs=4)
    train(cfg, tmp_path / "budget")
    recorded = json.loads((tmp_path / "budget" / "config.json").read_text())
    budget, epochs = recorded["time_budget"], recorded["config"]["epochs"]
    assert budget["minutes"] == 2 and budget["epochs"] == epochs and 1 <= epochs <= 4 and "cuts" not in budget
    assert budget["estimated_minutes"] <= 2 and budget["speeds"]["step_s"]["32"] > 0
    assert recorded["config"]["time_budget"] is None
    assert "--time" not in recorded["command"] and f"--epochs {epochs}" in recorded["command"]
    train(dataclasses.replace(cfg, time_budget=None, epochs=epochs), tmp_path / "again")
    metrics = [(tmp_path / run / "metrics.csv").read_text() for run in ("budget", "again")]
    assert metrics[0] == metrics[1] and len(metrics[0].splitlines()) == epochs + 1


def test_the_default_run_is_budgeted_and_a_given_epochs_is_not(labelled: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(config, "DEFAULT_MAX_EPOCHS", 2)  # the default's cap, so that the test is short
    learn = train(TrainConfig(train_dir=str(labelled), size=32, bs=8, seed=5), tmp_path / "default")
    recorded = json.loads((tmp_path / "default" / "config.json").read_text())
    assert recorded["time_budget"]["minutes"] == DEFAULT_MINUTES and recorded["time_budget"]["given"] is False
    # 14 minutes hold 2 tiny epochs on any machine: the cap, recorded as --epochs (it repeats the run)
    assert learn.cfg.epochs == recorded["config"]["epochs"] == 2 and recorded["config"]["time_budget"] is None
    assert recorded["command"].endswith("--epochs 2 --seed 5") and "--time" not in recorded["command"]
    train(TrainConfig(train_dir=str(labelled), size=32, bs=8, seed=5, epochs=1), tmp_path / "fixed")
    assert "time_budget" not in json.loads((tmp_path / "fixed" / "config.json").read_text())


def test_best_runs_as_many_of_its_epochs_as_its_own_budget_holds(labelled: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(config.PRESETS["best"], "epochs", 2)  # best's cap, so that the test is short
    cfg = TrainConfig.from_preset("best", train_dir=str(labelled), sizes=[32, 48], bs=8, seed=5, quiet=True)
    learn = train(cfg, tmp_path / "best")
    recorded = json.loads((tmp_path / "best" / "config.json").read_text())
    budget = recorded["time_budget"]
    assert (budget["minutes"], budget["given"], budget["preset"]) == (BEST_MINUTES, False, "best")
    assert learn.cfg.epochs == recorded["config"]["epochs"] == 2 and recorded["config"]["sam"] == cfg.sam > 0
    assert "--preset best " in recorded["command"] and "--epochs 2 " in recorded["command"]
    assert f"--preset best's {BEST_MINUTES:g} minutes" in html.unescape((tmp_path / "best" / "report.html").read_text())
    # a budget too short for the preset's smallest plan says whose budget it is
    monkeypatch.setitem(config.PRESETS["best"], "time_budget", 0.001)
    with pytest.raises(GerminateError, match="--preset best's 0.001 minutes are too short here"):
        train(TrainConfig.from_preset("best", train_dir=str(labelled), sizes=[32, 48], bs=8, quiet=True),
              tmp_path / "short")
    assert not (tmp_path / "short").exists()


def test_too_short_a_budget_is_a_one_line_error_and_writes_nothing(labelled: Path, tmp_path: Path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "germinate", "train", str(labelled), "--out", str(out),
                           "--size", "32", "--time", "0.001"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--time 0.001 is too short here" in proc.stderr and not out.exists()


def test_the_deadline_cuts_only_when_the_pace_would_overrun():
    # 600 s budget, 10 s after the last epoch: 20 planned epochs of 25 s end at 100 + 16 * 25 + 10 = 510 s
    assert epochs_in_time(4, 20, 100, 25, 10, 600) is None
    assert epochs_in_time(4, 20, 100, 30, 10, 600) is None  # 590 s: slower, but still in time
    # at 35 s an epoch, 670 s: cut to the most epochs that end within 95% of the budget
    cut = epochs_in_time(4, 20, 100, 35, 10, 600)
    assert 100 + (cut - 4) * 35 + 10 <= CUT_TARGET * 600 < 100 + (cut - 3) * 35 + 10
    assert cut == 17
    assert epochs_in_time(4, 20, 550, 35, 10, 600) == 5  # past saving: one more epoch, to end the schedule
    assert epochs_in_time(19, 20, 590, 35, 10, 600) is None  # nothing left to cut


def test_the_deadline_lengthens_only_what_leaves_time_unused_and_only_up_to_the_cap():
    # 20 planned epochs of 25 s end at 120 + 16 * 25 + 10 = 530 s of 600 (as planned: within SAFETY)
    assert epochs_in_time(4, 20, 120, 25, 10, 600, most=40) is None
    # at 15 s an epoch they would end at 370 s: lengthened to the most that end within SAFETY
    longer = epochs_in_time(4, 20, 120, 15, 10, 600, most=40)
    assert 120 + (longer - 4) * 15 + 10 <= SAFETY * 600 < 120 + (longer - 3) * 15 + 10
    assert longer == 31
    assert epochs_in_time(4, 20, 120, 15, 10, 600, most=24) == 24  # no further than the cap
    assert epochs_in_time(4, 20, 120, 15, 10, 600) is None  # no cap given: never lengthened
    assert epochs_in_time(20, 20, 120, 15, 10, 600, most=40) is None  # the stage has ended
    # only in the stage's first half, while the stretched schedule still has most of its descent ahead
    assert epochs_in_time(10, 20, 270, 15, 10, 600, most=40) == 27
    assert epochs_in_time(11, 20, 285, 15, 10, 600, most=40) is None
    # between the plan's pace and the budget nothing moves: a steady pace never cuts and lengthens in turn
    for pace in (25.0, 27.0, 28.0):
        assert epochs_in_time(4, 20, 120, pace, 10, 600, most=40) is None


def test_an_earlier_stage_takes_its_share_of_what_fits_and_is_never_cut():
    # 8 planned epochs of 10 s, then 16 epochs' worth of later stages and 10 s to the end: after 2
    # epochs at 100 s the run would end at 330 s of 600. From the stage's start 45 epochs fit
    # within SAFETY; the stage takes its planned share of them, 8 of 24 (15), the last stage all
    assert epochs_in_time(2, 8, 100, 10, 10, 600, most=40, later=16, own=8, last=False) == 15
    assert epochs_in_time(2, 8, 100, 10, 10, 600, most=12, later=16, own=8, last=False) == 12  # the cap
    assert epochs_in_time(2, 8, 100, 10, 10, 600, most=60) == 45
    # asked again an epoch later at the same pace, the lengthened stage stays as it is
    assert epochs_in_time(3, 15, 110, 10, 10, 600, most=40, later=16, own=8, last=False) is None
    # past the budget an earlier stage is left as it is (the last stage will be cut); the last is cut
    assert epochs_in_time(2, 8, 100, 10, 10, 300, most=40, later=16, own=8, last=False) is None
    assert epochs_in_time(2, 8, 100, 10, 150, 300, most=40) == 2 + int((CUT_TARGET * 300 - 100 - 150) // 10) == 5


def test_the_deadline_of_a_resized_plan_has_a_clock_for_each_size(monkeypatch: pytest.MonkeyPatch):
    cfg = TrainConfig.from_preset("best", epochs=16, lr=1e-3)
    plan = plan_stages(cfg)  # 8 epochs at 128 px, 8 at 192
    deadline = deadline_for(plan, cfg, SPEEDS, 8, started=0.0, seconds=3600, most=24)
    first, second = deadline.clocks
    one = [stage_seconds(dataclasses.replace(s, epochs=1), cfg, SPEEDS) for s in plan]
    assert (first.epoch_s, second.epoch_s) == pytest.approx(one) and one[1] > one[0]
    # each may grow to its share of best's 24 epochs; the later stage counts as the first's epochs
    # by the probe's figures (8 at 192 px took 2.2x as long each), or by pixels when that is more
    # (8 at 192 px are 18 at 128): a busy probe that timed 128 px slower than 192 is not believed
    assert (first.epochs, second.epochs, first.most, second.most) == (8, 8, 12, 12)
    assert first.after_s == pytest.approx(stage_seconds(plan[1], cfg, SPEEDS)) and second.after_s == 0.0
    assert first.after_epochs == pytest.approx(18) and first.later == pytest.approx(max(first.after_s / one[0], 18))
    assert dataclasses.replace(first, epoch_s=10 * one[0]).later == pytest.approx(18) and second.later == 0.0
    # a head stage and SGDR stages are never changed
    recipe = TrainConfig.from_preset("recipe", epochs=7, lr=1e-3)
    assert deadline_for(plan_stages(recipe), recipe, SPEEDS, 8, 0.0, 3600, None).clocks == [None, None]


def test_a_new_stage_is_judged_on_its_own_pace():
    # 8 epochs of 20 s, then 8 of 40 s and the end (330 s after the first stage): 490 s, SAFETY of 545 s
    deadline = Deadline(started=0.0, seconds=545, final_s=FINISH_SECONDS,
                        clocks=[StageClock(20, 8, after_s=320, after_epochs=16, most=12), StageClock(40, 8, most=12)])
    # the first stage runs as planned: two 20 s epochs leave it alone
    assert deadline.check(0, 1, 8, 20, now=20) is None and deadline.check(0, 2, 8, 99, now=40) is None
    # the second stage's first epoch is its own (40 s, as planned), not 20 s epochs which would say
    # the run is twice as quick as planned
    assert deadline.check(1, 1, 8, 40, now=200) is None and deadline.durations == [40]
    assert deadline.epoch_s == 40


def test_the_deadline_judges_the_pace_from_recent_epochs_not_one():
    deadline = Deadline(started=0.0, seconds=610, final_s=FINISH_SECONDS + 10, clocks=[StageClock(25, 20)])
    assert deadline.check(0, 1, 20, 25, now=40) is None  # one epoch says nothing yet
    assert deadline.check(0, 2, 20, 99, now=65) is None  # 25 s since the last: on pace
    assert deadline.check(0, 3, 20, 99, now=160) is None  # one slow epoch (95 s): the median stays 25 s
    assert deadline.durations == [25, 25, 95] and deadline.pace == 25
    # two slow epochs make a pace of 95 s, which the final evaluation's estimate scales with too
    # (not the plots' and the report's FINISH_SECONDS)
    cut = deadline.check(0, 4, 20, 99, now=255)
    final = FINISH_SECONDS + 10 * 95 / 25
    assert cut == 4 + int((CUT_TARGET * 610 - 255 - final) // 95) == 6


class _Slowing(Reporter):
    """A machine that slows down after the speed probe: each training step takes `delay` more."""

    def __init__(self, delay: float):
        super().__init__(quiet=True)
        self.delay = delay

    @contextlib.contextmanager
    def progress(self, description: str, total: int):
        with super().progress(description, total) as advance:
            def slowly(n: int = 1, **fields: object) -> None:
                if description.startswith("unfrozen"):
                    time.sleep(self.delay)
                advance(n, **fields)

            yield slowly


def test_a_run_that_slows_down_is_cut_to_end_within_its_budget(labelled: Path, tmp_path: Path):
    # 6 tiny epochs fit 36 s by the probe (with room on a slow machine: its estimate counts 10 s for
    # the plots and the report); then every step takes 1.5 s more (4 steps an epoch), so at that pace
    # the six would end past 36 s: the stage is cut, and its cosine still ends where the plan ends
    cfg = TrainConfig(train_dir=str(labelled), size=32, bs=8, seed=5, time_budget=0.6, epochs=6)
    learn = train(cfg, tmp_path / "slow", reporter=_Slowing(1.5))
    recorded = json.loads((tmp_path / "slow" / "config.json").read_text())
    [stage] = recorded["plan"]
    [cut] = recorded["time_budget"]["cuts"]
    assert recorded["config"]["epochs"] == stage["epochs"] == 6
    assert stage["cuts"] == [[cut["after_epoch"], cut["epochs"]]] and 2 <= cut["after_epoch"] < cut["epochs"] < 6
    with open(tmp_path / "slow" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == cut["epochs"] == len(learn.history)
    with open(tmp_path / "slow" / "lrs.csv") as f:
        lrs = [float(row["lr_group2"]) for row in csv.DictReader(f)]
    # the epochs before the cut are those of the uncut plan, LR for LR, and it ends where the plan ends
    planned = plan_stages(dataclasses.replace(cfg, time_budget=None))[0].make_schedule(learn.steps_per_epoch())
    assert len(lrs) == cut["epochs"] * learn.steps_per_epoch()
    assert lrs[-1] == pytest.approx(1e-3 * planned.lr_mult(planned.total_steps - 1), rel=1e-5)
    before = cut["after_epoch"] * learn.steps_per_epoch()
    assert lrs[:before] == pytest.approx([1e-3 * planned.lr_mult(i) for i in range(before)], rel=1e-5)
    report = (tmp_path / "slow" / "report.html").read_text()
    assert f"{cut['epochs']} (planned 6, cut to {cut['epochs']} after epoch {cut['after_epoch']})" in report
    assert f"stage unfrozen was cut to {cut['epochs']} epochs after epoch {cut['after_epoch']}" in report


def test_the_deadline_lengthens_on_two_quick_epochs_or_on_one_when_the_plan_is_that_short():
    slow = Deadline(started=0.0, seconds=600, final_s=10, clocks=[StageClock(25, 20, most=40)])
    assert slow.check(0, 1, 20, 95, now=120) is None  # at 95 s an epoch the run would overrun, but one says little
    quick = Deadline(started=0.0, seconds=600, final_s=FINISH_SECONDS + 50, clocks=[StageClock(25, 20, most=40)])
    assert quick.check(0, 1, 20, 15, now=40) is None  # nor does one quick epoch
    # two say the probe was pessimistic, of the final evaluation too (its 50 s estimate is now 30)
    assert quick.check(0, 2, 20, 99, now=55) == 2 + int((SAFETY * 600 - 55 - FINISH_SECONDS - 30) // 15) == 31
    assert quick.check(0, 3, 31, 99, now=70) is None  # still at that pace: as it now stands
    # a plan of 2 epochs has only one before its second half: that one is enough
    short = Deadline(started=0.0, seconds=600, final_s=FINISH_SECONDS + 50, clocks=[StageClock(250, 2, most=40)])
    assert short.check(0, 1, 2, 15, now=40) == 1 + int((SAFETY * 600 - 40 - FINISH_SECONDS - 50 * 15 / 250) // 15)


def _probe_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed probe says an epoch takes 3 s at every size, where the tiny epochs take well under
    a second on a quiet machine."""
    from germinate.training.learner import Learner

    probe = Learner.measure_speeds

    def busy_probe(self, *args, **kw):
        s = probe(self, *args, **kw)
        return dataclasses.replace(s, step_s={k: 3.0 / s.steps_per_epoch for k in s.step_s},
                                   image_s={k: 1e-4 for k in s.image_s}, save_s=0.0)

    monkeypatch.setattr(Learner, "measure_speeds", busy_probe)


def test_a_run_quicker_than_its_probe_is_lengthened_to_use_its_budget(labelled: Path, tmp_path: Path, monkeypatch):
    # The probe timed a busy machine: by its figures an epoch takes 3 s, so about 9 fit the budget,
    # where the tiny epochs take well under a second (on a quiet machine); after two epochs the
    # stage is lengthened (to the 20 epochs --epochs allows, on a quiet machine), and its cosine
    # stretched to end where the plan ends.
    _probe_on_a_busy_machine(monkeypatch)
    cfg = TrainConfig(train_dir=str(labelled), size=32, bs=8, seed=5, time_budget=0.75, epochs=20)
    learn = train(cfg, tmp_path / "quick")
    recorded = json.loads((tmp_path / "quick" / "config.json").read_text())
    [stage] = recorded["plan"]
    changes = recorded["time_budget"]["cuts"]
    planned_epochs, ran = recorded["config"]["epochs"], changes[-1]["epochs"]
    assert stage["epochs"] == planned_epochs == changes[0]["from"] and 4 <= planned_epochs < 16, recorded["time_budget"]
    # lengthened after two epochs (a machine busy with other work may cut it back later)
    assert changes[0]["after_epoch"] == 2 and planned_epochs + 2 <= changes[0]["epochs"] <= 20 and ran <= 20
    assert stage["cuts"] == [[c["after_epoch"], c["epochs"]] for c in changes]
    with open(tmp_path / "quick" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == ran == len(learn.history)
    with open(tmp_path / "quick" / "lrs.csv") as f:
        lrs = [float(row["lr_group2"]) for row in csv.DictReader(f)]
    planned = plan_stages(dataclasses.replace(cfg, time_budget=None, epochs=planned_epochs))[0].make_schedule(
        learn.steps_per_epoch())
    before = 2 * learn.steps_per_epoch()
    assert len(lrs) == ran * learn.steps_per_epoch()
    assert lrs[:before] == pytest.approx([1e-3 * planned.lr_mult(i) for i in range(before)], rel=1e-5)
    assert lrs[-1] == pytest.approx(1e-3 * planned.lr_mult(planned.total_steps - 1), rel=1e-5)
    report = (tmp_path / "quick" / "report.html").read_text()
    first = changes[0]["epochs"]
    assert f"{ran} (planned {planned_epochs}, lengthened to {first} after epoch 2" in report
    assert f"stage unfrozen was lengthened to {first} epochs after epoch 2" in report


def test_a_pessimistic_probe_does_not_leave_the_first_size_short(labelled: Path, tmp_path: Path, monkeypatch):
    # With two sizes the probe's 3 s epochs plan a few of each; after quick epochs of the first size
    # (two, or one when its first half is that short), that stage takes its share of the epochs that
    # fit (at most its 10 of a 20-epoch cap), and its cosine still ends at low LR where the
    # stretched stage ends; then the second size does too.
    _probe_on_a_busy_machine(monkeypatch)
    cfg = TrainConfig(train_dir=str(labelled), sizes=[32, 48], bs=8, seed=5, time_budget=0.6, epochs=20, quiet=True)
    learn = train(cfg, tmp_path / "sizes")
    recorded = json.loads((tmp_path / "sizes" / "config.json").read_text())
    first, second = (Stage.from_dict(d) for d in recorded["plan"])
    planned = recorded["config"]["epochs"]
    assert first.epochs + second.epochs == planned < 20, recorded["time_budget"]
    after = first.cuts[0][0]
    assert after == min(2, first.epochs // 2) and first.epochs < first.n_epochs() <= 10, first
    assert second.n_epochs() <= 10
    assert [c["stage"] for c in recorded["time_budget"]["cuts"]][0] == "unfrozen-32"
    assert [row["stage"] for row in learn.history].count("unfrozen-32") == first.n_epochs()
    with open(tmp_path / "sizes" / "lrs.csv") as f:
        lrs = [float(row["lr_group2"]) for row in csv.DictReader(f) if row["stage"] == "unfrozen-32"]
    schedule = first.make_schedule(learn.steps_per_epoch())
    assert len(lrs) == schedule.total_steps == first.n_epochs() * learn.steps_per_epoch()
    assert lrs[-1] == pytest.approx(1e-3 * schedule.lr_mult(schedule.total_steps - 1), rel=1e-5) and lrs[-1] < 1e-4
    report = html.unescape((tmp_path / "sizes" / "report.html").read_text())
    assert f"stage unfrozen-32 was lengthened to {first.cuts[0][1]} epochs after epoch {after}" in report


def test_the_quicker_of_two_probes_is_kept():
    busy = dataclasses.replace(SPEEDS, step_s={128: 8.0, 192: 1.0}, image_s={160: 0.001, 240: 0.09}, save_s=3.0)
    both = SPEEDS.faster(busy)
    assert both.step_s == {128: 0.8, 192: 1.0} and both.image_s == {160: 0.001, 240: 0.009} and both.save_s == 0.3
    assert (both.steps_per_epoch, both.n_train, both.n_valid) == (100, 3200, 800)


@pytest.mark.parametrize("busy_twice", [False, True])
def test_a_plan_too_short_to_mend_is_timed_again(labelled: Path, monkeypatch, busy_twice: bool):
    # A probe beside a busy process (our tests) once timed 3.6 s steps where 0.3 s was usual and
    # planned the default at one epoch, and a stage of one epoch cannot be lengthened: it is over
    # before its pace is known. So a plan that short is timed again, and the quicker reading kept;
    # a machine as slow the second time keeps its short plan.
    from germinate.recipe import fit_time_budget
    from germinate.training.learner import Learner

    probe, calls = Learner.measure_speeds, []

    def busy_probe(self, *args, **kw):
        s = probe(self, *args, **kw)
        calls.append(s)
        if len(calls) == 1 or busy_twice:  # 15 s an epoch: one fits the budget, beside the fixed costs
            return dataclasses.replace(s, step_s={k: 15.0 / s.steps_per_epoch for k in s.step_s})
        return s

    monkeypatch.setattr(Learner, "measure_speeds", busy_probe)
    learn = create_learner(TrainConfig(train_dir=str(labelled), size=32, bs=8, quiet=True, seed=5, time_budget=0.75,
                                       epochs=20))
    budget = fit_time_budget(learn, time.perf_counter())
    assert len(calls) == 2 and budget["retimed"]
    assert budget["epochs"] == learn.cfg.epochs
    if busy_twice:
        assert 1 <= budget["epochs"] < 3
    else:  # the quiet reading: the tiny epochs take well under a second, so the cap of 20 fits
        assert budget["epochs"] == 20 and budget["speeds"]["step_s"] == calls[1].to_dict()["step_s"]


# --sam-last below 1: a run of plain epochs, then SAM ones at 2x the step
MIXED = dataclasses.replace(SPEEDS, sam_step_s={128: 1.6, 192: 3.6})


def test_a_sam_tail_is_planned_at_its_own_cost():
    cfg = TrainConfig(epochs=10, sam=0.05, sam_last=0.3)  # the last 3 of 10 epochs
    plain = run_seconds(plan_stages(cfg), cfg, SPEEDS, 8)
    assert run_seconds(plan_stages(cfg), cfg, MIXED, 8) == pytest.approx(plain + 3 * 100 * (1.6 - 0.8))
    # SAM on every epoch (the probe's steps are then SAM steps), or none: no surcharge
    whole = dataclasses.replace(cfg, sam_last=1.0)
    assert run_seconds(plan_stages(whole), whole, SPEEDS, 8) == pytest.approx(plain)
    # a budget holds fewer epochs for the tail's cost, as many as the estimates say
    budget = TrainConfig(epochs=None, sam=0.05, sam_last=0.3)
    n, estimate = epochs_for_budget(budget, MIXED, 20 * 60, 8)
    assert n < epochs_for_budget(budget, SPEEDS, 20 * 60, 8)[0]
    assert estimate == pytest.approx(_estimate(budget, n, MIXED))
    assert estimate <= 20 * 60 < _estimate(budget, n + 1, MIXED)


def _run_as_planned(deadline: Deadline, plan: list, pace: float = 1.0) -> list:
    """Every epoch of the one-stage `plan` taking `pace` times what the probe said (a SAM epoch
    its surcharge more), the deadline asked after each; what it answered, and the plan it left."""
    clock, now, answers = deadline.clocks[0], 0.0, []
    e = 0
    while e < plan[0].n_epochs():
        took = pace * (clock.epoch_s + (clock.sam_s if takes_sam(plan, 0, e, deadline.sam_last) else 0.0))
        now += took
        e += 1
        answer = deadline.check(0, e, plan[0].n_epochs(), took, now, plan)
        answers.append(answer)
        if answer is not None:
            plan = [plan[0].cut_to(e, answer)]
    return answers, plan


def test_the_deadline_counts_a_sam_tail_at_its_cost():
    cfg = TrainConfig(epochs=10, sam=0.05, sam_last=0.3)
    plan = plan_stages(cfg)
    seconds = run_seconds(plan, cfg, MIXED, 8) / SAFETY  # as a budget would have planned it
    deadline = deadline_for(plan, cfg, MIXED, 8, started=0.0, seconds=seconds, most=40)
    assert deadline.clocks[0].sam_s == pytest.approx(100 * (1.6 - 0.8))
    # epochs as the probe said, the plain ones twice as quick as the SAM ones: nothing moves
    answers, _ = _run_as_planned(deadline, plan)
    assert answers == [None] * 10
    # asked without the plan, the plain epochs looked quick and the stage was lengthened
    blind = deadline_for(plan, cfg, MIXED, 8, started=0.0, seconds=seconds, most=40)
    assert blind.check(0, 1, 10, 83.5, 83.5) is None and blind.check(0, 2, 10, 83.5, 167.0) > 10
    # a machine 1.3x slower throughout: cut, and the cut run's end (its SAM tail moved with it) is in time
    slow = deadline_for(plan, cfg, MIXED, 8, started=0.0, seconds=seconds, most=40)
    answers, cut = _run_as_planned(slow, plan, pace=1.3)
    assert any(a is not None and a < 10 for a in answers)
    c = slow.clocks[0]
    sams = sum(takes_sam(cut, 0, e, 0.3) for e in range(cut[0].n_epochs()))
    end = 1.3 * (cut[0].n_epochs() * c.epoch_s + sams * c.sam_s) + slow.final_s
    assert sams == 3 if cut[0].n_epochs() >= 8 else sams >= 1
    assert end <= seconds
