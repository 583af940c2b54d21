"""The LR range test (Smith, 2015): raise the LR exponentially over mini-batches, record the
loss, and suggest an LR a little below where the loss is lowest.

The suggestion rules are pure functions of (lrs, losses). `suggest` first cuts the curve at
its first non-finite loss, smooths it without lag, and drops the first tenth (where the loss is
still settling), so that NaN tails and early spikes never break a rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from germinate.errors import GerminateError
from germinate.utils import write_csv_atomic

MIN_POINTS = 5  # fewer usable points than this cannot show a valley
WINDOW_DECADES = 3.0  # the rules look this far below the end of the curve (where it blew up)
STOP_DIV = 4.0  # the loss has diverged once it passes this many times its minimum


class LRFindError(GerminateError):
    """The range test produced a curve no LR can be read from (too short, flat or all NaN)."""


def exp_lrs(start: float, end: float, steps: int) -> np.ndarray:
    """`steps` learning rates from `start` to `end`, evenly spaced on a log scale."""
    if not 0 < start < end:
        raise GerminateError(f"the LR range needs 0 < start < end, got {start} .. {end}")
    if steps < 2:
        raise GerminateError(f"the LR range test needs at least 2 steps, got {steps}")
    return np.geomspace(start, end, steps)


def smooth(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    out, avg = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def smooth_centered(losses: np.ndarray, window: int | None = None) -> np.ndarray:
    """Zero-lag, spike-proof smoothing: a centred running median, then a centred running mean.
    (A causal EMA lags, moving the minimum to larger LRs; a forward-backward EMA smears the final
    blow-up and early spikes far into the valley. Here a spike reaches only `window // 2` points.)"""
    x = np.asarray(losses, float)
    w = window or max(5, (len(x) // 12) | 1)  # odd; about 9 points for a 100-step test
    if len(x) < 3:
        return x.copy()
    w = min(w, len(x) - (1 - len(x) % 2))
    pad = w // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad, mode="edge"), w)
    med = np.median(windows, axis=1)
    return np.lib.stride_tricks.sliding_window_view(np.pad(med, pad, mode="edge"), w).mean(axis=1)


def usable_curve(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of the curve the rules read: up to the first non-finite loss, smoothed (zero
    lag), minus the first tenth, and only the last three decades of LR. Raises LRFindError when
    too little is left or it is flat."""
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    bad = np.flatnonzero(~np.isfinite(losses))
    stop = bad[0] if len(bad) else len(losses)
    lrs, sm = lrs[:stop], smooth_centered(losses[:stop])
    skip = len(sm) // 10
    lrs, sm = lrs[skip:], sm[skip:]
    # A range test's information is just below where the loss blows up; far below it, on a
    # network that already learns, the curve is flat and its dips are noise (measured: an unfrozen
    # test found a dip at 1e-6 as deep as the real one at 2e-3).
    # The curve ends where it diverges: the smoothed loss passes STOP_DIV times its running minimum
    # (a live test stops there anyway; a recorded or synthetic curve may go on).
    above = np.flatnonzero(sm > STOP_DIV * np.minimum.accumulate(sm))
    end = int(above[0]) if len(above) else len(sm)
    lrs, sm = lrs[:end], sm[:end]
    if len(lrs):
        keep = lrs >= lrs[-1] / 10**WINDOW_DECADES
        lrs, sm = lrs[keep], sm[keep]
    if len(sm) < MIN_POINTS:
        raise LRFindError(
            f"the LR range test gave only {len(sm)} usable point(s) (the loss turned NaN/inf or the test "
            "was too short): use more --steps or a lower --start"
        )
    spread = sm.max() - sm.min()
    if not spread > 1e-3 * max(abs(sm.max()), 1e-12):
        raise LRFindError("the loss did not change across the LR range (flat curve): widen --start/--end")
    return lrs, sm


def suggest_minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR at the lowest loss, divided by 10."""
    return float(lrs[int(np.argmin(losses))] / 10)


def suggest_steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest against log(LR), looking only up to the minimum."""
    end = int(np.argmin(losses)) + 1
    if end < 2:
        return float(lrs[0])
    slope = np.gradient(losses[:end], np.log(lrs[:end]))
    return float(lrs[int(np.argmin(slope))])


def suggest_valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The middle (on a log scale) of the valley before the minimum. The valley starts where the
    loss was last a third of the way down from its highest level to its minimum: late enough
    that noise on a flat start cannot drag it to tiny LRs, early enough to stay well below the
    minimum, where the loss is still falling steadily."""
    low = int(np.argmin(losses))
    top = float(np.max(losses[: low + 1]))
    level = losses[low] + (2 / 3) * (top - losses[low])
    above = np.flatnonzero(losses[: low + 1] >= level)
    start = int(above[-1]) if len(above) else 0
    return float(math.exp((math.log(lrs[start]) + math.log(lrs[low])) / 2))


SUGGESTERS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "valley": suggest_valley,
    "minimum": suggest_minimum,
    "steepest": suggest_steepest,
}


def suggest(lrs: np.ndarray, losses: np.ndarray, method: str = "valley") -> float:
    """Suggested LR from a raw range-test curve, by rule `method` (valley, minimum, steepest)."""
    if method not in SUGGESTERS:
        raise GerminateError(f"Invalid suggestion rule {method!r}; valid: {', '.join(SUGGESTERS)}")
    return SUGGESTERS[method](*usable_curve(lrs, losses))


def run_range_test(
    step: Callable[[float], float],
    lrs: np.ndarray,
    stop_div: float = STOP_DIV,
    on_step: Callable[[float, float], None] | None = None,
) -> list[float]:
    """Call `step(lr)` (one training step at `lr`, returning its loss) for each LR until the
    smoothed loss passes `stop_div` times its minimum or turns non-finite. Returns the losses."""
    losses: list[float] = []
    best, avg = math.inf, 0.0
    for i, lr in enumerate(lrs):
        loss = float(step(float(lr)))
        losses.append(loss)
        if on_step:
            on_step(float(lr), loss)
        if not math.isfinite(loss):
            break
        avg = 0.98 * avg + 0.02 * loss
        smoothed = avg / (1 - 0.98 ** (i + 1))
        best = min(best, smoothed)
        if stop_div and i > len(lrs) // 10 and smoothed > stop_div * best:
            break
    return losses


@dataclass
class LRFindResult:
    """A finished range test: the curve, the suggestion and how it was chosen.

    `curve_suggestion` is where the rule reads the curve (one LR for every group); `suggestion`
    is "the LR" to train with, the head's peak: `curve_suggestion * scale`, where `scale` maps
    the curve's rate onto the earliest training group (1 for the head alone, r^2 unfrozen; see
    training/plan.py). Passing `suggestion` back as the LR reproduces what `--lr auto` does.
    """

    lrs: np.ndarray
    losses: np.ndarray
    method: str = "valley"
    scale: float = 1.0
    curve_suggestion: float | None = None
    error: str | None = None
    suggestions: dict[str, float] = field(default_factory=dict)  # every rule's curve reading

    @classmethod
    def from_curve(cls, lrs: np.ndarray, losses: np.ndarray, method: str = "valley", scale: float = 1.0) -> LRFindResult:
        """Compute every rule's suggestion; keep the curve even when none can be read."""
        lrs, losses = np.asarray(lrs, float)[: len(losses)], np.asarray(losses, float)
        result = cls(lrs, losses, method, scale)
        try:
            result.suggestions = {name: suggest(lrs, losses, name) for name in SUGGESTERS}
            result.curve_suggestion = result.suggestions[method]
        except LRFindError as e:
            result.error = str(e)
        return result

    @property
    def suggestion(self) -> float | None:
        """The LR to train with (the head's peak), to 3 significant digits so that the printed
        number is exactly the one auto uses; None when the curve gave none."""
        return None if self.curve_suggestion is None else float(f"{self.curve_suggestion * self.scale:.3g}")

    @property
    def smoothed(self) -> np.ndarray:
        """The smoothed loss the rules read, at each LR (NaN from the first non-finite loss on)."""
        out = np.full(len(self.losses), np.nan)
        bad = np.flatnonzero(~np.isfinite(self.losses))
        stop = bad[0] if len(bad) else len(self.losses)
        out[:stop] = smooth_centered(self.losses[:stop])
        return out

    def summary(self) -> dict:
        """The suggestion and how it was read, for lr_find.json."""
        return {"suggestion": self.suggestion, "method": self.method, "curve_suggestion": self.curve_suggestion,
                "scale": self.scale, "curve_suggestions": self.suggestions, "error": self.error}

    def save(self, folder: str | Path, stem: str = "lr_find", title: str = "LR range test") -> None:
        """`<stem>.csv` (lr, loss, smoothed_loss), `<stem>.json` (the suggestion) and `<stem>.png`."""
        import json

        from germinate.utils import write_text_atomic

        folder = Path(folder)
        self.to_csv(folder / f"{stem}.csv")
        write_text_atomic(folder / f"{stem}.json", json.dumps(self.summary(), indent=2))
        self.plot(folder / f"{stem}.png", title)

    def to_csv(self, path: str | Path) -> None:
        """Write `lr,loss,smoothed_loss`."""
        rows = ((f"{a:.6g}", f"{b:.6g}", f"{c:.6g}") for a, b, c in zip(self.lrs, self.losses, self.smoothed))
        write_csv_atomic(path, ["lr", "loss", "smoothed_loss"], rows)

    def plot(self, path: str | Path, title: str = "LR range test") -> None:
        """Loss against LR on a log axis, the suggestion marked."""
        from germinate.evaluate.plots import plot_lr_find

        plot_lr_find(self, path, title)
