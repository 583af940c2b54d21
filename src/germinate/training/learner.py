"""The learner: a network, its data and an optimizer, with a fit loop that reads top to bottom.

A stage is run with `fit_stage`; `freeze`/`freeze_to`/`unfreeze` choose which layer groups train
(and a stage keeps the freeze it was planned with); `lr_find` runs the LR range test and leaves
no trace; with the body frozen, the head trains on precomputed body features. Every long loop
polls `stop_requested` (set by Ctrl-C/SIGTERM) and stops within a step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from germinate.config import N_GROUPS, TRIVIAL_NEEDS_IMAGE, TrainConfig
from germinate.data.augment import AugmentConfig, augment_images, eval_transform
from germinate.data.batch_augment import augment_batch, draw_params
from germinate.data.bundle import DataBundle
from germinate.data.loaders import EpochBatches, Feeder, index_batches, sample_seeds
from germinate.errors import GerminateError, TrainingInterrupted
from germinate.evaluate import metrics as M
from germinate.models.export import load_state_checked, save_weights
from germinate.models.fold_bn import fold_batchnorm
from germinate.models.network import Network, sync_batchnorm, with_logit_shift
from germinate.run import RunFolder
from germinate.training import checkpoint as ckpt
from germinate.training.class_weights import class_weights, logit_shift, sample_weights
from germinate.training.distributed import SINGLE, World
from germinate.training.features import pooled_features, recalibrate_bn
from germinate.training.losses import make_loss
from germinate.training.lr_find import LRFindResult, exp_lrs, run_range_test
from germinate.training.mixing import make_mixer
from germinate.training.plan import HEAD_ONLY, Position, Stage, lr_for_suggestion, stage_lrs, takes_sam
from germinate.training.sam import batchnorm_stats_kept, climb, climb_back
from germinate.training.schedule import Schedule
from germinate.training.time_budget import Deadline, Speeds, validation_sizes
from germinate.ui import SILENT, Reporter
from germinate.utils import derive_seed, resolve_device, use_bf16

BN_IMAGES = 1024  # training images the batchnorm statistics are re-estimated on
ADHOC = "fit"  # the stage name of Learner.fit, fit_sgdr and fit_one_cycle: a fit of its own, outside the plan


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    count: int = 0
    started: float = field(default_factory=time.perf_counter)


class Learner:
    """Trains a Network on a DataBundle as a TrainConfig says; notebook-friendly."""

    def __init__(self, net: Network, data: DataBundle, cfg: TrainConfig, run: RunFolder | None = None,
                 reporter: Reporter = SILENT, world: World = SINGLE):
        """`world`: this process's place in a torchrun launch (SINGLE: the only one). Only the
        main process gets a `run` folder to write."""
        self.cfg, self.data, self.run, self.reporter, self.world = cfg, data, run, reporter, world
        self.device = world.device if world.active else resolve_device(cfg.device)
        if cfg.sync_bn:
            check_sync_bn(self.device)
            if world.active:
                net = sync_batchnorm(net)  # the same parameters, new modules
        self.net = net.to(self.device)
        self.fixed_blocks = self.net.fix_blocks(cfg.fixed_blocks)
        if cfg.fixed_blocks:
            total = max(len(self.net.blocks) - 1, 0)
            if total:
                reporter.info(f"fixed as pretrained: the stem and the first {self.fixed_blocks} of {total} blocks")
            elif cfg.fixed_blocks != TrainConfig.from_preset(cfg.preset).fixed_blocks:  # asked for, not the default
                reporter.warn(f"--fixed-blocks has no effect on {cfg.arch}: germinate does not know its blocks")
            else:
                reporter.info(f"every block of {cfg.arch} trains: germinate does not know its blocks to fix")
        self.net.freeze_bn(cfg.freeze_bn)
        self.net.use_mask(cfg.mask)
        if cfg.channels_last != "off":
            self.net.use_channels_last()
        self.amp = use_bf16(cfg.amp, self.device, cfg.compile)
        if self.amp != use_bf16(cfg.amp, self.device):  # only compiling changed the choice
            reporter.info("--compile: training in float32 (compiled bf16 training diverged on a GPU; --amp on forces it)")
        self.augment_on = augment_path(cfg.augment, self.device)
        if cfg.trivial_augment and self.augment_on == "batch":
            raise GerminateError(TRIVIAL_NEEDS_IMAGE)  # auto on CUDA (the config refuses batch given by hand)
        # Compiled lazily at the first batch; it shares the parameters with self.net.
        self.model = torch.compile(self.net) if cfg.compile else self.net
        self.aug = AugmentConfig(cfg.train_sizes[0], cfg.flip, cfg.min_scale, cfg.max_rotate, cfg.max_lighting,
                                 cfg.erase, cfg.trivial_augment)
        weights = class_weights(data.train.labels, len(data.classes), cfg.class_weights)
        self.loss_fn = make_loss(
            None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=self.device),
            cfg.label_smoothing, cfg.poly)
        # Image batches only: the head stage's precomputed features are not mixed.
        self.mixer = make_mixer(cfg.mixup, cfg.cutmix, len(data.classes))
        self.opt = self._make_optimizer()
        self.plan: list[Stage] = []
        self.pos = Position()
        self.history: list[dict[str, Any]] = []
        self.lr_log: list[dict[str, Any]] = []
        self.lr_finds: dict[str, LRFindResult] = {}
        self.best_f1 = -1.0
        # False for a final fit on all the data: its validation images are training images, so
        # epochs are not validated (nor a best epoch kept).
        self.validating = True
        self.frozen_groups = 0
        self.stop_requested = False
        self._epoch = _EpochStats()
        self._features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._feeders: dict[str, Feeder] = {}
        self._ddp: tuple[tuple, nn.Module] | None = None  # (what it wraps, DistributedDataParallel)
        self.ranks_identical = True  # checked at the end of a distributed run
        self.budget: dict | None = None  # --time: what the speed probe measured and chose
        self.deadline: Deadline | None = None  # --time: may cut or lengthen stages as the pace goes
        self.on_cut: Callable[[], None] | None = None  # told when the deadline changed the plan (config.json)
        self.resumed_from_world = world.size

    # ---- layer groups -------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = []
        self._group_layer = []  # the layer group of each optimizer group (not a group key: a checkpoint's groups replace them)
        for g, params in enumerate(self.net.layer_groups):
            if self.cfg.wd_norm_bias:
                groups.append({"params": params})
                self._group_layer.append(g)
            else:  # one-dimensional tensors (norm scales and shifts, biases) take no decay
                groups += [{"params": [p for p in params if p.ndim > 1]},
                           {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
                self._group_layer += [g, g]
        # One fused kernel over all the parameters instead of a loop of small ones: on a CPU the
        # AdamW step of Lite0 fell from 11 to 2.4 ms (of a 290 ms training step).
        fused = self.device.type in ("cpu", "cuda")
        if self.cfg.opt == "sgd":
            return torch.optim.SGD(groups, lr=1e-3, momentum=self.cfg.momentum, weight_decay=self.cfg.wd, nesterov=True,
                                   fused=fused)
        return torch.optim.AdamW(groups, lr=1e-3, betas=(self.cfg.momentum, 0.99), weight_decay=self.cfg.wd, fused=fused)

    def freeze_to(self, n: int) -> None:
        """Freeze the first `n` layer groups; their normalisation layers keep training."""
        self.frozen_groups = n
        for g, params in enumerate(self.net.layer_groups):
            for p in params:
                p.requires_grad_((g >= n or id(p) in self.net.norm_params) and id(p) not in self.net.fixed_params)

    def use_size(self, px: int | None) -> None:
        """Train at `px` pixels from now on (None: the config's final size); features
        precomputed at another size are dropped."""
        px = px or self.cfg.final_size
        if px != self.aug.size:
            self.aug = dataclasses.replace(self.aug, size=px)
            self._features = None

    def freeze(self) -> None:
        """Train the head only (the body's batchnorm layers still train)."""
        self.freeze_to(HEAD_ONLY)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    @property
    def is_frozen(self) -> bool:
        """True when the whole body is frozen."""
        return self.frozen_groups >= HEAD_ONLY

    def _set_lrs(self, lrs: list[float], momentum: float | None = None) -> None:
        """One LR per layer group (each may hold two optimizer groups: with and without decay)."""
        for group, g in zip(self.opt.param_groups, self._group_layer, strict=True):
            group["lr"] = lrs[g]
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum

    # ---- stopping -------------------------------------------------------------------------
    def request_stop(self) -> bool:
        """Ask every loop to stop at its next safe point; returns whether one was already asked."""
        already, self.stop_requested = self.stop_requested, True
        return already

    def _stop_if_requested(self, save: bool, agreed: bool = False) -> None:
        """Raise TrainingInterrupted if a stop was asked for. `save`: the learner is at a resumable
        point (after a step, or validating), so checkpoint it; otherwise the run folder's last
        checkpoint (written at the stage start) is where a resume continues.

        With several processes the ranks first agree (one collective; `agreed`: already done at
        this point), so that all stop at the same step; the others wait while rank 0 writes the
        checkpoint, since the launcher ends them all once one has exited.
        """
        if not agreed:
            self.stop_requested = self.world.any(self.stop_requested)
        if not self.stop_requested:
            return
        if save:
            self.save_checkpoint()
        self.world.barrier()
        raise TrainingInterrupted(str(self.run.path if self.run else "."))

    def check_stop_unsaved(self) -> None:
        """Stop here if asked, leaving the run folder's last checkpoint as the resume point."""
        self._stop_if_requested(save=False)

    # ---- batches --------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _feeder(self, split: str) -> Feeder:
        """The uint8 images of a split on the device (kept there on a GPU when they fit)."""
        if split not in self._feeders:
            self._feeders[split] = Feeder(getattr(self.data, split).source, self.device, self.cfg.workers)
        return self._feeders[split]

    def augmented(self, batches: list[np.ndarray], key: tuple) -> Iterator[torch.Tensor]:
        """Training views of these batches of training images, each sample under the seed
        (run seed, *key, index), augmented as a batch on the device."""
        if self.augment_on == "image":
            for idx in batches:
                seeds = sample_seeds(self.cfg.seed, key, idx)
                yield augment_images(self.data.train.source, idx, seeds, self.aug).to(self.device, non_blocking=True)
            return
        # Every batch's parameters drawn up front (milliseconds an epoch): nothing but kernel
        # launches is left between two steps.
        params = [draw_params(sample_seeds(self.cfg.seed, key, idx), self.aug) for idx in batches]
        for p, x in zip(params, self._feeder("train")(batches)):
            yield augment_batch(x, p, self.aug.size)

    @property
    def valid_size(self) -> int:
        """The size validation images are shown at now (TrainConfig.valid_size)."""
        return self.cfg.valid_size(self.aug.size)

    def plain(self, split: str, batches: list[np.ndarray], size: int | None = None) -> Iterator[torch.Tensor]:
        """Deterministic views (the whole image resized to `size`, default the validation size)."""
        resize = eval_transform(size or self.valid_size)
        for x in self._feeder(split)(batches):
            yield resize(x)

    def _train_batches(self, key: tuple, start: int, precompute: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of one epoch from batch `start`: images, or precomputed features."""
        batches = self._epoch_batches()
        batches.set_epoch(key, start)
        todo = [self.world.my_slice(b) for b in batches]  # each rank its part of every global batch
        labels = torch.as_tensor(self.data.train.labels, device=self.device)
        if precompute:
            feats, _ = self._precomputed()
            copy_idx = key[-1] % feats.shape[0] if isinstance(key[-1], int) else 0  # epoch e: copy e % K
            for idx in todo:
                idx_t = torch.as_tensor(idx, device=self.device)
                yield feats[copy_idx][idx_t], labels[idx_t]
            return
        for idx, x in zip(todo, self.augmented(todo, key)):
            yield x, labels[torch.as_tensor(idx, device=self.device)]

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one training epoch (a step takes --bs images on every process)."""
        return len(self._epoch_batches())

    def _epoch_batches(self) -> EpochBatches:
        """The global batches of a training epoch (every process's share of each), as --sampler draws them."""
        weights = sample_weights(self.data.train.labels, len(self.data.classes), self.cfg.sampler)
        return EpochBatches(len(self.data.train), self.cfg.bs * self.world.size, self.cfg.seed, weights=weights)

    # ---- the frozen body: batchnorm statistics and precomputed features ------------------------
    def recalibrate_bn(self, max_images: int = BN_IMAGES) -> None:
        """Re-estimate the body's batchnorm statistics on augmented training images.

        The pretrained running statistics describe ImageNet, not these photos: features computed
        with them differ from what the same body produces in training mode (AdaBN).
        """
        self._features = None  # features computed with the old statistics are stale
        gbs = self.cfg.bs * self.world.size
        n = min(max_images, len(self.data.train))
        n -= n % gbs if n > gbs else 0  # whole batches: a tiny last one skews the average
        batches = [self.world.my_slice(b) for b in index_batches(n, gbs)]
        with self.reporter.progress("recalibrating batchnorm", len(batches)) as advance:
            recalibrate_bn(self.net, _advancing(self.augmented(batches, ("bn",)), advance), self.device,
                           self._autocast, self.check_stop_unsaved)
        # Each rank averaged over as many batches as the others: the mean of the ranks' averages
        # is the average over every batch.
        self._average_statistics()

    def _precomputed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled body features of K augmented copies of the training set, and of the validation
        set; computed once per frozen body."""
        if self._features is None:
            # Each rank computes its share; every rank gets all of them, to train the same head.
            n, nv, k, bs = len(self.data.train), len(self.data.valid), self.cfg.precompute_augs, self.cfg.bs * 2
            train, valid = self.world.shard_batches(n, bs), self.world.shard_batches(nv, bs)
            copies = [self._features_of(self.augmented(train, ("precompute", c)), len(train), n,
                                        f"precomputing features {c + 1}/{k}") for c in range(k)]
            vfeats = (self._features_of(self.plain("valid", valid), len(valid), nv, "precomputing validation features")
                      if self.validating else torch.empty(0))
            self._features = (torch.stack(copies), vfeats)
        return self._features

    def _features_of(self, images: Iterator[torch.Tensor], count: int, n: int, what: str) -> torch.Tensor:
        with self.reporter.progress(what, count) as advance:
            mine = pooled_features(self.net, _advancing(images, advance), self.device, self._autocast,
                                   self.check_stop_unsaved)
        return self.world.gather_rows(mine, n)

    # ---- one step, one epoch, one stage -----------------------------------------------------
    def _forward(self, x: torch.Tensor, precompute: bool) -> torch.Tensor:
        return self.net.head(x) if precompute else self.model(x)

    def _trainable(self, precompute: bool) -> nn.Module:
        """What a training step runs: the network (or the head alone, on features); with several
        processes wrapped in DistributedDataParallel, which averages the gradients. DDP takes
        the parameters that require gradients when it is built, so a new freeze gets a new one."""
        if not self.world.active:
            return self.net.head if precompute else self.model
        key = (precompute, self.frozen_groups)
        if self._ddp is None or self._ddp[0] != key:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self._ddp = None  # the old wrapper's gradient hooks go with it
            target = self.net.head if precompute else self.net
            ddp = DDP(target, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._ddp = (key, torch.compile(ddp) if self.cfg.compile and not precompute else ddp)
        return self._ddp[1]

    def _step(self, x: torch.Tensor, y: torch.Tensor, precompute: bool, sam: bool = False) -> float:
        """One optimizer step on this process's batch (a SAM step when `sam` and --sam is on);
        returns its loss (this process's)."""
        if self.mixer is not None and not precompute:
            x, y = self.mixer(x, y)  # soft labels: the loss takes class probabilities
        model = self._trainable(precompute)
        with self._autocast():
            out = model(x)
        loss = self.loss_fn(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if sam and self.cfg.sam:
            # The gradient again at the weights moved uphill (with several processes, along the
            # averaged gradient, so every rank moves alike); the step is taken from where they were.
            moved = climb([p for g in self.opt.param_groups for p in g["params"]], self.cfg.sam)
            self.opt.zero_grad(set_to_none=True)
            with self._autocast(), batchnorm_stats_kept(self.net):
                self.loss_fn(model(x).float(), y).backward()
            climb_back(moved)
        self.opt.step()
        return float(loss.detach())

    def _agree(self, loss: float) -> float:
        """The step's loss averaged over processes, and whether any was asked to stop (one
        collective for both, so that every process stops after the same step)."""
        if not self.world.active:
            return loss
        mean_loss, stop = self.world.mean([loss, float(self.stop_requested)])
        self.stop_requested = stop > 0
        return mean_loss

    def _set_mode(self, precompute: bool) -> None:
        self.net.train()
        if precompute:
            self.net.body.eval()  # features were computed in eval mode; keep it that way

    def uses_precompute(self, stage: Stage) -> bool:
        """Whether `stage` trains the head on precomputed body features."""
        return stage.precompute and stage.head_only

    def _train_epoch(self, stage: Stage, sched: Schedule, epoch: int) -> float:
        spe, precompute = sched.steps_per_epoch, self.uses_precompute(stage)
        if self.pos.batch == 0:
            self._epoch = _EpochStats()
        self._set_mode(precompute)
        batches = self._train_batches((self.pos.stage, epoch), self.pos.batch, precompute)
        sam = takes_sam(*self._sam_plan(stage), epoch, self.cfg.sam_last)
        with self.reporter.progress(f"{stage.name} {epoch + 1}/{stage.n_epochs()}", spe - self.pos.batch) as advance:
            for b, (x, y) in enumerate(batches, start=self.pos.batch):
                step = epoch * spe + b
                lrs = [p * sched.lr_mult(step) for p in stage.lrs]
                self._set_lrs(lrs, sched.momentum(step))
                # Dropout's random numbers from the step's position: a resumed run draws the same.
                torch.manual_seed(derive_seed(self.cfg.seed, "step", self.pos.stage, epoch, b, self.world.rank))
                loss = self._agree(self._step(x, y, precompute, sam))
                if not math.isfinite(loss):
                    raise GerminateError(
                        f"the training loss became {loss} in {stage.name} epoch {epoch + 1}: the LR is too high "
                        f"({lrs[-1]:.2e}); try a lower --lr"
                    )
                self._epoch.loss_sum += loss
                self._epoch.count += 1
                self.lr_log.append({"step": len(self.lr_log), "epoch": epoch + 1, "stage": stage.name,
                                    **{f"lr_group{g}": f"{lr:.6g}" for g, lr in enumerate(lrs)}})
                self.pos.batch = b + 1
                advance(loss=f"{self._epoch.loss_sum / self._epoch.count:.3f}")
                self._stop_if_requested(save=True, agreed=True)
        return self._epoch.loss_sum / max(self._epoch.count, 1)

    def _sam_plan(self, stage: Stage) -> tuple[list[Stage], int]:
        """The stages --sam-last shares its SAM epochs over, and `stage`'s place among them: the
        run's plan for a stage of it; the stage alone for a fit of its own (Learner.fit and the
        like in a notebook, or fit_stage on a stage outside the plan), which is its own run."""
        i = self.pos.stage
        if stage.name != ADHOC and i < len(self.plan) and self.plan[i] == stage:
            return self.plan, i
        return [stage], 0

    def fit_stage(self, stage: Stage) -> None:
        """Run `stage` from the current position to its end (validating after every --valid-every-th epoch
        and the last)."""
        if stage.lrs is None:
            raise GerminateError(f"stage {stage.name} has no learning rates")
        self.freeze_to(stage.frozen_groups)
        self.use_size(stage.size)
        sched = stage.make_schedule(self.steps_per_epoch())
        # Cycle ends, but the run's last: that is the final model itself (with --sizes, the
        # stages before the last end on a cycle end too, which a deadline's change moves).
        last = self.pos.stage == len(self.plan) - 1
        while self.pos.epoch < stage.n_epochs():
            epoch = self.pos.epoch
            train_loss = self._train_epoch(stage, sched, epoch)
            self._average_statistics()
            seconds = time.perf_counter() - self._epoch.started
            row = {"stage": stage.name, "epoch": epoch + 1, "train_loss": train_loss,
                   **(self._validate(self.uses_precompute(stage)) if self._validates(stage, epoch) else {})}
            self.history.append({**row, "seconds": seconds})
            stage, sched = self._keep_to_deadline(stage, sched, epoch + 1, time.perf_counter() - self._epoch.started)
            cycle_ends = {end // sched.steps_per_epoch for _, end in sched.cycle_bounds()[:-1 if last else None]}
            self.pos.epoch, self.pos.batch = epoch + 1, 0
            self._epoch = _EpochStats()
            self._after_epoch(row, seconds, snapshot=stage.frozen_groups == 0 and epoch + 1 in cycle_ends)
        if not self.uses_precompute(stage):
            self._features = None  # the body (or its batchnorm statistics) changed
        self.pos = Position(self.pos.stage + 1)

    def _keep_to_deadline(self, stage: Stage, sched: Schedule, done: int, seconds: float) -> tuple[Stage, Schedule]:
        """After `done` epochs of the stage, the last taking `seconds`: with a Deadline, the
        stage cut short when the pace would carry the run past its budget (the last stage), or
        lengthened when it would leave time unused (rank 0 decides for all); else as it was."""
        if self.deadline is None:
            return stage, sched
        was = stage.n_epochs()
        now = time.perf_counter()
        epochs = self.world.broadcast(self.deadline.check(self.pos.stage, done, was, seconds, now, self.plan))
        if epochs is None:
            return stage, sched
        pace, planned = self.deadline.pace, self.deadline.epoch_s
        if epochs < was:  # the pace may still be quicker than planned (after a lengthening): say what it is
            self.reporter.warn(
                f"epochs now take {pace:.1f} s ({planned:.1f} s planned), too slow to end within the time budget: "
                f"stage {stage.name} is cut from {was} to {epochs} epochs")
        else:
            self.reporter.info(
                f"epochs now take {pace:.1f} s ({planned:.1f} s planned): stage {stage.name} is lengthened "
                f"from {was} to {epochs} epochs to use the time budget")
        stage = self.plan[self.pos.stage] = stage.cut_to(done, epochs)
        if self.budget is not None:
            self.budget["cuts"] = [*self.budget.get("cuts", []),
                                   {"stage": stage.name, "after_epoch": done, "from": was, "epochs": epochs,
                                    "epoch_s": round(pace, 2)}]
        if self.on_cut is not None:
            self.on_cut()
        return stage, stage.make_schedule(sched.steps_per_epoch)

    def _validates(self, stage: Stage, epoch: int) -> bool:
        """Whether `epoch` (0-based) of `stage` is validated: every --valid-every-th and the stage's last."""
        return self.validating and stage.validates(epoch, self.cfg.valid_every)

    def _average_statistics(self) -> None:
        """With several processes: batchnorm running statistics averaged over them (DDP gives
        every forward rank 0's, but the last step leaves each process its own batch's), so that
        all validate, save and go on with the same model."""
        if self.world.active:
            self.world.average_([b for name, b in self.net.named_buffers()
                                 if b.is_floating_point() and name.rsplit(".", 1)[-1].startswith("running_")])

    def _after_epoch(self, row: dict, seconds: float, snapshot: bool) -> None:
        self.reporter.epoch_row(row, seconds)
        if self.run is None:
            return
        if "f1_micro" in row and row["f1_micro"] > self.best_f1:
            self.best_f1 = row["f1_micro"]
            save_weights(self.net, self.run.best, len(self.data.classes))
        if snapshot and self.cfg.snapshot_ensemble:  # used only at predict time: saved as exported
            save_weights(self.exported_net(), self.run / f"snapshot-{len(self.history)}.safetensors",
                         len(self.data.classes))
        self.save_checkpoint()

    def exported_net(self) -> Network:
        """The network as it is exported: with --logit-adjust, a copy whose logits carry the
        class-prior shift of this learner's training images; otherwise the network itself."""
        shift = logit_shift(self.data.train.labels, len(self.data.classes), self.cfg.logit_adjust)
        return self.net if shift is None else with_logit_shift(self.net, shift)

    # ---- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def _valid_logits(self, precompute: bool) -> torch.Tensor:
        self.net.eval()
        if precompute:
            return self.net.head(self._precomputed()[1]).float()
        batches = self.world.shard_batches(len(self.data.valid), self.cfg.bs)  # this rank's share
        net = fold_batchnorm(self.net, self.valid_size)  # the same function, faster (fold_bn.py)
        out = []
        with self.reporter.progress("validating", len(batches)) as advance:
            for x in self.plain("valid", batches):
                self._stop_if_requested(save=True)  # the last step's state is complete: resumable
                with self._autocast():
                    out.append(net(x).float())
                advance()
        return self.world.gather_rows(torch.cat(out), len(self.data.valid))

    def _validate(self, precompute: bool = False) -> dict[str, float]:
        probs = self._valid_logits(precompute).softmax(1).cpu().numpy()
        labels = self.data.valid.labels
        return {"valid_loss": float(M.cross_entropy(probs, labels).mean()),
                **M.summary(labels, probs.argmax(1), len(self.data.classes))}

    def validate(self) -> dict[str, float]:
        """Validation loss, accuracy, micro- and macro-F1 of the current model."""
        return self._validate(False)

    # ---- the LR range test -------------------------------------------------------------------------
    def lr_find(self, start: float = 1e-7, end: float = 10.0, steps: int = 100, stop_div: float = 4.0,
                suggest: str = "valley", probe: int = 64) -> LRFindResult:
        """Run the LR range test on the current freeze state and restore everything afterwards.

        Every group gets the same LR during the test (as in fastai). Its `suggestion` is "the LR"
        (the head's peak, see training/plan.py): pass it to `fit_sgdr` or `--lr` to train as
        `--lr auto` does. After each step the loss is measured on one fixed batch of `probe`
        training images (eval mode, no gradient): batch-to-batch variation otherwise swamps the
        curve once the network already learns. `probe=0` uses the training batch's loss.
        """
        lrs = exp_lrs(start, end, steps)
        precompute = self.is_frozen and self.precompute_enabled()
        if precompute:
            self._precomputed()  # outside the timed test, and kept for the stage that follows
        with self._leaving_no_trace():
            batches = self._endless_batches(precompute)
            fixed = self._probe_batch(precompute, probe) if probe else None
            with self.reporter.progress("LR range test", steps) as advance:
                def step(lr: float) -> float:
                    self.check_stop_unsaved()
                    self._set_mode(precompute)
                    self._set_lrs([lr] * len(self.net.layer_groups))
                    x, y = next(batches)
                    loss = self._step(x, y, precompute, sam=self.cfg.sam_last >= 1)  # as the stage's first epoch
                    if fixed is not None:
                        loss = self._probe_loss(*fixed, precompute)
                    loss = self.world.mean([loss])[0]  # every rank reads the same curve
                    advance(lr=f"{lr:.1e}", loss=f"{loss:.3f}")
                    return loss

                losses = run_range_test(step, lrs, stop_div)
        scale = lr_for_suggestion(1.0, self.frozen_groups, self.cfg.lr_ratio)
        # Rank 0's reading for everyone: the same LRs on every rank, whatever rounding differs.
        return self.world.broadcast(LRFindResult.from_curve(lrs, np.asarray(losses), suggest, scale))

    # ---- the speed probe (--time) --------------------------------------------------------------------
    def measure_speeds(self, steps: int = 8, warmup: int = 2) -> Speeds:
        """Time `steps` training steps (after `warmup` untimed ones) at each training size, the
        whole network as an unfrozen stage trains it, and evaluation forward passes at each size
        validation runs at (with --sam-last below 1, plain and SAM steps both); then restore
        everything, as `lr_find` does. Every process measures;
        rank 0's figures are everyone's, so all plan the same epochs."""
        step_s, sam_step_s, image_s = {}, {}, {}
        mixed = bool(self.cfg.sam) and self.cfg.sam_last < 1  # epochs of both kinds: both timed
        with self._leaving_no_trace():
            self.freeze_to(0)
            self._set_lrs([0.0] * len(self.net.layer_groups))
            for size in self.cfg.train_sizes:
                self.use_size(size)
                self._set_mode(False)
                batches = self._endless_batches(False, "speed probe")
                step_s[size] = self._timed(lambda: self._step(*next(batches), False, not mixed), steps, warmup)
                if mixed:
                    sam_step_s[size] = self._timed(lambda: self._step(*next(batches), False, True), steps, warmup)
            self.net.eval()
            n = min(self.cfg.bs, len(self.data.valid))
            idx = [np.arange(n)]
            for size in validation_sizes(self.cfg):
                net = fold_batchnorm(self.net, size)

                def forward() -> None:
                    self.check_stop_unsaved()
                    with torch.no_grad(), self._autocast():
                        net(next(self.plain("valid", idx, size))).float().cpu()

                image_s[size] = self._timed(forward, 2, 1) / n
            with tempfile.TemporaryDirectory() as tmp:  # an epoch writes a checkpoint (and the best weights)
                started = time.perf_counter()
                ckpt.save_checkpoint(self.state_dict(), Path(tmp) / "last.pt")
                save_s = time.perf_counter() - started
        speeds = Speeds(step_s, image_s, save_s, self.steps_per_epoch(), len(self.data.train),
                        len(self.world.shard(len(self.data.valid))), sam_step_s)
        return self.world.broadcast(speeds)

    @contextlib.contextmanager
    def _leaving_no_trace(self) -> Iterator[None]:
        """Steps taken inside (a range test, the speed probe) leave no trace: the weights, the
        optimizer state (LRs included), the random state, the training size and the freeze are
        restored afterwards. Features precomputed at the restored size stay (the weights they
        came from are restored); use_size drops them if the size changed inside."""
        saved = (copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.opt.state_dict()), ckpt.rng_state(),
                 self.aug.size, self.frozen_groups)
        try:
            yield
        finally:
            self.net.load_state_dict(saved[0])
            self.opt.load_state_dict(saved[1])
            ckpt.set_rng_state(saved[2])
            self.use_size(saved[3])
            self.freeze_to(saved[4])

    def _timed(self, fn, times: int, warmup: int) -> float:
        """Mean seconds of `fn()` over `times` calls after `warmup` untimed ones (the mean: an
        epoch costs the sum of its steps, slow ones included)."""
        seconds = []
        for i in range(warmup + times):
            self.check_stop_unsaved()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            started = time.perf_counter()
            fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if i >= warmup:
                seconds.append(time.perf_counter() - started)
        return float(np.mean(seconds))

    def _probe_batch(self, precompute: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, evenly spread batch of training images (deterministic view) or their features."""
        train = self.data.train
        idx = np.linspace(0, len(train) - 1, min(n, len(train))).round().astype(int)
        y = torch.as_tensor(train.labels[idx], device=self.device)
        if precompute:
            return self._precomputed()[0][0][torch.as_tensor(idx, device=self.device)], y
        return next(self.plain("train", [idx], self.aug.size)), y

    @torch.no_grad()
    def _probe_loss(self, x: torch.Tensor, y: torch.Tensor, precompute: bool) -> float:
        self.net.eval()
        with self._autocast():
            out = self._forward(x, precompute)
        return float(nn.functional.cross_entropy(out.float(), y))

    def _endless_batches(self, precompute: bool, name: str = "lr_find") -> Iterator:
        for i in range(1_000_000):
            yield from self._train_batches((name, i), 0, precompute)

    def precompute_enabled(self) -> bool:
        """Whether a frozen stage trains the head on precomputed features (auto: yes)."""
        return self.cfg.precompute in ("auto", "on")

    # ---- notebook-style fitting ------------------------------------------------------------------
    def fit(self, epochs: int, lr: float | list[float], schedule: str = "cosine", **kw: Any) -> None:
        """Train `epochs` epochs at "the LR" `lr` (the head's peak; or one value per group), in the
        current freeze state."""
        self._fit_adhoc(Stage(ADHOC, self.frozen_groups, schedule, epochs, lrs=self._peaks(lr), **kw))

    def fit_sgdr(self, cycles: int, lr: float | list[float], cycle_len: int = 1, cycle_mult: int = 1) -> None:
        """SGDR: `cycles` cosine cycles, the first `cycle_len` epochs, each next `cycle_mult` times longer."""
        self._fit_adhoc(Stage(ADHOC, self.frozen_groups, "sgdr", cycles=cycles, cycle_len=cycle_len,
                              cycle_mult=cycle_mult, lrs=self._peaks(lr)))

    def fit_one_cycle(self, epochs: int, lr: float | list[float]) -> None:
        """One cycle: warm up to `lr`, then anneal, momentum moving the other way."""
        self._fit_adhoc(Stage(ADHOC, self.frozen_groups, "onecycle", epochs, lrs=self._peaks(lr)))

    def _peaks(self, lr: float | list[float]) -> tuple[float, ...]:
        if isinstance(lr, (list, tuple)):
            if len(lr) != N_GROUPS:
                raise GerminateError(f"give one LR or {N_GROUPS} (early body, late body, head), got {len(lr)}")
            return tuple(float(x) for x in lr)
        return tuple(stage_lrs(float(lr), self.frozen_groups, self.cfg.lr_ratio))

    def _fit_adhoc(self, stage: Stage) -> None:
        precompute = stage.head_only and self.precompute_enabled()
        self.plan.append(dataclasses.replace(stage, precompute=precompute))
        self.pos = Position(len(self.plan) - 1)
        self.fit_stage(self.plan[-1])

    # ---- checkpoints and logs ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (weights-only-safe types)."""
        return ckpt.learner_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by state_dict()."""
        if state.get("format") != "germinate-checkpoint":
            raise GerminateError("not a germinate checkpoint")
        if state["arch"] != self.net.arch or list(state["classes"]) != list(self.data.classes):
            raise GerminateError(
                f"checkpoint is for {state['arch']} with {len(state['classes'])} classes, "
                f"this run is {self.net.arch} with {len(self.data.classes)} classes"
            )
        load_state_checked(self.net, state["model"], "checkpoint")
        self.opt.load_state_dict(state["optimizer"])
        self.plan = [Stage.from_dict(s) for s in state["plan"]]
        self.pos = Position(**state["position"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world.size and self.pos.batch:
            # Same images consumed so far, counted in this world's (larger or smaller) steps; a
            # step that straddles the old position is taken again in full.
            self.pos.batch = self.pos.batch * saved_world // self.world.size
        self.resumed_from_world = saved_world
        self._epoch = _EpochStats(*state["epoch_stats"])
        self.history, self.lr_log, self.best_f1 = list(state["history"]), list(state["lr_log"]), state["best_f1"]
        ckpt.set_rng_state(state["rng"])

    def ranks_agree(self) -> bool:
        """Whether every process holds bit-identical weights and statistics (always, with one)."""
        if not self.world.active:
            return True
        fingerprint = torch.tensor([float(t.double().sum()) for t in self.net.state_dict().values()],
                                   dtype=torch.float64)
        mean = torch.tensor(self.world.mean(fingerprint.tolist()), dtype=torch.float64)
        return not self.world.any(not torch.equal(fingerprint, mean))

    def save_checkpoint(self) -> None:
        """Write the resumable checkpoint and the logs into the run folder."""
        if self.run is not None:
            ckpt.save_checkpoint(self.state_dict(), self.run.checkpoint)
            self.write_logs()

    def write_logs(self) -> None:
        """metrics.csv (identical for identical runs), timings.csv and lrs.csv."""
        if self.run is not None:
            ckpt.write_logs(self.run, self.history, self.lr_log)


def augment_path(setting: str, device: torch.device) -> str:
    """Where training views are made: "batch" (the batch at once, on the training device) or
    "image" (one at a time by torchvision on the CPU). auto: batch on CUDA, where per-image CPU
    work starves the GPU; image on CPU, where the two run at the same speed and the per-image
    views trained better (see the README's speed section)."""
    if setting != "auto":
        return setting
    return "batch" if device.type == "cuda" else "image"


def check_sync_bn(device: torch.device) -> None:
    """--sync-bn needs CUDA: PyTorch's SyncBatchNorm has no CPU implementation."""
    if device.type != "cuda":
        raise GerminateError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on the CPU); drop it")


def _advancing(batches, advance) -> Iterator:
    """Yield from `batches`, advancing a progress bar after each."""
    for b in batches:
        yield b
        advance()
