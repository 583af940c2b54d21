"""Resumable checkpoints (plain tensors and Python values only, so they load with weights_only=True)
and the run's training logs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from germinate.errors import GerminateError
from germinate.models.backbones import batchnorm_eps, recorded_bn_eps
from germinate.utils import atomic_path

METRIC_FIELDS = ["stage", "epoch", "train_loss", "valid_loss", "accuracy", "f1_micro", "f1_macro"]
LR_FIELDS = ["step", "epoch", "stage", "lr_group0", "lr_group1", "lr_group2"]


def rng_state() -> dict[str, Any]:
    """Every random generator's state, in weights-only-safe types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True (no code is ever unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise GerminateError(f"no checkpoint at {path}: nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GerminateError(f"checkpoint {path} cannot be read (truncated or not a germinate checkpoint): {str(e).splitlines()[0][:120]}") from e


def learner_state(learn: Any) -> dict[str, Any]:
    """Everything a Learner needs to continue exactly from where it is."""
    return {
        "format": "germinate-checkpoint",
        "arch": learn.net.arch,
        "classes": list(learn.data.classes),
        "model": learn.net.state_dict(),
        "bn_eps": batchnorm_eps(learn.net.body),  # not in the state dict, and a resume rebuilds the body
        "optimizer": learn.opt.state_dict(),
        "plan": [s.to_dict() for s in learn.plan],
        "position": {"stage": learn.pos.stage, "epoch": learn.pos.epoch, "batch": learn.pos.batch},
        "world_size": learn.world.size,  # a batch position counts steps of --bs images per process
        "epoch_stats": [learn._epoch.loss_sum, learn._epoch.count],
        "history": learn.history,
        "lr_log": learn.lr_log,
        "best_f1": learn.best_f1,
        "rng": rng_state(),
    }


def saved_bn_eps(state: dict[str, Any]) -> float | None:
    """The body's batchnorm eps to rebuild a checkpoint's network with (see learner_state)."""
    return recorded_bn_eps(state["arch"], state.get("bn_eps"))


def write_logs(run: Any, history: list[dict], lr_log: list[dict]) -> None:
    """metrics.csv (identical for identical runs), timings.csv and lrs.csv."""
    fmt = [{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in h.items()} for h in history]
    run.write_csv("metrics.csv", fmt, METRIC_FIELDS)
    run.write_csv("timings.csv", fmt, ["stage", "epoch", "seconds"])
    run.write_csv("lrs.csv", lr_log, LR_FIELDS)
