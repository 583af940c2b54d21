"""Every picture germinate draws (matplotlib, headless), each saved atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, ever
import matplotlib.pyplot as plt
import numpy as np

from germinate.utils import atomic_path


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_lr_find(result, path: str | Path, title: str = "LR range test") -> None:
    """Loss against LR (log axis), raw and smoothed, the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
    if result.curve_suggestion is not None:
        at = result.curve_suggestion
        y = np.interp(np.log(at), np.log(result.lrs), np.nan_to_num(result.smoothed, nan=np.nanmax(result.smoothed)))
        label = f"{result.method}: {at:.2e}"
        if result.scale != 1:  # the curve's rate goes to the earliest group; the head gets more
            label += f" (earliest group) -> lr {result.suggestion:.2e} (head)"
        ax.plot([at], [y], "o", color="C3", ms=9, label=label)
    finite = result.smoothed[np.isfinite(result.smoothed)]
    if len(finite):
        lo, hi = finite.min(), finite[: max(1, len(finite) // 10 + 1)].max()
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), max(hi, lo) + 0.6 * (hi - lo + 1e-9))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title if result.error is None else f"{title}: no suggestion")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_schedule(rows: Sequence[dict], path: str | Path) -> None:
    """LR of each layer group at every optimizer step, across all stages."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    steps = np.arange(len(rows))
    names = ["early body", "late body", "head"]
    for g in range(3):
        ax.plot(steps, [float(r[f"lr_group{g}"]) for r in rows], label=names[g], lw=1.5)
    stages = [r["stage"] for r in rows]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i, color="0.5", ls="--", lw=1)
            ax.text(i, ax.get_ylim()[1], f" {stages[i]}", va="top", fontsize=8, color="0.3")
    ax.set_yscale("log")
    peaks = [max(float(r[f"lr_group{g}"]) for r in rows) for g in range(3)]
    ax.set_ylim(min(peaks) / 100, max(peaks) * 2)  # the cosine's last steps near zero would hide the shape
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_curves(history: Sequence[dict], path: str | Path) -> None:
    """Train/valid loss and valid micro-F1 per epoch; stage boundaries dashed."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(1, len(history) + 1)
    ax1.plot(x, [h["train_loss"] for h in history], "o-", label="train loss")
    # With --valid-every N (or a final fit on all the data) some epochs have no validation.
    xv = [i for i, h in zip(x, history) if "f1_micro" in h]
    validated = [history[i - 1] for i in xv]
    ax1.plot(xv, [h["valid_loss"] for h in validated], "o-", label="valid loss")
    ax2.plot(xv, [h["f1_micro"] for h in validated], "o-", color="C2", label="valid micro-F1")
    for ax in (ax1, ax2):
        for i in range(1, len(history)):
            if history[i]["stage"] != history[i - 1]["stage"]:
                ax.axvline(i + 0.5, color="0.5", ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    ax1.set_ylabel("loss")
    ax2.set_ylabel("micro-F1")
    _save(fig, path)


def plot_confusion(cm: np.ndarray, classes: list[str], path: str | Path) -> None:
    """Counts and row-normalised (recall) matrices side by side, class names readable."""
    n = len(classes)
    side = max(4.5, 0.45 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for ax, mat, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")):
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(title)
        top = mat.max() if mat.size else 1
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    if mat[i, j]:
                        color = "white" if mat[i, j] > 0.6 * top else "black"
                        ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    _save(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, cols: int = 4) -> None:
    """HWC uint8 images in a grid, each with a (multi-line) title."""
    cols = max(1, min(cols, len(images)))
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
