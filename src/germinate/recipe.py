"""The course's recipe, from a folder of images to a finished run folder.

1. LR range test with the body frozen; train the head (SGDR, one-epoch cycles) at the suggestion,
   on precomputed body features by default.
2. Unfreeze; LR range test again; SGDR with cycle_mult 2 at differential LRs [lr/9, lr/3, lr].
3. Export the model, evaluate it with TTA, draw the plots and write the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from germinate._version import __version__
from germinate.config import TrainConfig
from germinate.data.bundle import DataBundle, load_folder
from germinate.data.folders import write_skipped
from germinate.errors import GerminateError
from germinate.models.network import create_network
from germinate.run import RunFolder
from germinate.training.checkpoint import load_checkpoint
from germinate.training.learner import Learner, Stage, graceful_interrupts
from germinate.training.schedule import differential_lrs
from germinate.ui import Reporter
from germinate.utils import seed_everything

FALLBACK_LR = 1e-3  # used, with a warning, if a range test gives no readable curve


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    """The stages a config asks for; stages of zero epochs are left out. LRs left None are
    chosen by the range test when their stage starts."""
    lr = None if cfg.lr == "auto" else float(cfg.lr)
    head_sgdr = cfg.schedule == "sgdr"
    head = Stage(
        "head", frozen=True, schedule=cfg.schedule, epochs=cfg.freeze_epochs,
        cycles=cfg.freeze_epochs if head_sgdr else 1, cycle_len=1, cycle_mult=1, warmup_pct=cfg.warmup_pct,
        lrs=[lr] * 3 if lr else None, precompute=cfg.precompute in ("auto", "on"),
    )
    body_lrs = list(cfg.lrs) if cfg.lrs else (differential_lrs(lr, cfg.lr_ratio) if lr else None)
    unfrozen = Stage(
        "unfrozen", frozen=False, schedule=cfg.schedule, epochs=int(cfg.unfrozen_epochs()),
        cycles=cfg.cycles, cycle_len=cfg.cycle_len, cycle_mult=cfg.cycle_mult, warmup_pct=cfg.warmup_pct,
        lrs=body_lrs,
    )
    return [s for s in (head, unfrozen) if s.n_epochs() > 0]


def load_data(cfg: TrainConfig, reporter: Reporter) -> DataBundle:
    """The run's data, with a one-line summary and a warning for anything skipped."""
    data = load_folder(
        cfg.train_dir, cfg.cache_px, cfg.valid_pct, cfg.valid_dir, cfg.limit_per_class, cfg.seed,
        cfg.cache_dir, cfg.use_cache, reporter, cfg.eval_cache_px,
    )
    if data.skipped:
        reporter.warn(f"skipped {len(data.skipped)} file(s) that are not usable images (listed in skipped.csv)")
    reporter.info(f"{len(data.classes)} classes, {len(data.train)} training and {len(data.valid)} validation images")
    return data


def _choose_lrs(learn: Learner, stage: Stage) -> None:
    """Run the range test for `stage` and set its LRs from the suggestion."""
    learn.freeze() if stage.frozen else learn.unfreeze()
    result = learn.lr_find(suggest=learn.cfg.suggest)
    learn.lr_finds[stage.name] = result
    if learn.run is not None:
        result.to_csv(learn.run / f"lr_find_{stage.name}.csv")
        result.plot(learn.run / f"lr_find_{stage.name}.png", f"LR range test ({stage.name})")
    if result.suggestion is None:
        learn.reporter.warn(f"{result.error}; using lr {FALLBACK_LR:g} for the {stage.name} stage")
        lr = FALLBACK_LR
    else:
        lr = result.suggestion
        learn.reporter.info(f"LR range test ({stage.name}): suggested lr {lr:.2e} ({result.method})")
    stage.lrs = [lr] * 3 if stage.frozen else unfrozen_lrs(lr, learn.cfg.lr_ratio)


def unfrozen_lrs(suggestion: float, ratio: float) -> list[float]:
    """Differential peaks from a whole-network suggestion. The test sweeps one LR for every group,
    so its suggestion is a rate at which the whole network learns steadily: it goes to the early
    body, whose general features we most want to keep, and the later groups learn faster:
    [s, s*r, s*r^2], i.e. [lr/r^2, lr/r, lr] with lr = s * r^2. (Measured with AdamW: putting the
    suggestion on the head instead leaves the body learning far too slowly.)"""
    return differential_lrs(suggestion * ratio**2, ratio)


def describe(stage: Stage) -> str:
    """One line: the stage's length, schedule and LR per group."""
    shape = (
        f"SGDR {stage.cycles} cycle(s), len {stage.cycle_len}, mult {stage.cycle_mult}"
        if stage.schedule == "sgdr" else stage.schedule
    )
    lrs = ", ".join(f"{x:.2e}" for x in stage.lrs or [])
    extra = ", precomputed features" if stage.precompute else ""
    return f"stage {stage.name}: {stage.n_epochs()} epoch(s), {shape}, lr per group [{lrs}]{extra}"


def run_plan(learn: Learner) -> None:
    """Run the remaining stages of the learner's plan, choosing LRs where needed."""
    with graceful_interrupts(learn):
        for i in range(learn.pos.stage, len(learn.plan)):
            stage = learn.plan[i]
            fresh = learn.pos.epoch == 0 and learn.pos.batch == 0
            if stage.precompute and fresh:
                learn.recalibrate_bn()  # before features are computed (and the range test reads them)
            if stage.lrs is None:
                _choose_lrs(learn, stage)
                if learn.run is not None:
                    save_config(learn)
            learn.reporter.info(describe(stage))
            learn.fit_stage(stage)
        learn.save_checkpoint()  # records that every stage is done


def save_config(learn: Learner) -> None:
    """config.json: the resolved config, the plan (with LRs once chosen) and how to repeat the run."""
    from dataclasses import asdict

    learn.run.write_json("config.json", {
        "germinate_version": __version__,
        "command": learn.cfg.command(learn.run.path),
        "config": learn.cfg.to_dict(),
        "classes": learn.data.classes,
        "counts": {"train": len(learn.data.train), "valid": len(learn.data.valid), "skipped": len(learn.data.skipped)},
        "class_counts": {
            c: {"train": int((learn.data.train.labels == i).sum()), "valid": int((learn.data.valid.labels == i).sum())}
            for i, c in enumerate(learn.data.classes)
        },
        "plan": [asdict(s) for s in learn.plan],
    })


def create_learner(cfg: TrainConfig, run: RunFolder | None = None, reporter: Reporter | None = None) -> Learner:
    """Data and a pretrained network for `cfg`, ready to fit (in a notebook, say); nothing is run."""
    reporter = reporter or Reporter(cfg.quiet)
    cfg.validate()
    seed_everything(cfg.seed)
    data = load_data(cfg, reporter)
    net = create_network(cfg.arch, len(data.classes), cfg.pretrained, cfg.weights, cfg.hidden, cfg.dropout)
    return Learner(net, data, cfg, run, reporter)


def train(cfg: TrainConfig, out: str | Path, overwrite: bool = False, reporter: Reporter | None = None) -> Learner:
    """Train a classifier with the recipe and write everything into the run folder `out`."""
    cfg.validate()
    run = RunFolder(out).create(overwrite)
    started = time.perf_counter()
    learn = create_learner(cfg, run, reporter)
    write_skipped(run / "skipped.csv", learn.data.skipped)
    learn.plan = plan_stages(cfg)
    save_config(learn)
    run_plan(learn)
    from germinate.finish import finish_run

    finish_run(learn, time.perf_counter() - started)
    return learn


def resume(run_dir: str | Path, reporter: Reporter | None = None) -> Learner:
    """Continue an interrupted run from its last checkpoint, exactly as if it had not stopped."""
    run = RunFolder(run_dir)
    saved = run.read_json("config.json")
    cfg = TrainConfig.from_dict(saved["config"])
    reporter = reporter or Reporter(cfg.quiet)
    state = load_checkpoint(run.checkpoint)
    if state.get("position", {}).get("stage", 0) >= len(state.get("plan", [])) and (run / "model.json").exists():
        raise GerminateError(f"the run in {str(run.path)!r} has already finished")
    started = time.perf_counter()
    seed_everything(cfg.seed)
    data = load_data(cfg, reporter)
    if data.classes != saved["classes"]:
        raise GerminateError(f"the classes in {cfg.train_dir!r} changed since the run started: {saved['classes']} vs {data.classes}")
    net = create_network(cfg.arch, len(data.classes), pretrained=False, hidden=cfg.hidden, dropout=cfg.dropout)
    learn = Learner(net, data, cfg, run, reporter)
    learn.load_state_dict(state)
    reporter.info(f"resuming {run.path}: stage {learn.pos.stage + 1}, epoch {learn.pos.epoch + 1}, batch {learn.pos.batch}")
    run_plan(learn)
    from germinate.finish import finish_run

    finish_run(learn, time.perf_counter() - started)
    return learn
