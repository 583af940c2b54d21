"""`--time MIN` (and the default's own budget, TrainConfig.length_budget): the most epochs that fit
a wall-clock budget, from a short speed probe.

Like Ultralytics' `time=`, but planned before the first step: a few training steps at each
training size and a few validation batches are timed (`Learner.measure_speeds`), the run's time is
estimated for each epoch count from those figures and the plan's shape (pure functions below), and
the run is then the run `--epochs N` would be, with N recorded in config.json. A machine that is
twice as fast trains about twice as long; the recorded command repeats the run anywhere.

A machine can also slow down after the probe (a 2-core machine here went from 29 s to 39 s
epochs within a run), or run quicker than the probe said (over 15 default runs, an epoch's
training took 0.80-1.28 times the probe's figure; beside a busy process, 0.1 times). The
`Deadline` watches the epochs as they end and, when the measured pace would carry the run past
its budget, shortens the last stage, squeezing the rest of its schedule into the epochs that fit;
when more epochs would fit within SAFETY of the budget (as the plan was made), it lengthens a
stage in its first half, stretching the rest of its schedule, up to the budget's cap on epochs.
With several sizes (--sizes) an earlier stage is lengthened too, to its share of the epochs
that fit (its planned epochs over its own and the later stages'), so that a probe timed on a busy
machine does not leave the first sizes short for good; only the last stage is cut (the stages
before it are then over). A busy moment distorts the probe's sizes unevenly (one probe timed 6.0
s a step at 128 px and 2.5 at 192), so the later stages are counted in the current stage's
epochs by pixels, or by the probe's figures when that is more. Each change is recorded as one of
Stage.cuts; a run that keeps its planned pace is never touched.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from germinate.config import TrainConfig
from germinate.training.plan import Stage, plan_stages, stage_sam_epochs, takes_sam

# The plan is made for this fraction of what is left of the budget: a 2-core machine's speed
# drifts by 10-20% within an hour (epochs of 26-46 s in one run), and the probe sees a few seconds.
SAFETY = 0.9
RANGE_TEST_PROBE = 64  # images of the fixed batch it scores after every step
# The plots, the report and the export after the final evaluation (measured 5-10 s on 2 cores).
FINISH_SECONDS = 10.0
MAX_EPOCHS = 10_000
# The Deadline judges the pace from the median of the last few epochs (one slow epoch is not a
# trend), after at least two, and cuts to this fraction of the budget, not all of it: a machine
# that has slowed may slow further. It lengthens a stage on the same two epochs (on one when
# the plan is only 2 or 3 long: probes timed beside busy processes planned 2 and 4 epochs where
# over 20 fitted), and only to SAFETY of the budget, as the plan was made: between SAFETY and 1
# it leaves the stage alone, so that a steady pace never moves it back and forth.
PACE_EPOCHS = 3
CUT_TARGET = 0.95
# A plan shorter than this is timed again before it stands: a stage of one epoch is over before
# its pace is known, so no lengthening can mend a probe that caught a busy moment.
RETIME_BELOW = 3


@dataclass(frozen=True)
class Speeds:
    """What the probe measured on this machine, per process.

    step_s: seconds per training step (batch --bs, the whole network as the plan trains it) per
    training size; sam_step_s: with --sam-last below 1 (steps of both kinds), seconds per SAM step
    per training size, step_s then being plain steps (else empty); image_s: seconds per image of an
    evaluation forward pass (batchnorm folded) per image size; save_s: seconds to write a
    checkpoint; steps_per_epoch, n_train, n_valid: the data's shape (this process's share of the
    validation images)."""

    step_s: dict[int, float]
    image_s: dict[int, float]
    save_s: float
    steps_per_epoch: int
    n_train: int
    n_valid: int
    sam_step_s: dict[int, float] = field(default_factory=dict)

    def faster(self, other: Speeds) -> Speeds:
        """Each figure the quicker of two probes': other work on the machine only ever slows one."""
        return dataclasses.replace(
            self, step_s={k: min(v, other.step_s.get(k, v)) for k, v in self.step_s.items()},
            sam_step_s={k: min(v, other.sam_step_s.get(k, v)) for k, v in self.sam_step_s.items()},
            image_s={k: min(v, other.image_s.get(k, v)) for k, v in self.image_s.items()},
            save_s=min(self.save_s, other.save_s))

    def to_dict(self) -> dict:
        """Plain values, for config.json."""
        return {k: ({str(s): round(v, 5) for s, v in x.items()} if isinstance(x, dict) else
                    (round(x, 5) if isinstance(x, float) else x)) for k, x in dataclasses.asdict(self).items()}


def forward_s(speeds: Speeds, size: int) -> float:
    """Seconds per image of a forward pass at `size`: measured, or scaled from the nearest
    measured size by the pixel count."""
    if size in speeds.image_s:
        return speeds.image_s[size]
    near = min(speeds.image_s, key=lambda s: abs(s - size))
    return speeds.image_s[near] * (size / near) ** 2


def validation_sizes(cfg: TrainConfig) -> list[int]:
    """The sizes validation runs at: each training size's and the final evaluation's."""
    return sorted({cfg.valid_size(s) for s in cfg.train_sizes} | {cfg.eval_size})


def train_size(stage: Stage, cfg: TrainConfig) -> int:
    """The image size `stage` trains at: its own (--sizes), else the config's."""
    return stage.size or cfg.final_size


def sam_epoch_s(stage: Stage, cfg: TrainConfig, speeds: Speeds) -> float:
    """Seconds an epoch of `stage` costs beyond a plain one when it takes SAM steps under
    --sam-last below 1 (0 without: the probe's steps are then the steps every epoch takes)."""
    size = train_size(stage, cfg)
    return speeds.steps_per_epoch * (speeds.sam_step_s[size] - speeds.step_s[size]) if speeds.sam_step_s else 0.0


def sam_counts(plan: list[Stage], cfg: TrainConfig, speeds: Speeds) -> list[int]:
    """Per stage, its epochs that take SAM steps under --sam-last below 1 (none without)."""
    return stage_sam_epochs(plan, cfg.sam_last) if speeds.sam_step_s else [0] * len(plan)


def stage_seconds(stage: Stage, cfg: TrainConfig, speeds: Speeds, sams: int = 0) -> float:
    """Estimated seconds of one stage, `sams` of its epochs taking SAM steps (sam_epoch_s): its
    range test (when it has no LRs yet), its epochs, their validations and checkpoints. A head
    stage on precomputed features costs their computation (forward passes); one without, a
    forward pass per image and epoch (no backward through the frozen body)."""
    size = train_size(stage, cfg)
    valid_size = cfg.valid_size(size)
    epochs = stage.n_epochs()
    validations = sum(stage.validates(e, cfg.valid_every) for e in range(epochs))
    seconds = epochs * speeds.save_s + validations * speeds.n_valid * forward_s(speeds, valid_size)
    if stage.head_only:
        per_pass = speeds.n_train * forward_s(speeds, size)
        if stage.precompute:
            return seconds + cfg.precompute_augs * per_pass + speeds.n_valid * forward_s(speeds, valid_size)
        return seconds + epochs * per_pass + (cfg.lr_find_steps * RANGE_TEST_PROBE * forward_s(speeds, size)
                                              if stage.lrs is None else 0.0)
    step = speeds.step_s[size]
    if stage.lrs is None:  # the range test: steps, each scored on the fixed probe batch
        seconds += cfg.lr_find_steps * (step + RANGE_TEST_PROBE * forward_s(speeds, size))
    return seconds + epochs * speeds.steps_per_epoch * step + sams * sam_epoch_s(stage, cfg, speeds)


def run_seconds(plan: list[Stage], cfg: TrainConfig, speeds: Speeds, views: int) -> float:
    """Estimated seconds from the first stage to the end of the run: every stage, then the final
    evaluation with `views` TTA views, the plots and the report."""
    final = views * speeds.n_valid * forward_s(speeds, cfg.eval_size) + FINISH_SECONDS
    return sum(stage_seconds(s, cfg, speeds, n) for s, n in zip(plan, sam_counts(plan, cfg, speeds))) + final


def epochs_for_budget(cfg: TrainConfig, speeds: Speeds, seconds: float, views: int) -> tuple[int, float]:
    """The most unfrozen epochs (--epochs) whose run fits in `seconds`, at most `cfg.epochs`
    when it is set, and its estimate. 0 epochs when not even the smallest plan fits (its
    estimate returned, to say so)."""
    def estimate(n: int) -> float:
        return run_seconds(plan_stages(dataclasses.replace(cfg, epochs=n)), cfg, speeds, views)

    most = min(cfg.epochs or MAX_EPOCHS, MAX_EPOCHS)
    lo = min_epochs(cfg)
    if estimate(lo) > seconds:
        return 0, estimate(lo)
    # The estimate grows with the epochs (each adds a pass, a validation and a save): double,
    # then bisect, keeping estimate(lo) within the budget and estimate(hi) over it (or past the cap).
    hi = lo + 1
    while hi <= most and estimate(hi) <= seconds:
        lo, hi = hi, hi * 2
    hi = min(hi, most + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(mid) <= seconds else (lo, mid)
    return lo, estimate(lo)


def min_epochs(cfg: TrainConfig) -> int:
    """The fewest unfrozen epochs the plan allows: one, or with --sizes enough for one stage per
    size (with SGDR, enough for one cycle per size)."""
    n = 1
    while cfg.sizes and n < MAX_EPOCHS and dataclasses.replace(cfg, epochs=n).unfrozen_parts() < len(cfg.sizes):
        n += 1
    return n


def preset_name(preset: str) -> str:
    """How messages name a preset: the default, or --preset best."""
    return "the default" if preset == "fast" else f"--preset {preset}"


def budget_name(minutes: float, given: bool, preset: str = "fast") -> str:
    """How messages name a budget: the user's --time, or a preset's own (the default's, best's)."""
    return f"--time {minutes:g}" if given else f"{preset_name(preset)}'s {minutes:g} minutes"


def recorded_budget_name(budget: dict) -> str:
    """budget_name of a budget as config.json records it (records from before best's budget name no
    preset: theirs was the default's)."""
    return budget_name(budget["minutes"], budget.get("given", True), budget.get("preset", "fast"))


def lengthens(cut: dict) -> bool:
    """Whether a change the Deadline made (an entry of time_budget.cuts) lengthened its stage
    (records before lengthening existed have no "from": they are cuts)."""
    return cut["epochs"] > cut.get("from", cut["epochs"])


def describe_cut(cut: dict) -> str:
    """How messages and the report tell a change the Deadline made (an entry of time_budget.cuts)."""
    return (f"stage {cut['stage']} was {'lengthened' if lengthens(cut) else 'cut'} to {cut['epochs']} epochs "
            f"after epoch {cut['after_epoch']}, its epochs taking {cut['epoch_s']:.0f} s")


def epochs_in_time(done: int, planned: int, elapsed_s: float, epoch_s: float, final_s: float,
                   budget_s: float, most: int | None = None, later: float = 0.0, own: int | None = None,
                   last: bool = True, surcharge: Callable[[int], float] | None = None) -> int | None:
    """The epochs a stage of `planned` epochs should take after `done` of them, at `epoch_s`
    seconds an epoch, with `later` epochs' worth of later stages after it (counted in its epochs)
    and the run's end `final_s` after those; None to leave it.

    The `last` stage, when the run would end past `budget_s`: the most epochs whose end keeps
    within CUT_TARGET of the budget, at least one more than done (None when there is nothing to
    cut). When `most` is more than `planned`, at most half the stage done, and the run would end
    with time to spare within SAFETY of the budget: the epochs that fit from the stage's start
    to SAFETY of the budget, of which the stage takes its share as the plan made it (`own`
    epochs, as planned, over `own` and `later`: all of them for the last stage), at most `most`
    (later, the schedule's low tail is all that would stretch). The share is of the whole, not
    of what is left over, so the same pace gives the same length however often it is asked.

    `surcharge(n)`: with --sam-last below 1, the SAM steps' extra cost still to come, in epochs of
    this stage, were it `n` epochs long (the later stages as planned); `epoch_s` is then a plain
    epoch's pace."""
    extra = surcharge or (lambda n: 0.0)
    if done >= planned:
        return None
    end = elapsed_s + (planned - done + later + extra(planned)) * epoch_s + final_s
    if end > budget_s:
        if not last or done + 1 >= planned:
            return None
        room = CUT_TARGET * budget_s - elapsed_s - final_s
        cut = min(max(done + 1, done + int(room // epoch_s)), planned - 1)
        while surcharge and cut > done + 1 and (cut - done + extra(cut)) * epoch_s > room:
            cut -= 1
        return cut
    if 2 * done > planned:
        return None
    fit = done + (SAFETY * budget_s - elapsed_s - final_s) // epoch_s  # this stage's and the later ones'
    own = own or planned
    longer = min(most or planned, int(fit * own / (own + later)))
    while surcharge and longer > planned and longer * (own + later) / own + extra(longer) > fit:
        longer -= 1
    return longer if longer > planned else None


@dataclass(frozen=True)
class StageClock:
    """What the Deadline knows of one stage: one epoch's seconds (its steps, validation and
    checkpoint) by the probe; its epochs as planned; the stages after it as planned (none for the
    last), in seconds by the probe and in epochs of this stage by pixels; the most epochs it
    may grow to; and with --sam-last below 1, what an epoch of SAM steps costs beyond a plain one
    (epoch_s and after_s are plain epochs')."""

    epoch_s: float
    epochs: int
    after_s: float = 0.0
    after_epochs: float = 0.0
    most: int | None = None
    sam_s: float = 0.0

    @property
    def later(self) -> float:
        """The later stages in epochs of this one: by the probe's figures, or by pixels when that
        is more (a busy probe may have timed this size slower than the later ones)."""
        return max(self.after_s / self.epoch_s, self.after_epochs)


@dataclass
class Deadline:
    """Keeps a budgeted run to its budget as it goes: after each epoch of a stage it has a clock
    for (not a head stage, nor an SGDR stage, whose restarts would move), the measured pace is
    checked against the time left (epochs_in_time); only the last stage is cut.

    started: the run's start (time.perf_counter()); seconds: the budget; final_s: the estimated
    time after the last stage's last epoch (final TTA evaluation, plots, report), as the probe
    measured it; clocks: per stage of the plan, its StageClock, or None when it is never changed;
    sam_last: --sam-last, when its epochs of SAM steps cost more than the others (the pace is
    then kept in plain epochs, each SAM epoch's time divided by its cost, and the SAM epochs to
    come are added as the plan then has them). The estimates of what follows a stage (but
    FINISH_SECONDS) are scaled by how much slower or quicker its epochs turned out than the probe
    said."""

    started: float
    seconds: float
    final_s: float
    clocks: list[StageClock | None]
    sam_last: float = 1.0
    stage: int | None = None
    durations: list[float] = field(default_factory=list)
    last_end: float | None = None

    @property
    def pace(self) -> float:
        """Seconds an epoch of the stage takes now: the median of its last few."""
        return statistics.median(self.durations[-PACE_EPOCHS:])

    @property
    def epoch_s(self) -> float:
        """Seconds an epoch of the stage was planned to take."""
        return self.clocks[self.stage].epoch_s

    def check(self, stage: int, done: int, planned: int, seconds: float, now: float,
              plan: list[Stage] | None = None) -> int | None:
        """After the `done`-th epoch (of `planned`) of stage `stage` ended at `now`, having taken
        `seconds` (its steps and validation; from the previous epoch's end, once the stage has
        one, so that the checkpoint between them counts): the epochs the stage should now take,
        or None. `plan`: the run's plan as it stands, which says which epochs take SAM steps
        (needed only with --sam-last below 1)."""
        clock = self.clocks[stage] if stage < len(self.clocks) else None
        if clock is None:
            return None
        if stage != self.stage:  # a new size has a pace of its own
            self.stage, self.durations, self.last_end = stage, [], None
        took = now - self.last_end if self.last_end is not None else seconds
        surcharge = self._surcharge(plan, stage, done)
        if surcharge is not None and takes_sam(plan, stage, done - 1, self.sam_last):
            took *= clock.epoch_s / (clock.epoch_s + clock.sam_s)  # in plain epochs
        self.durations.append(took)
        self.last_end = now
        # the final evaluation's forward passes run at the epochs' pace; the plots and report do not
        final = FINISH_SECONDS + (self.final_s - FINISH_SECONDS) * self.pace / clock.epoch_s
        epochs = epochs_in_time(done, planned, now - self.started, self.pace, final, self.seconds, clock.most,
                                clock.later, clock.epochs, last=stage == len(self.clocks) - 1, surcharge=surcharge)
        # one epoch is not a pace: two are needed to cut, and to lengthen unless the stage's first
        # half is only one epoch long (a plan of 2 or 3, which waiting would leave as it is)
        if epochs is not None and len(self.durations) < (2 if epochs < planned else min(2, planned // 2)):
            return None
        return epochs

    def _surcharge(self, plan: list[Stage] | None, stage: int, done: int) -> Callable[[int], float] | None:
        """epochs_in_time's surcharge for stage `stage` after `done` epochs (None when no epoch
        costs more than another): the extra cost of the SAM epochs still to come, in the stage's
        plain epochs, with the stage `n` epochs long."""
        if plan is None or not any(c is not None and c.sam_s for c in self.clocks):
            return None
        unit = self.clocks[stage].epoch_s

        def surcharge(n: int) -> float:
            counts = stage_sam_epochs([*plan[:stage], plan[stage].cut_to(done, n), *plan[stage + 1:]], self.sam_last)
            counts[stage] = min(counts[stage], n - done)  # a stage's SAM epochs are its last: those still to come
            return sum(clock.sam_s * counts[j] for j, clock in enumerate(self.clocks)
                       if j >= stage and clock is not None) / unit
        return surcharge


def deadline_for(plan: list[Stage], cfg: TrainConfig, speeds: Speeds, views: int, started: float,
                 seconds: float, most: int | None) -> Deadline:
    """The Deadline of a planned run: for each stage it may change (trained by the epoch, not
    SGDR), one epoch's estimate from the probe, its planned epochs, the later stages' time (by the
    probe, and in its epochs by pixels: the probe's sizes may be distorted unevenly) and the most
    epochs it may grow to (its share of a plan of `most` epochs, the budget's cap; None: no cap
    but MAX_EPOCHS); the run's end after the last stage."""
    capped = plan_stages(dataclasses.replace(cfg, epochs=min(most or MAX_EPOCHS, MAX_EPOCHS)))
    clocks: list[StageClock | None] = []
    for i, stage in enumerate(plan):
        if stage.head_only or stage.schedule == "sgdr":
            clocks.append(None)
            continue
        one = dataclasses.replace(stage, epochs=1, cycles=1, cycle_len=1, lrs=(0.0,))  # no range test in an epoch
        px = train_size(stage, cfg) ** 2
        later = sum(s.n_epochs() * train_size(s, cfg) ** 2 / px for s in plan[i + 1:])
        cap = capped[i].n_epochs() if len(capped) == len(plan) else stage.n_epochs()
        clocks.append(StageClock(stage_seconds(one, cfg, speeds), stage.n_epochs(),
                                 after_s=sum(stage_seconds(s, cfg, speeds) for s in plan[i + 1:]),
                                 after_epochs=later, most=cap, sam_s=sam_epoch_s(stage, cfg, speeds)))
    return Deadline(started, seconds, run_seconds([], cfg, speeds, views), clocks, cfg.sam_last)
