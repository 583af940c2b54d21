"""Learning-rate schedules as pure functions of the optimizer step.

Each schedule maps a step in a stage to a multiplier of the peak LR; every layer group uses the
same shape scaled to its own peak. Pieces are one-line functions of the position in [0, 1].
SGDR: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts" (2017).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from germinate.config import SCHEDULES


def cos_anneal(start: float, end: float, pos: float) -> float:
    """Half a cosine from `start` (pos 0) to `end` (pos 1)."""
    return end + (start - end) * (1 + math.cos(math.pi * pos)) / 2


def lin_anneal(start: float, end: float, pos: float) -> float:
    """A straight line from `start` (pos 0) to `end` (pos 1)."""
    return start + (end - start) * pos


def sgdr_cycle_lengths(cycles: int, cycle_len: float, cycle_mult: float) -> list[float]:
    """Length of each cycle in epochs: cycle_len, cycle_len * mult, cycle_len * mult^2, ..."""
    return [cycle_len * cycle_mult**i for i in range(cycles)]


def sgdr_epochs(cycles: int, cycle_len: float, cycle_mult: float) -> float:
    """Epochs in an SGDR stage: L * (1 + M + ... + M^(C-1))."""
    return sum(sgdr_cycle_lengths(cycles, cycle_len, cycle_mult))


@dataclass(frozen=True)
class Schedule:
    """The shape of the LR over one stage of `total_steps` optimizer steps.

    kind: cosine (one cosine from the peak down), sgdr (cosine restarts, cycle i lasting
    cycle_len * cycle_mult^i epochs), onecycle (warm-up from peak/div for pct_start, then cosine
    down to peak/final_div, momentum moving the other way), flat (constant).
    warmup_steps: optional linear warm-up at the start of the stage only (never past the first
    cycle), so that SGDR restarts still jump straight back to the peak.
    cuts: (step, steps) for each time a time budget changed the stage's length as it ran
    (time_budget.Deadline): from `step` on, the rest of the shape is squeezed (or stretched, when
    the stage was lengthened) so that the stage ends after `steps` steps in all; the LR goes on
    from where it was and still ends where the plan ends. One cycle only (SGDR's cycle ends would
    move).
    """

    kind: str
    steps_per_epoch: int
    epochs: float
    cycles: int = 1
    cycle_len: float = 1.0
    cycle_mult: float = 1.0
    warmup_steps: int = 0
    min_ratio: float = 0.0
    pct_start: float = 0.25
    div: float = 25.0
    final_div: float = 1e4
    moms: tuple[float, float] = (0.95, 0.85)
    cuts: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"Invalid schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if self.steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be at least 1")
        if self.cuts:  # each made at or after the one before, before the stage's end, and changing it
            totals = [self.planned_steps] + [steps for _, steps in self.cuts]
            ats = [0] + [at for at, _ in self.cuts]
            if self.kind == "sgdr" or any(not (ats[i] <= ats[i + 1] < min(totals[i], totals[i + 1]))
                                          or totals[i + 1] == totals[i] for i in range(len(self.cuts))):
                raise ValueError(f"cannot cut a {self.kind} schedule of {self.planned_steps} steps as {self.cuts}")

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the stage: as planned, or as many as the last cut left."""
        return self.cuts[-1][1] if self.cuts else self.planned_steps

    @property
    def planned_steps(self) -> int:
        """Optimizer steps the stage was planned with (for SGDR, the sum of its cycles; `epochs` is ignored)."""
        if self.kind == "sgdr":
            return self._planned_bounds()[-1][1]
        return max(1, round(self.epochs * self.steps_per_epoch))

    def planned_step(self, step: int) -> float:
        """The step of the planned shape that `step` takes: itself, or after a cut, the rest of the
        shape as it stood stretched linearly over the steps left (the first still at the cut, the
        last at the last before the cut); cuts apply latest first."""
        x = float(step)
        totals = [self.planned_steps] + [steps for _, steps in self.cuts]
        for i in reversed(range(len(self.cuts))):
            at, steps = self.cuts[i]
            if x > at:
                x = at + (x - at) * (totals[i] - 1 - at) / (steps - 1 - at)
        return x

    def cycle_bounds(self) -> list[tuple[int, int]]:
        """(first step, one past the last step) of each cycle; one cycle unless SGDR."""
        return [(0, self.total_steps)] if self.cuts else self._planned_bounds()

    def _planned_bounds(self) -> list[tuple[int, int]]:
        if self.kind != "sgdr":
            return [(0, self.planned_steps)]
        # Rounded where each cycle ends, not per cycle, so that fractional cycles (--epochs fitted
        # into SGDR) still end exactly on the stage's last step.
        bounds, start, done = [], 0, 0.0
        for length in sgdr_cycle_lengths(self.cycles, self.cycle_len, self.cycle_mult):
            done += length
            end = max(start + 1, round(done * self.steps_per_epoch))
            bounds.append((start, end))
            start = end
        return bounds

    def lr_mult(self, step: int) -> float:
        """Multiplier of the peak LR at optimizer step `step` (0-based) of the stage."""
        step = self.planned_step(min(max(step, 0), self.total_steps - 1))
        if self.kind == "flat":
            mult = 1.0
        elif self.kind == "onecycle":
            mult = self._onecycle(step)
        else:
            start, end = next(b for b in self._planned_bounds() if b[0] <= step < b[1])
            mult = cos_anneal(1.0, self.min_ratio, (step - start) / (end - start))
        warmup = self.warmup_in_first_cycle()
        if step < warmup:
            mult *= (step + 1) / (warmup + 1)
        return mult

    def warmup_in_first_cycle(self) -> int:
        """Warm-up steps, cut to the first cycle: a restart always jumps straight back to the peak."""
        return min(self.warmup_steps, self._planned_bounds()[0][1])

    def _onecycle(self, step: float) -> float:
        up = max(1, round(self.pct_start * self.planned_steps))
        if step < up:
            return cos_anneal(1 / self.div, 1.0, step / up)
        return cos_anneal(1.0, 1 / self.final_div, (step - up) / max(1, self.planned_steps - up))

    def momentum(self, step: int) -> float | None:
        """One-cycle's momentum (or Adam's beta1), moving against the LR; None for the others."""
        if self.kind != "onecycle":
            return None
        hi, lo = self.moms
        step = self.planned_step(min(max(step, 0), self.total_steps - 1))
        up = max(1, round(self.pct_start * self.planned_steps))
        if step < up:
            return cos_anneal(hi, lo, step / up)
        return cos_anneal(lo, hi, (step - up) / max(1, self.planned_steps - up))

    def to_dict(self) -> dict:
        """Plain values, for the saved plan."""
        return asdict(self)


def group_lrs(peaks: list[float], schedule: Schedule, step: int) -> list[float]:
    """Each layer group's LR at `step`: the same shape scaled to the group's own peak."""
    mult = schedule.lr_mult(step)
    return [p * mult for p in peaks]


def differential_lrs(lr: float, ratio: float = 3.0, groups: int = 3) -> list[float]:
    """[lr / ratio^(n-1), ..., lr / ratio, lr]: early layers learn slower (recipe: lr/9, lr/3, lr)."""
    return [lr / ratio ** (groups - 1 - i) for i in range(groups)]
