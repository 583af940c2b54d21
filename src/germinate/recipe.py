"""A whole run, from a folder of images to a finished run folder: the stages the config plans.

The default (preset fast) is one stage: the whole network, one cosine at one LR. The course's
recipe (preset recipe) is two:
1. LR range test with the body frozen; train the head (SGDR, one-epoch cycles) at the suggestion,
   on precomputed body features by default.
2. Unfreeze; LR range test again; SGDR with cycle_mult 2 at differential LRs [lr/9, lr/3, lr].
Then export the model, evaluate it with TTA, draw the plots and write the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

from germinate._version import __version__
from germinate.config import TrainConfig
from germinate.data.bundle import DataBundle, load_folder
from germinate.data.folders import write_skipped
from germinate.data.manifest import FIELDS as SPLIT_FIELDS
from germinate.data.manifest import describe_change, read_file_list, rows_hash, split_rows
from germinate.errors import GerminateError, TrainingInterrupted
from germinate.evaluate.predict import tta_views
from germinate.final_fit import FINAL, FinalFitFolder, final_learner, finish_final_fit, pending
from germinate.models.network import create_network
from germinate.run import RunFolder
from germinate.training import distributed
from germinate.training.checkpoint import load_checkpoint, saved_bn_eps
from germinate.training.distributed import SINGLE, World
from germinate.training.interrupts import graceful_interrupts
from germinate.training.learner import Learner, check_sync_bn
from germinate.training.plan import describe, plan_stages, stage_lrs
from germinate.training.time_budget import (RETIME_BELOW, SAFETY, Speeds, budget_name, deadline_for, describe_cut,
                                           epochs_for_budget, min_epochs, preset_name, recorded_budget_name)
from germinate.ui import Muted, Reporter
from germinate.utils import resolve_device, seed_everything

FALLBACK_LR = 1e-3  # used, with a warning, if a range test gives no readable curve
# Settings a resumed run may change: where and how fast it runs, never what it computes.
RESUME_SAFE = ("device", "workers", "quiet")


def load_data(cfg: TrainConfig, reporter: Reporter, world: World = SINGLE, merge_valid: bool = False) -> DataBundle:
    """The run's data, with a one-line summary and a warning for anything skipped. With several
    processes on a machine, its first decodes (and caches) the images while the others wait,
    then they read the cache. `merge_valid`: the validation images train too (a final fit)."""
    exclude = read_file_list(cfg.exclude) if cfg.exclude else frozenset()

    def load() -> DataBundle:
        return load_folder(cfg.train_dir, cfg.cache_px, cfg.valid_pct, cfg.valid_dir, cfg.limit_per_class, cfg.seed,
                           cfg.cache_dir, cfg.use_cache, reporter, cfg.eval_cache_px, merge_valid,
                           (cfg.fold, cfg.folds) if cfg.fold else None, exclude)

    data = None
    if world.local_rank == 0:
        data = load()
    world.barrier()
    if data is None:
        data = load()
    if world.active and len(data.valid) < world.size:
        raise GerminateError(f"{len(data.valid)} validation image(s) cannot be shared by {world.size} processes")
    if data.skipped and not merge_valid:  # a final fit reads the same files: said once
        reporter.warn(f"skipped {len(data.skipped)} file(s) that are not usable images (listed in skipped.csv)")
    if not merge_valid:
        reporter.info(f"{len(data.classes)} classes, {len(data.train)} training and {len(data.valid)} validation images")
        if exclude:
            reporter.info(f"--exclude: {len(data.excluded)} of its {len(exclude)} images left out of training (the "
                          "others are not among this split's training images)")
    return data


def choose_lrs(learn: Learner, i: int) -> None:
    """Run the range test for stage `i` of the plan and give the stage the LRs it suggests."""
    stage = learn.plan[i]
    learn.freeze_to(stage.frozen_groups)
    result = learn.lr_find(steps=learn.cfg.lr_find_steps, suggest=learn.cfg.suggest)
    learn.lr_finds[stage.name] = result
    if learn.run is not None:
        result.save(learn.run.path, f"lr_find_{stage.name}", f"LR range test ({stage.name})")
    if result.suggestion is None:
        learn.reporter.warn(f"{result.error}; using lr {FALLBACK_LR:g} for the {stage.name} stage")
        lr = FALLBACK_LR
    else:
        lr = result.suggestion
        learn.reporter.info(f"LR range test ({stage.name}): lr {lr:.2e} ({result.method} rule)")
    learn.plan[i] = stage.with_lrs(stage_lrs(lr, stage.frozen_groups, learn.cfg.lr_ratio))


def run_plan(learn: Learner) -> None:
    """Run the remaining stages of the learner's plan, choosing LRs where needed."""
    for i in range(learn.pos.stage, len(learn.plan)):
        stage = learn.plan[i]
        learn.use_size(stage.size)
        if learn.pos.at_stage_start:
            # A stop before the stage's first step (batchnorm, range test, features) resumes here.
            learn.save_checkpoint()
            if learn.uses_precompute(stage) and learn.cfg.bn_reestimate:
                learn.recalibrate_bn()  # before features are computed (and the range test reads them)
        if stage.lrs is None:
            choose_lrs(learn, i)
            if learn.run is not None:
                save_config(learn)
        learn.reporter.info(describe(learn.plan[i], learn.cfg.bs, learn.world.size))
        learn.fit_stage(learn.plan[i])
    learn.save_checkpoint()  # records that every stage is done
    learn.ranks_identical = learn.ranks_agree()
    if not learn.ranks_identical:
        learn.reporter.warn("the processes ended with different weights; the model saved is rank 0's")


def save_config(learn: Learner) -> None:
    """config.json: the resolved config, the plan (with LRs once chosen) and how to repeat the run."""
    data = learn.data
    learn.run.write_json("config.json", {
        "germinate_version": __version__,
        "command": learn.cfg.command(learn.run.path),
        "config": learn.cfg.to_dict(),
        "classes": data.classes,
        "counts": {"train": len(data.train), "valid": len(data.valid), "skipped": len(data.skipped)},
        "class_counts": {
            c: {"train": int((data.train.labels == i).sum()), "valid": int((data.valid.labels == i).sum())}
            for i, c in enumerate(data.classes)
        },
        "split_sha256": rows_hash(learn.run.read_csv("split.csv")),
        "plan": [s.to_dict() for s in learn.plan],
        **({"time_budget": learn.budget} if learn.budget else {}),
    })


def create_learner(cfg: TrainConfig, run: RunFolder | None = None, reporter: Reporter | None = None,
                   world: World = SINGLE) -> Learner:
    """Data and a pretrained network for `cfg`, ready to fit (in a notebook, say); nothing is run."""
    reporter = reporter or Reporter(cfg.quiet)
    cfg.validate()
    seed_everything(cfg.seed)  # the same on every process: the same head to start from
    data = load_data(cfg, reporter, world)
    net = create_network(cfg.arch, len(data.classes), cfg.pretrained, cfg.weights, cfg.hidden, cfg.dropout,
                         probe_size=min(cfg.train_sizes), drop_path=cfg.drop_path, pool=cfg.pool)
    return Learner(net, data, cfg, run, reporter, world)


def join_world(cfg: TrainConfig, reporter: Reporter | None) -> tuple[World, Reporter]:
    """The processes of a torchrun launch (or just this one), and who speaks: rank 0 only."""
    device = resolve_device(cfg.device)
    if cfg.sync_bn:
        check_sync_bn(device)
    world = distributed.init(device)
    if not world.is_main:
        return world, Muted()
    return world, reporter or Reporter(cfg.quiet)


def _absolute(cfg: TrainConfig) -> TrainConfig:
    """Folders stored absolute, so that the run resumes and repeats from any working directory."""
    valid = str(Path(cfg.valid_dir).absolute()) if cfg.valid_dir else None
    return dataclasses.replace(cfg, train_dir=str(Path(cfg.train_dir).absolute()), valid_dir=valid)


@contextlib.contextmanager
def _stoppable(learn: Learner) -> Iterator[None]:
    with graceful_interrupts(learn.request_stop, learn.reporter.warn):
        yield


def train(cfg: TrainConfig, out: str | Path, overwrite: bool = False, reporter: Reporter | None = None) -> Learner:
    """Train a classifier with the recipe and write everything into the run folder `out`."""
    if not cfg.train_dir:
        raise GerminateError("train needs a labelled folder (TrainConfig.train_dir)")
    cfg = _absolute(cfg).validate()
    if not Path(cfg.train_dir).exists():
        raise GerminateError(f"labelled folder {cfg.train_dir!r} does not exist")
    if cfg.folds > 1 and not cfg.fold:
        from germinate.folds import train_folds

        return train_folds(cfg, out, overwrite, reporter)
    world, reporter = join_world(cfg, reporter)
    run = RunFolder(out)
    # Before the data is read; nothing is written until all is ready. Only rank 0 writes.
    world.on_main(lambda: run.check_writable(overwrite))
    started = time.perf_counter()
    learn = create_learner(cfg, None, reporter, world)
    if cfg.length_budget():
        learn.budget = fit_time_budget(learn, started)
    learn.plan = plan_stages(learn.cfg)
    if world.is_main:
        learn.run = run.create(overwrite)
        write_skipped(run / "skipped.csv", learn.data.skipped)
        run.write_csv("split.csv", split_rows(learn.data, cfg.train_dir, cfg.valid_dir), SPLIT_FIELDS)
        save_config(learn)
        learn.on_cut = lambda: save_config(learn)  # a time budget's cut changes the plan
    from germinate.finish import finish_run

    with _stoppable(learn):
        run_plan(learn)
        finish_run(learn, time.perf_counter() - started)
    if learn.budget:
        _say_budget(learn, time.perf_counter() - started)
    return _final_fit(learn.cfg, run, reporter, world) or learn


def fit_time_budget(learn: Learner, started: float) -> dict:
    """--time, or a preset's own budget (the default's, best's; TrainConfig.length_budget): measure
    this machine's speed, then give the learner's config the most epochs whose estimated run fits
    what is left of the budget (time_budget.py), and a Deadline that cuts the last stage short if the machine
    slows, or lengthens a stage if its epochs run quicker than the probe said; what was measured and
    chosen, for config.json. The config that trains has --epochs N and no --time, so the command
    config.json records repeats the run (exactly, unless the Deadline changed its length)."""
    minutes, most = learn.cfg.length_budget()
    given = not learn.cfg.own_budget()  # else the preset's own
    cfg = dataclasses.replace(learn.cfg, time_budget=minutes, epochs=most)
    said = budget_name(minutes, given, cfg.preset)
    learn.reporter.info(f"{said}: timing a few training steps and validation batches")
    views = len(tta_views(cfg.flip, cfg.tta))

    def plan(speeds: Speeds) -> tuple[int, float]:
        left = minutes * 60 - (time.perf_counter() - started)
        return learn.world.broadcast(epochs_for_budget(cfg, speeds, left * SAFETY, views))

    speeds = learn.measure_speeds()
    epochs, estimate = plan(speeds)
    # too short to mend later, and perhaps a busy moment's plan (`most`: the --epochs cap, if any)
    retimed = epochs < (RETIME_BELOW if most is None else min(RETIME_BELOW, most))
    if retimed:
        learn.reporter.info(f"{said}: {epochs} epoch(s) fit by that timing; timing again, to keep the quicker reading")
        speeds = speeds.faster(learn.measure_speeds())
        epochs, estimate = plan(speeds)
    per_step = ", ".join(f"{s:.2f} s at {px} px" for px, s in speeds.step_s.items())
    if epochs == 0:
        raise GerminateError(
            f"{said} {'is' if given else 'are'} too short here: {min_epochs(cfg)} epoch(s) would take about "
            f"{estimate / 60:.1f} min more (a training step takes {per_step}); give more minutes with --time, or "
            f"--epochs")
    learn.cfg = dataclasses.replace(cfg, epochs=epochs, time_budget=None)
    learn.deadline = deadline_for(plan_stages(learn.cfg), learn.cfg, speeds, views, started, minutes * 60, most)
    spent = time.perf_counter() - started
    most_by = "--epochs allows" if given else f"{preset_name(cfg.preset)} takes"
    capped = f" (the most {most_by})" if epochs == most else ""
    learn.reporter.info(f"{said}: {epochs} epoch(s) fit{capped} (a training step takes {per_step}; "
                        f"about {(spent + estimate) / 60:.1f} min in all); repeat this run with --epochs {epochs}")
    return {"minutes": minutes, "epochs": epochs, "estimated_minutes": round((spent + estimate) / 60, 2),
            "safety": SAFETY, "speeds": speeds.to_dict(), "given": given, "preset": cfg.preset,
            **({"retimed": True} if retimed else {})}


def _say_budget(learn: Learner, seconds: float) -> None:
    """How the run kept to its --time."""
    budget = learn.budget
    said = recorded_budget_name(budget)
    line = (f"{said}: the run took {seconds / 60:.1f} min "
            f"(estimated {budget['estimated_minutes']:.1f})")
    for cut in budget.get("cuts", []):
        line += f"; {describe_cut(cut)}"
    if seconds > budget["minutes"] * 60:
        learn.reporter.warn(line + ": the machine was slower than when the probe timed it")
    else:
        learn.reporter.info(line)


def _final_fit(cfg: TrainConfig, run: RunFolder, reporter: Reporter, world: World,
               state: dict | None = None) -> Learner | None:
    """With --final-fit-all, the final fit (resumed from `state`, a final-fit checkpoint); None
    without. The plan is the first fit's, every LR chosen, as config.json records it."""
    if not cfg.final_fit_all:
        return None
    started = time.perf_counter()
    plan = world.on_main(lambda: run.read_json("config.json")["plan"])
    learn = final_learner(cfg, run, plan, load_data(cfg, reporter, world, merge_valid=True), reporter, world, state)
    with _stoppable(learn):
        try:
            run_plan(learn)
        except TrainingInterrupted as e:
            raise TrainingInterrupted(str(run.path)) from e  # the run resumes as a whole
    if world.is_main:
        finish_final_fit(learn, run, time.perf_counter() - started)
    return learn


def resume(run_dir: str | Path, reporter: Reporter | None = None, **changes) -> Learner:
    """Continue an interrupted run from its last checkpoint, exactly as if it had not stopped.
    `changes` may set only what does not change the results: device, workers, quiet."""
    run = RunFolder(run_dir)
    refused = sorted(set(changes) - set(RESUME_SAFE))
    if refused:
        raise GerminateError(f"a resumed run keeps its settings; only {', '.join(RESUME_SAFE)} may change, not: "
                             f"{', '.join(refused)} (start a new run with --out to change them)")
    # Every process reads the config (it says which devices to join with), so a run resumed on
    # several machines needs its folder at the same path on each (a shared disk).
    recorded = run.read_json("config.json")
    cfg = dataclasses.replace(TrainConfig.from_dict(recorded["config"]), **changes).validate()
    if cfg.folds > 1 and not cfg.fold:
        from germinate.folds import train_folds

        return train_folds(cfg, run.path, reporter=reporter, resuming=True)
    world, reporter = join_world(cfg, reporter)

    def read() -> tuple[str, dict | None]:
        if (run / "final.json").exists():
            if not pending(run, cfg):
                raise GerminateError(f"the run in {str(run.path)!r} has already finished")
            path = FinalFitFolder(run / FINAL).checkpoint  # absent when stopped before its first save
            return FINAL, (load_checkpoint(path) if path.exists() else None)
        return "first", load_checkpoint(run.checkpoint)

    phase, state = world.on_main(read)  # rank 0 reads the checkpoint and hands it to the others
    if phase == FINAL:
        reporter.info(f"resuming {run.path}: the final fit on all the labelled images")
        return _final_fit(cfg, run, reporter, world, state)
    started = time.perf_counter()
    seed_everything(cfg.seed)
    data = load_data(cfg, reporter, world)
    world.on_main(lambda: _check_same_data(run, data, cfg))
    net = create_network(cfg.arch, len(data.classes), pretrained=False, hidden=cfg.hidden, dropout=cfg.dropout,
                         drop_path=cfg.drop_path, bn_eps=saved_bn_eps(state), pool=cfg.pool)
    learn = Learner(net, data, cfg, run if world.is_main else None, reporter, world)
    learn.load_state_dict(state)
    learn.budget = recorded.get("time_budget")  # config.json is written again when a range test picks LRs
    moved = (f" (it was on {learn.resumed_from_world} process(es), now {world.size}: position mapped by images seen)"
             if learn.resumed_from_world != world.size else "")
    reporter.info(f"resuming {run.path}: stage {learn.pos.stage + 1}, epoch {learn.pos.epoch + 1}, "
                  f"batch {learn.pos.batch}{moved}")
    from germinate.finish import finish_run

    with _stoppable(learn):
        run_plan(learn)
        finish_run(learn, time.perf_counter() - started)
    return _final_fit(cfg, run, reporter, world) or learn


def _check_same_data(run: RunFolder, data: DataBundle, cfg: TrainConfig) -> None:
    """Refuse to resume when the files the split was built from have changed."""
    recorded = run.read_csv("split.csv")
    if not recorded:
        raise GerminateError(f"{run / 'split.csv'} is missing: the run's data cannot be checked, so it cannot be resumed")
    change = describe_change(recorded, split_rows(data, cfg.train_dir, cfg.valid_dir))
    if change:
        raise GerminateError(f"the data in {cfg.train_dir!r} changed since the run started: {change}; resuming would "
                             "move images between training and validation (restore the files, or start a new run)")
