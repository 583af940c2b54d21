"""A training plan: stages (which layer groups train, the LR schedule's shape, each group's peak),
the position inside it, and the one learning-rate convention shared by the CLI, the API and the
range test.

"The LR" is the head's peak. Earlier groups learn slower: [lr/r^2, lr/r, lr] (r = --lr-ratio).
The range test sweeps one LR for every group; its suggestion is a rate at which the whole
trainable network learns steadily, so it goes to the earliest group that trains, and the LR it
reports is the head's peak that puts it there (`lr_for_suggestion`). Passing that number back as
`--lr`, or to `fit_sgdr`, reproduces what `--lr auto` does.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from germinate.config import N_GROUPS, TrainConfig
from germinate.training.schedule import Schedule, differential_lrs, sgdr_cycle_lengths, sgdr_epochs

HEAD_ONLY = N_GROUPS - 1  # frozen groups when only the head trains


@dataclass(frozen=True)
class Stage:
    """One stage of training. `frozen_groups`: how many leading layer groups stay frozen (their
    normalisation layers still train): 0 trains the whole network, 2 the head alone."""

    name: str
    frozen_groups: int
    schedule: str = "cosine"
    epochs: int = 1
    cycles: int = 1
    cycle_len: float = 1
    cycle_mult: float = 1
    warmup_pct: float = 0.0
    lrs: tuple[float, ...] | None = None  # None: chosen by the LR range test when the stage starts
    precompute: bool = False
    size: int | None = None  # training image size; None: the config's (last) size
    # (after this many epochs, this many in all) each time a time budget changed the stage's length
    # as it ran (time_budget.Deadline): the rest of its schedule squeezed into the epochs left, or
    # stretched over more
    cuts: tuple[tuple[int, int], ...] = ()

    @property
    def head_only(self) -> bool:
        """True when the whole body is frozen."""
        return self.frozen_groups >= HEAD_ONLY

    def n_epochs(self) -> int:
        """Epochs in the stage (for SGDR, from its cycles; after a cut, those the last left)."""
        if self.cuts:
            return self.cuts[-1][1]
        if self.schedule == "sgdr":
            return int(round(sgdr_epochs(self.cycles, self.cycle_len, self.cycle_mult)))
        return self.epochs

    def validates(self, epoch: int, every: int) -> bool:
        """Whether `epoch` (0-based) is validated with --valid-every `every`: every `every`-th
        epoch and the stage's last."""
        return (epoch + 1) % every == 0 or epoch + 1 == self.n_epochs()

    def make_schedule(self, steps_per_epoch: int) -> Schedule:
        """The schedule object for this stage at `steps_per_epoch`; warm-up only in the first cycle."""
        planned = sgdr_epochs(self.cycles, self.cycle_len, self.cycle_mult) if self.schedule == "sgdr" else self.epochs
        first = self.cycle_len if self.schedule == "sgdr" else planned
        return Schedule(
            self.schedule, steps_per_epoch, planned, self.cycles, self.cycle_len, self.cycle_mult,
            warmup_steps=int(self.warmup_pct * first * steps_per_epoch),
            cuts=tuple((done * steps_per_epoch, n * steps_per_epoch) for done, n in self.cuts),
        )

    def cut_to(self, done: int, epochs: int) -> Stage:
        """This stage cut (or lengthened) to `epochs` after `done` of them, by a time budget."""
        return dataclasses.replace(self, cuts=(*self.cuts, (done, epochs)))

    def length_changes(self) -> str:
        """The time budget's changes to the stage's length, in words ("" when none): "cut to 22
        after epoch 4, lengthened to 25 after epoch 9"."""
        before = [self.epochs] + [n for _, n in self.cuts]
        return ", ".join(f"{'lengthened' if n > was else 'cut'} to {n} after epoch {done}"
                         for (done, n), was in zip(self.cuts, before))

    def with_lrs(self, lrs: list[float]) -> Stage:
        """This stage with its peak LRs chosen."""
        return dataclasses.replace(self, lrs=tuple(float(x) for x in lrs))

    def to_dict(self) -> dict:
        """Plain values, for config.json and checkpoints."""
        d = dataclasses.asdict(self)
        d["lrs"] = list(self.lrs) if self.lrs is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Stage:
        """Inverse of to_dict (also reads 0.1's plans, which had `frozen: bool`)."""
        d = dict(d)
        if "frozen" in d:
            d["frozen_groups"] = HEAD_ONLY if d.pop("frozen") else 0
        if d.get("lrs") is not None:
            d["lrs"] = tuple(d["lrs"])
        d["cuts"] = tuple(tuple(c) for c in d.get("cuts", ()))
        return cls(**d)


@dataclass
class Position:
    """Where training is: stage index, epoch in the stage, next batch in the epoch."""

    stage: int = 0
    epoch: int = 0
    batch: int = 0

    @property
    def at_stage_start(self) -> bool:
        """True before the first step of a stage."""
        return self.epoch == 0 and self.batch == 0


def sam_epochs(plan: list[Stage], share: float) -> int:
    """How many of the plan's unfrozen epochs, the last ones, take SAM steps with --sam-last
    `share`: at least one, rounded up (a share of 0.3 of 15 epochs: the last 5)."""
    total = sum(s.n_epochs() for s in plan if not s.head_only)
    return min(total, max(1, math.ceil(share * total - 1e-9)))  # 0.3 * 10 is 3.0000000000000004


def stage_sam_epochs(plan: list[Stage], share: float) -> list[int]:
    """Per stage, how many of its epochs, its last ones, take SAM steps with --sam-last `share`:
    every epoch at 1 (head stages too, as --sam always did), else the last `sam_epochs` of the
    unfrozen epochs, counted over the stages together from the end (with --sizes, the last
    size's epochs first). The counts follow the plan as a time budget changes it."""
    if share >= 1:
        return [s.n_epochs() for s in plan]
    left, counts = sam_epochs(plan, share), [0] * len(plan)
    for i in reversed(range(len(plan))):
        if not plan[i].head_only:
            counts[i] = min(left, plan[i].n_epochs())
            left -= counts[i]
    return counts


def takes_sam(plan: list[Stage], stage: int, epoch: int, share: float) -> bool:
    """Whether epoch `epoch` (0-based) of the plan's stage `stage` takes SAM steps with
    --sam-last `share` (stage_sam_epochs): every epoch at 1, whatever the plan holds."""
    if share >= 1:
        return True
    return epoch >= plan[stage].n_epochs() - stage_sam_epochs(plan, share)[stage]


def stage_lrs(lr: float, frozen_groups: int, ratio: float) -> list[float]:
    """Peak LR per group for "the LR" `lr` (the head's peak). Head only: one LR (only the head and
    the body's normalisation layers train); otherwise differential: [lr/r^2, lr/r, lr]."""
    if frozen_groups >= HEAD_ONLY:
        return [float(lr)] * N_GROUPS
    return differential_lrs(float(lr), ratio, N_GROUPS)


def lr_for_suggestion(suggestion: float, frozen_groups: int, ratio: float) -> float:
    """The LR (head's peak) whose `stage_lrs` give the earliest training group the range test's
    suggestion: the suggestion itself for the head alone, suggestion * r^2 unfrozen. (Measured
    with AdamW: putting the suggestion on the head instead leaves the body learning far too slowly.)"""
    trainable = N_GROUPS - min(frozen_groups, HEAD_ONLY)
    return float(suggestion * ratio ** (trainable - 1))


def fit_cycles(epochs: int, cycle_len: float, cycle_mult: float, max_cycles: int) -> tuple[int, float]:
    """SGDR cycles for a budget of `epochs`: the most cycles (up to `max_cycles`, at least one)
    whose lengths fit, then the first cycle stretched so that they fill the budget exactly.
    15 epochs, len 1, mult 2: 4 cycles (1+2+4+8); 3 epochs: 2 cycles (1+2); 10: 3 cycles of
    1.43, 2.86 and 5.71 epochs."""
    if epochs <= 0:
        return 0, float(cycle_len)
    cycles = 1
    while cycles < max_cycles and sgdr_epochs(cycles + 1, cycle_len, cycle_mult) <= epochs:
        cycles += 1
    return cycles, epochs / sgdr_epochs(cycles, 1, cycle_mult)


def unfrozen_cycles(cfg: TrainConfig) -> tuple[int, float]:
    """The unfrozen stage's SGDR cycles and first cycle length: --cycles and --cycle-len, or
    with --epochs as many cycles as fit into them, stretched to fill them."""
    if cfg.schedule == "sgdr" and cfg.epochs is not None:
        return fit_cycles(cfg.epochs, cfg.cycle_len, cfg.cycle_mult, max(cfg.cycles, 1))
    return cfg.cycles, float(cfg.cycle_len)


def split_cycles(cycles: int, cycle_len: float, cycle_mult: float, parts: int) -> list[tuple[int, float]]:
    """SGDR cycles shared among `parts` consecutive stages (progressive resizing): the last
    parts-1 cycles one to a stage, the earlier ones together in the first. Each stage gets
    (cycles, first cycle length), its cycles stretched or shrunk by the same factor so that it
    lasts a whole number of epochs (cycle ends rounded to whole epochs) and the total stays.
    1, 2, 4, 8 epochs over 3 stages: (2, 1.0), (1, 4.0), (1, 8.0)."""
    lengths = sgdr_cycle_lengths(cycles, cycle_len, cycle_mult)
    groups = [list(range(cycles - parts + 1))] + [[i] for i in range(cycles - parts + 1, cycles)]
    out, done = [], 0.0
    for group in groups:
        start, end = round(done), round(done + sum(lengths[i] for i in group))
        done += sum(lengths[i] for i in group)
        epochs = max(end - start, 1)
        out.append((len(group), epochs / sgdr_epochs(len(group), 1, cycle_mult)))
    return out


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    """The stages a config asks for; stages of zero epochs are left out. LRs left None are
    chosen by the range test when their stage starts."""
    lr = None if cfg.lr == "auto" else float(cfg.lr)
    sgdr = cfg.schedule == "sgdr"
    head = Stage(
        "head", HEAD_ONLY, cfg.schedule, cfg.freeze_epochs, cycles=cfg.freeze_epochs if sgdr else 1,
        warmup_pct=cfg.warmup_pct, lrs=tuple(stage_lrs(lr, HEAD_ONLY, cfg.lr_ratio)) if lr else None,
        precompute=cfg.precompute in ("auto", "on"),
    )
    cycles, cycle_len = unfrozen_cycles(cfg)
    if cfg.lrs:
        body_lrs = tuple(cfg.lrs)
    else:
        body_lrs = tuple(stage_lrs(lr, 0, cfg.lr_ratio)) if lr else None
    unfrozen = Stage(
        "unfrozen", 0, cfg.schedule, cfg.unfrozen_epochs(), cycles=cycles, cycle_len=cycle_len,
        cycle_mult=cfg.cycle_mult, warmup_pct=cfg.warmup_pct, lrs=body_lrs,
    )
    if not cfg.sizes:
        return [s for s in (head, unfrozen) if s.n_epochs() > 0]
    # Progressive resizing: one unfrozen stage per size, each with its own range test.
    head = dataclasses.replace(head, size=cfg.sizes[0])
    if sgdr:
        parts = [{"cycles": n, "cycle_len": length}
                 for n, length in split_cycles(cycles, cycle_len, cfg.cycle_mult, len(cfg.sizes))]
    elif cfg.size_epochs:
        parts = [{"epochs": n} for n in cfg.size_epochs]
    else:  # the epochs shared out, the later sizes getting the extra ones
        total, n = unfrozen.n_epochs(), len(cfg.sizes)
        parts = [{"epochs": total // n + (i >= n - total % n)} for i in range(n)]
    # --resize-lr: a later size continues a model that is already good, so it may restart lower
    if body_lrs is not None:
        for i, part in enumerate(parts):
            part["lrs"] = tuple(x * cfg.resize_lr ** i for x in body_lrs)
    resized = [dataclasses.replace(unfrozen, name=f"unfrozen-{px}", size=px, **part)
               for px, part in zip(cfg.sizes, parts)]
    return [s for s in (head, *resized) if s.n_epochs() > 0]


def describe(stage: Stage, bs: int | None = None, processes: int = 1) -> str:
    """One line: the stage's length, schedule, LR per group and (given `bs`, per process) the
    batch each step takes."""
    if stage.schedule == "sgdr":
        lengths = ", ".join(f"{x:g}" if x == int(x) else f"{x:.2f}"
                            for x in sgdr_cycle_lengths(stage.cycles, stage.cycle_len, stage.cycle_mult))
        shape = f"SGDR, {stage.cycles} cycle(s) of {lengths} epoch(s)"
    else:
        shape = stage.schedule
    lrs = ", ".join(f"{x:.2e}" for x in stage.lrs or [])
    body = "head only" if stage.head_only else ("whole network" if stage.frozen_groups == 0 else
                                                 f"first {stage.frozen_groups} group(s) frozen")
    extra = f", {stage.size} px" if stage.size else ""
    extra += ", precomputed features" if stage.precompute else ""
    if bs is not None:
        extra += f", batch {bs}" if processes == 1 else f", batch {bs * processes} ({bs} on each of {processes} processes)"
    cut = f" (planned {stage.epochs}, {stage.length_changes()})" if stage.cuts else ""
    return f"stage {stage.name} ({body}): {stage.n_epochs()} epoch(s){cut}, {shape}, peak lr per group [{lrs}]{extra}"
