"""Every setting of a training run in one visible place, with the recipe's defaults."""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from germinate.errors import GerminateError

# Settings whose CLI form is a switch: (flag when False, flag when True).
BOOL_FLAGS = {
    "pretrained": ("--no-pretrained", "--pretrained"),
    "use_cache": ("--no-cache", "--cache"),
    "snapshot_ensemble": ("--no-snapshot-ensemble", "--snapshot-ensemble"),
}


@dataclass
class TrainConfig:
    """A training run, resolved: saved as config.json so the run can be repeated or resumed."""

    # data
    train_dir: str = ""
    valid_dir: str | None = None
    valid_pct: float = 0.2
    limit_per_class: int | None = None
    size: int = 128
    # Evaluated larger than trained: random-crop training shows objects bigger than a plain
    # resize does, and the ImageNet backbone prefers more pixels (FixRes, Touvron et al. 2019).
    # Measured on three 128 px runs: micro-F1 +0.7 to +1.7 points at 160 px.
    test_size: int | None = None  # None: round(1.25 * size)
    cache_margin: float = 1.25  # images are cached this much larger than `size`, for zoom crops
    cache_dir: str | None = None
    use_cache: bool = True
    workers: int = 0
    # augmentation
    flip: str = "top-down"
    min_scale: float = 0.75  # milder zoom trains faster (measured: 0.35 cost 4 points in 3 epochs)
    max_rotate: float = 10.0
    max_lighting: float = 0.0  # measured to hurt on the seedlings; --max-lighting 0.2 turns it on
    # model
    arch: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    hidden: int = 512
    dropout: float = 0.5
    # optimisation
    bs: int = 32
    opt: str = "adamw"
    wd: float = 0.01
    momentum: float = 0.9
    label_smoothing: float = 0.0
    # the learning rate: "auto" runs the LR range test before each stage
    lr: float | str = "auto"
    lrs: list[float] | None = None  # explicit per-group peaks for the unfrozen stage
    lr_ratio: float = 3.0
    suggest: str = "valley"
    # stages: the head alone (body frozen), then the whole network
    freeze_epochs: int = 2  # head stage; with SGDR, cycles of one epoch each
    schedule: str = "sgdr"  # unfrozen stage: cosine | sgdr | onecycle
    epochs: int | None = None  # unfrozen stage; for SGDR derived from the cycles
    cycles: int = 4  # 1 + 2 + 4 + 8 = 15 epochs
    cycle_len: int = 1
    cycle_mult: int = 2
    warmup_pct: float = 0.0
    precompute: str = "auto"  # head stage on precomputed body features: auto | on | off
    precompute_augs: int = 1
    snapshot_ensemble: bool = False
    # evaluation
    tta: int | None = None  # views besides the plain one; None = every view the flip policy allows
    # machine
    seed: int = 42
    device: str = "auto"
    amp: str = "auto"  # bfloat16 autocast: auto (on where the device has fast bf16) | on | off
    channels_last: str = "auto"  # auto (on: measured faster on CPU and GPU) | on | off
    quiet: bool = False

    @property
    def eval_size(self) -> int:
        """Side of the images the model is validated and used at."""
        return self.test_size or round(self.size * 1.25)

    @property
    def cache_px(self) -> int:
        """Side of the square training images kept in the cache."""
        return max(self.size, round(self.size * self.cache_margin))

    @property
    def eval_cache_px(self) -> int:
        """Side of the cached images the model is evaluated (and later used) on.

        Larger than the evaluation size, so evaluation images are downsampled as training crops
        are: an image upsampled straight to the evaluation size is sharper than anything the
        network trained on (measured at 160 px: micro-F1 0.942 from a 160 px source, 0.952 to
        0.955 from 176, 192 or 240 px sources, same weights).
        """
        return round(self.eval_size * 1.2)

    def unfrozen_epochs(self) -> float:
        """Epochs of the unfrozen stage."""
        from germinate.training.schedule import sgdr_epochs

        if self.schedule == "sgdr":
            return sgdr_epochs(self.cycles, self.cycle_len, self.cycle_mult)
        return self.epochs if self.epochs is not None else 7

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys (from another version) are refused by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise GerminateError(f"config has unknown setting(s): {', '.join(unknown)}")
        return cls(**d)

    def command(self, out: str | Path) -> str:
        """The `germinate train` command line that repeats this run."""
        args = ["germinate", "train", self.train_dir, "--out", str(out)]
        default = TrainConfig()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("train_dir", "quiet") or value == getattr(default, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.name in BOOL_FLAGS:
                args.append(BOOL_FLAGS[f.name][bool(value)])
            elif isinstance(value, list):
                args += [flag, ",".join(f"{x:g}" for x in value)]
            else:
                args += [flag, str(value)]
        return " ".join(shlex.quote(a) for a in args)

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong; raise one clear GerminateError."""
        from germinate.data.augment import POLICIES
        from germinate.training.schedule import SCHEDULES

        checks = [
            (self.size >= 16, f"--size must be at least 16, got {self.size}"),
            (self.test_size is None or self.test_size >= 16, f"--test-size must be at least 16, got {self.test_size}"),
            (self.bs >= 2, f"--bs must be at least 2, got {self.bs}"),
            (self.flip in POLICIES, f"Invalid --flip {self.flip!r}; valid: {', '.join(POLICIES)}"),
            (self.schedule in SCHEDULES, f"Invalid --schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}"),
            (self.opt in ("adamw", "sgd"), f"Invalid --opt {self.opt!r}; valid: adamw, sgd"),
            (self.precompute in ("auto", "on", "off"), f"Invalid --precompute {self.precompute!r}; valid: auto, on, off"),
            (0 < self.min_scale <= 1, f"--min-scale must be in (0, 1], got {self.min_scale}"),
            (self.freeze_epochs >= 0, "--freeze-epochs must be 0 or more"),
            (self.cycles >= 0 and self.cycle_len > 0 and self.cycle_mult >= 1, "--cycles >= 0, --cycle-len > 0, --cycle-mult >= 1"),
            (self.epochs is None or self.epochs >= 0, "--epochs must be 0 or more"),
            (self.schedule != "sgdr" or self.epochs is None,
             "--epochs is for --schedule cosine/onecycle/flat; an SGDR stage lasts --cycle-len * (1 + mult + ... ) epochs: use --cycles"),
            (self.lr == "auto" or (isinstance(self.lr, float) and self.lr > 0), f"--lr must be a positive number or auto, got {self.lr}"),
            (self.lrs is None or (len(self.lrs) == 3 and all(x > 0 for x in self.lrs)), "--lrs takes three positive LRs: early,late,head"),
            (self.lr_ratio >= 1, "--lr-ratio must be at least 1"),
            (self.limit_per_class is None or self.limit_per_class >= 1, "--limit-per-class must be at least 1"),
            (self.workers >= 0, "--workers must be 0 or more"),
            (self.precompute_augs >= 1, "--precompute-augs must be at least 1"),
            (0 <= self.warmup_pct < 1, "--warmup-pct must be in [0, 1)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise GerminateError(msg)
        from germinate.models.backbones import check_arch

        check_arch(self.arch)  # before any data is read
        return self
