"""Every setting of a training run in one visible place: the default, the help text, the valid
range and the command-line flag of each live here, once. The CLI is derived from these fields,
`validate` checks them, and `command()` writes a `germinate train` line that parses back to an
equal config."""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from germinate.errors import GerminateError
from germinate.models.head import POOLS
from germinate.models.plant_mask import MASKS

# The model is validated and used at this many times the training size: random-crop training
# shows objects bigger than a plain resize does, and the ImageNet backbone prefers more pixels
# (FixRes, Touvron et al. 2019). Measured on three 128 px runs: micro-F1 +0.7 to +1.7 points.
TEST_SIZE_FACTOR = 1.25
# Evaluation images are decoded this much larger than the evaluation size, so they are
# downsampled as training crops are (measured at 160 px: micro-F1 0.942 from a 160 px source,
# 0.952 to 0.955 from 176, 192 or 240 px sources, same weights).
EVAL_SOURCE_FACTOR = 1.2
# Layer groups of every network: early body, late body, head.
N_GROUPS = 3

POLICIES = ("top-down", "side-on", "none")
SCHEDULES = ("cosine", "sgdr", "onecycle", "flat")
SUGGESTIONS = ("valley", "minimum", "steepest")
AUTO_ON_OFF = ("auto", "on", "off")


@dataclass(frozen=True)
class Bound:
    """A numeric range: lo/hi inclusive unless `*_open`; `integer` for whole numbers."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def ok(self, x: float) -> bool:
        """True when `x` is a finite number inside the range."""
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return False
        if self.integer and x != int(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self) -> str:
        """'an integer >= 0', 'a number in [0, 1)', ..."""
        what = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {self.hi:g}"
        return what


def setting(default: Any, help: str, kind: str, group: str, *, bound: Bound | None = None,
            choices: tuple[str, ...] | None = None, flags: tuple[str, ...] = (), metavar: str | None = None,
            default_text: str | None = None, cli: bool = True) -> Any:
    """A config field with what the CLI needs to offer it. kind: int, float, str, bool, lr, floats."""
    meta = {"help": help, "kind": kind, "group": group, "bound": bound, "choices": choices, "flags": flags,
            "metavar": metavar, "default_text": default_text, "cli": cli}
    return field(default=default, metadata=meta)


INT0, INT1 = Bound(0, integer=True), Bound(1, integer=True)
# The default's length, when nothing else fixes the epochs (no --epochs, --time, --size-epochs,
# SGDR cycles or --folds): as many epochs as DEFAULT_MINUTES hold on the machine it runs on (the
# speed probe of --time), at most DEFAULT_MAX_EPOCHS. A fixed 12 epochs took 7-9 minutes here and
# 15 where a new user ran it; the budget holds on any machine and spends what a faster one offers:
# 0.963 against 0.957 with TTA on fresh split seeds 21-23 side by side, 0.964 against 0.956 over
# seeds 15-23 with --time 15 or 14 (docs/results.md).
DEFAULT_MINUTES = 14.0
DEFAULT_MAX_EPOCHS = 40  # on a GPU, 14 minutes would be hundreds of epochs
# --preset best's guard, for the hour it aims at: its 24 epochs took 51-56 minutes on a slow 2-core
# machine here, and machines of this kind differ by up to 1.6x. There, its probe estimated 50.1
# minutes for the 24, which the plan's SAFETY holds in 58 minutes (not in 56). A budget that is the
# preset's own yields to a length given by hand (TrainConfig.from_preset).
BEST_MINUTES = 58.0
UNIT_OPEN = Bound(0, 1, hi_open=True)  # [0, 1)
PIXELS = Bound(16, 4096, integer=True)
# settings of the SGDR schedule only: another schedule ignores them
SGDR_ONLY = ("cycles", "cycle_len", "cycle_mult")


TRIVIAL_NEEDS_IMAGE = ("--trivial-augment makes its views one image at a time: it needs --augment image "
                       "(auto is batch on CUDA)")

# Named sets of defaults (`--preset`); settings given with a preset override it, each measured
# over three split seeds or more (README, Results; docs/accuracy.md; bench_accuracy.py). "fast" is the
# plain defaults: a plain fine-tuning loop (no head stage, no range test, one LR of 1e-3, one
# cosine), which beat the course recipe with TTA on each of split seeds 1-9 over 8 epochs, and
# with the stem and first 3 blocks fixed (1.3x faster epochs) over 12 epochs, beat that 8-epoch
# loop on each of seeds 42 and 12-14 (0.955 against 0.939 with TTA over 12-14); a warm-up over the
# first 10% of its cosine then added 0.5 with TTA over seeds 12-14 side by side; its length is
# a time budget (DEFAULT_MINUTES, TrainConfig.length_budget), not a preset setting. "best" is the
# same loop over 24 epochs, progressively resized (12 epochs at 128 px, then 12 at 192):
# 0.967 with TTA over split seeds 1-3 (tuned on 42), against 0.962 for the recipe's stages at
# 128 and 192 px (the best before it) and 0.940 for "recipe", at about twice fast's time; then
# with sharpness-aware minimisation (RHO 0.05, untuned): 0.970 with TTA over the same seeds
# (0.971, 0.973, 0.967 against 0.964, 0.969, 0.969) and 0.966 plain against 0.962 (higher on each),
# at 1.7-1.9x the time per step, within its own budget (BEST_MINUTES); on fresh seed 4 0.960
# against 0.959 (0.954 against 0.960 plain): a small edge, and a lower validation loss on each seed.
# head first, then SGDR restarts; every block trains (as the recipe was measured)
_COURSE = {"freeze_epochs": 4, "schedule": "sgdr", "fixed_blocks": 0}
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    # the course recipe: head stage, range tests, SGDR, differential LRs (the default before the plain loop)
    "recipe": {**_COURSE, "lr": "auto", "lr_ratio": 3.0, "warmup_pct": 0.0},
    # the default's loop over 24 epochs (twice its fixed 12 of before), the second half at 192 px
    # (measured without the default's warm-up), with sharpness-aware minimisation (a step 1.7-1.9x
    # as long), and its own budget: a machine too slow for all 24 epochs in BEST_MINUTES runs fewer
    "best": {"sizes": [128, 192], "epochs": 24, "warmup_pct": 0.0, "sam": 0.05, "time_budget": BEST_MINUTES},
}


@dataclass
class TrainConfig:
    """A training run, resolved: saved as config.json so the run can be repeated or resumed."""

    preset: str = setting("fast", "a named set of defaults: fast (a plain fine-tuning loop, one LR and one cosine "
                          f"after a short warm-up, the first blocks fixed, for as many epochs as {DEFAULT_MINUTES:g} "
                          "minutes hold on this machine), "
                          "recipe (the course recipe: head stage, LR range tests, SGDR, differential LRs; measured 1-2 "
                          "points lower) or best (fast's loop over 24 epochs, its second half at 192 px, with sharpness-"
                          f"aware minimisation, and as many of the 24 as {BEST_MINUTES:g} minutes hold: 0.970 with TTA "
                          "against 0.959 for 12 epochs of fast's loop on the same split seeds); options given with it "
                          "override it", "str", "recipe", choices=tuple(PRESETS))
    # data
    train_dir: str = setting("", "labelled folder: TRAIN_DIR/<class>/<image>", "str", "data", cli=False)
    valid_dir: str | None = setting(None, "a labelled folder to validate on instead of a hold-out", "str", "data",
                                    flags=("--valid",), metavar="DIR")
    valid_pct: float = setting(0.2, "fraction of each class held out for validation", "float", "data",
                               bound=Bound(0, 1, lo_open=True, hi_open=True))
    folds: int = setting(1, "K-fold: K runs, each validating on its own stratified K-th of the images (instead of "
                         "--valid-pct), so every image is validated once; out-of-fold micro-F1 reported, and the K "
                         "models, in RUN/fold-1..K, are used together (probabilities averaged); 1: off", "int", "data",
                         bound=Bound(1, 100, integer=True), metavar="K")
    fold: int = setting(0, "with --folds K, run fold I alone (1..K), a run of its own: a way to spread the folds over "
                        "machines; 0: every fold, one after another", "int", "data", bound=INT0, metavar="I")
    limit_per_class: int | None = setting(None, "use at most K images per class (quick runs)", "int", "data",
                                          bound=INT1, metavar="K", default_text="all")
    exclude: str | None = setting(None, "a CSV with a file column (paths relative to TRAIN_DIR, as in split.csv), such "
                                  "as a --folds run's label_issues.csv: those images are left out of training, after "
                                  "the split is drawn (validation keeps any it holds)", "str", "data", metavar="CSV")
    size: int = setting(128, "training image size in pixels", "int", "data", bound=PIXELS, metavar="PX")
    sizes: list[int] | None = setting(None, "progressive resizing: train at these sizes in turn, smallest first (the "
                                      "head at the first; the unfrozen SGDR cycles split over them, the last size "
                                      "getting the last cycle); replaces --size", "ints", "data", bound=PIXELS,
                                      metavar="A,B,..")
    test_size: int | None = setting(None, "size the model is validated and used at", "int", "data", bound=PIXELS,
                                    metavar="PX", default_text=f"{TEST_SIZE_FACTOR:g} x --size")
    cache_margin: float = setting(1.25, "training images are cached this many times larger than --size, for zoom crops",
                                  "float", "data", bound=Bound(1, 4))
    cache_dir: str | None = setting(None, "where decoded images are cached", "str", "data", metavar="DIR",
                                    default_text="$GERMINATE_CACHE or ~/.cache/germinate")
    use_cache: bool = setting(True, "keep decoded images in the cache (--no-cache decodes every epoch)", "bool", "data",
                              flags=("--cache",))
    workers: int | None = setting(None, "data-loading processes; 0 loads in the main process", "int", "machine",
                                  bound=INT0, default_text="auto: 0 on CPU or when the images fit on the GPU, else up to 8")
    # augmentation
    flip: str = setting("top-down", "flip policy: top-down (both axes, 90-degree turns), side-on (left-right), none",
                        "str", "augmentation", choices=POLICIES)
    # milder zoom trains faster (measured: 0.35 cost 4 points in 3 epochs)
    min_scale: float = setting(0.75, "smallest random crop, as a fraction of the image area", "float", "augmentation",
                               bound=Bound(0, 1, lo_open=True))
    max_rotate: float = setting(10.0, "largest random rotation in degrees, corners reflected", "float", "augmentation",
                                bound=Bound(0, 180))
    # measured to hurt on the seedlings; --max-lighting 0.2 turns it on
    max_lighting: float = setting(0.0, "largest brightness/contrast change, as a fraction", "float", "augmentation",
                                  bound=UNIT_OPEN)
    # timm's recipes use 0.25; on the seedlings it gained nothing over three fresh splits (docs/accuracy.md)
    erase: float = setting(0.0, "random erasing: the chance that a box of each training view (a fiftieth to a third of its "
                           "area, aspect ratio 0.3 to 3.3) is filled with a constant colour; 0: off", "float",
                           "augmentation", bound=Bound(0, 1))
    # an automatic policy (Müller and Hutter, 2021); measured in docs/accuracy.md
    trivial_augment: bool = setting(False, "TrivialAugment: each training view also gets one operation drawn from "
                                    "torchvision's TrivialAugmentWide (colour, sharpness, shear, shift, rotation) "
                                    "at a random strength; one image at a time (--augment image)", "bool",
                                    "augmentation")
    # blends of two images; measured in docs/accuracy.md
    mixup: float = setting(0.0, "mixup: each training batch blended with itself shifted by one image, labels alike; "
                           "the alpha of the Beta(alpha, alpha) the share is drawn from (0.2-0.4 is usual); 0: off",
                           "float", "augmentation", bound=Bound(0, 100))
    cutmix: float = setting(0.0, "CutMix: a box of each training image replaced by the same box of the next, labels "
                            "by area; the Beta alpha (1.0 is usual); 0: off; with --mixup, one of the two per batch",
                            "float", "augmentation", bound=Bound(0, 100))
    augment: str = setting("auto", "where training views are made: batch (all at once on the training device), "
                           "image (one at a time by torchvision on the CPU); auto: batch on CUDA, image on CPU",
                           "str", "augmentation", choices=("auto", "batch", "image"))
    mask: str = setting("none", "green: black out every pixel that is not plant (excess-green threshold, dilated), "
                        "in training and prediction; none: the whole photo", "str", "augmentation",
                        choices=MASKS)
    # model
    arch: str = setting("efficientnet_lite0", "backbone: efficientnet_lite0/1/2 (offline), resnet18..152, or a timm name",
                        "str", "model", metavar="NAME")
    pretrained: bool = setting(True, "start from pretrained weights (--no-pretrained: from scratch)", "bool", "model")
    weights: str | None = setting(None, "pretrained backbone weights (safetensors or state dict)", "str", "model",
                                  metavar="FILE")
    pool: str = setting("concat", "how the body's last feature map is pooled for the head: concat (average and max "
                        "side by side, fastai's), gem (generalised mean, its power learnt from 3)", "str", "model",
                        choices=POOLS)
    hidden: int = setting(512, "head hidden units; 0: a single linear layer", "int", "model", bound=INT0)
    dropout: float = setting(0.5, "head dropout (the first layer gets half)", "float", "model", bound=UNIT_OPEN)
    drop_path: float = setting(0.0, "stochastic depth: while training, each residual block of the body is skipped "
                               "with a probability rising with depth to this at the last block (timm models; 0.1-0.2 "
                               "is usual); 0: off", "float", "model", bound=UNIT_OPEN)
    # optimisation
    bs: int = setting(32, "batch size", "int", "optimisation", bound=Bound(2, integer=True))
    opt: str = setting("adamw", "optimizer", "str", "optimisation", choices=("adamw", "sgd"))
    wd: float = setting(0.01, "weight decay", "float", "optimisation", bound=Bound(0, 1))
    wd_norm_bias: bool = setting(True, "weight decay on normalisation scales and shifts and on biases too "
                                 "(--no-wd-norm-bias: on weight matrices and kernels only, as fastai and timm do)",
                                 "bool", "optimisation")
    momentum: float = setting(0.9, "SGD momentum, or AdamW's beta1", "float", "optimisation", bound=UNIT_OPEN)
    label_smoothing: float = setting(0.0, "label smoothing", "float", "optimisation", bound=UNIT_OPEN)
    poly: float = setting(0.0, "Poly-1 loss: cross-entropy plus EPS x (1 - the probability given to the true class), "
                          "which keeps pushing images already right towards certainty (1-2 is usual); 0: plain "
                          "cross-entropy", "float", "optimisation", bound=Bound(-1, 10), metavar="EPS")
    sam: float = setting(0.0, "sharpness-aware minimisation: each step's gradient taken again at the weights moved "
                         "this far uphill (the rho; 0.05 is usual), for 1.7-1.9x the cost of a step; 0: off", "float",
                         "optimisation", bound=Bound(0, 10), metavar="RHO")
    # SAM late in training only (Zhou et al., 2024, arXiv:2410.10373: SAM selects its flatter minima
    # late, so its last epochs give most of its gain at a fraction of its cost)
    sam_last: float = setting(1.0, "with --sam, the share of the unfrozen epochs, the last ones, that take SAM steps "
                              "(the others plain steps); 1: every epoch", "float", "optimisation",
                              bound=Bound(0, 1, lo_open=True), metavar="SHARE")
    class_weights: str = setting("none", "weight the training loss per class: balanced (n / (classes x count), every "
                                 "class counts equally), sqrt (its square root, milder) or none", "str",
                                 "optimisation", choices=("none", "balanced", "sqrt"))
    sampler: str = setting("shuffle", "how an epoch draws training images: shuffle (each once), balanced (with "
                           "replacement, every class equally often) or sqrt (each class in proportion to the "
                           "square root of its count)", "str", "optimisation", choices=("shuffle", "balanced", "sqrt"))
    # the learning rate: the head's peak; "auto" runs the LR range test before each stage
    lr: float | str = setting(1e-3, "the head's peak LR (earlier groups get lr/r, lr/r^2), or auto: the LR range "
                              "test before each stage", "lr", "recipe")
    lrs: list[float] | None = setting(None, "peak LRs of the unfrozen stage per group: early,late,head", "floats",
                                      "recipe", metavar="A,B,C")
    lr_ratio: float = setting(1.0, "differential LRs: [lr/r^2, lr/r, lr]", "float", "recipe", bound=Bound(1, 1000),
                              metavar="R")
    suggest: str = setting("valley", "range-test rule", "str", "recipe", choices=SUGGESTIONS)
    lr_find_steps: int = setting(100, "mini-batches of each LR range test (--lr auto runs one before each stage; "
                                 "fewer for a large network on a CPU, where 100 steps take minutes)", "int",
                                 "recipe", bound=Bound(10, 10000, integer=True), metavar="N")
    # stages: the head alone (body frozen), then the whole network
    freeze_epochs: int = setting(0, "head-only epochs before the whole network trains (with SGDR, "
                                 "one-epoch cycles); 0 skips the stage", "int", "recipe",
                                 bound=INT0, flags=("--freeze-epochs", "--head-cycles"), metavar="N")
    schedule: str = setting("cosine", "LR schedule", "str", "recipe", choices=SCHEDULES)
    epochs: int | None = setting(None, "unfrozen epochs; with SGDR the cycles are fitted into them; 0 skips the stage",
                                 "int", "recipe", bound=INT0, metavar="N",
                                 default_text=f"as many as {DEFAULT_MINUTES:g} minutes hold on this machine, at most "
                                              f"{DEFAULT_MAX_EPOCHS} (see --time); best: as many as "
                                              f"{BEST_MINUTES:g} minutes hold, at most {PRESETS['best']['epochs']}; "
                                              "SGDR: from the cycles; with --folds: 12")
    time_budget: float | None = setting(None, "minutes the run may take on this machine, from its start to its "
                                        "report: a short speed probe before the first step chooses --epochs to fit "
                                        "(recorded in config.json, so its command repeats the run exactly); with "
                                        "--epochs, at most that many", "float", "recipe", bound=Bound(0, lo_open=True),
                                        flags=("--time",), metavar="MIN",
                                        default_text=f"none; the default plan takes {DEFAULT_MINUTES:g}, best "
                                                     f"{BEST_MINUTES:g} (see --epochs)")
    size_epochs: list[int] | None = setting(None, "with --sizes and a schedule other than SGDR: the unfrozen epochs at "
                                            "each size, e.g. 12,8 (instead of --epochs, which shares them out evenly)",
                                            "ints", "recipe", bound=INT1, metavar="A,B,..")
    resize_lr: float = setting(1.0, "with --sizes: each later size's stage peaks at this fraction of the LR of the "
                               "size before it (1: each size restarts at the same LR)", "float", "recipe",
                               bound=Bound(0, 1, lo_open=True), metavar="F")
    cycles: int = setting(3, "SGDR cycles in the unfrozen stage; 0 skips the stage", "int", "recipe", bound=INT0)
    cycle_len: int = setting(1, "epochs in the first SGDR cycle", "int", "recipe", bound=INT1)
    cycle_mult: int = setting(2, "each SGDR cycle is this many times longer", "int", "recipe", bound=INT1)
    # 0.1: measured +0.5 points with TTA over fresh split seeds 12-14, side by side (docs/accuracy.md)
    warmup_pct: float = setting(0.1, "linear warm-up over this fraction of each stage's first cycle", "float", "recipe",
                                bound=UNIT_OPEN, default_text="0.1; recipe and best: 0")
    # 3 (the highest-resolution blocks) makes an epoch about 1.3x faster; the time goes to 12 epochs
    fixed_blocks: int = setting(3, "the body's stem and first N blocks stay as pretrained in every stage, batchnorm "
                                "included: no backward pass through them; 0: every block trains", "int", "recipe",
                                bound=INT0, metavar="N", default_text="3; recipe: 0")
    bn_reestimate: bool = setting(False, "re-estimate the frozen body's batchnorm statistics on the training images "
                                  "before the head stage (AdaBN); off keeps the pretrained ones (measured better)",
                                  "bool", "recipe")
    freeze_bn: bool = setting(False, "the body's batchnorm layers normalise with their pretrained statistics in every "
                              "stage, the unfrozen one included (their scale and shift still learn)", "bool", "recipe")
    precompute: str = setting("auto", "head stage on precomputed body features", "str", "recipe", choices=AUTO_ON_OFF)
    precompute_augs: int = setting(1, "augmented copies of the training set to precompute", "int", "recipe",
                                   bound=Bound(1, 64, integer=True), metavar="K")
    snapshot_ensemble: bool = setting(False, "average the models at each SGDR cycle end", "bool", "recipe")
    final_fit_all: bool = setting(False, "after the run, train the same plan (its LRs, no range tests) again from the "
                                  "pretrained weights on the training and validation images together; that model is "
                                  "the one exported (the validation figures stay the first fit's)", "bool", "recipe")
    # evaluation
    valid_every: int = setting(1, "validate after every N-th epoch of a stage and after its last; the epochs between "
                               "only train (on the default a validation takes 1.6 s against an epoch's 23 s)", "int",
                               "evaluation", bound=INT1, metavar="N")
    logit_adjust: float = setting(0.0, "after training, raise each class's logit by -T x log(its share of the "
                                  "training images), so rarer classes are predicted more often (post-hoc logit "
                                  "adjustment); the exported model carries it; 0 is off", "float", "evaluation",
                                  bound=Bound(0, 4), metavar="T")
    tta: int | None = setting(None, "TTA views besides the plain one for the final evaluation", "int", "evaluation",
                              bound=Bound(0, 64, integer=True), metavar="N",
                              default_text="every view the flip policy allows")
    # machine
    seed: int = setting(42, "random seed; the same seed repeats a run exactly", "int", "machine",
                        bound=Bound(0, 2**63 - 1, integer=True))
    device: str = setting("auto", "auto picks CUDA when available", "str", "machine", choices=("auto", "cpu", "cuda"))
    amp: str = setting("auto", "bfloat16 autocast: auto (CUDA, but not with --compile), on, off", "str", "machine",
                       choices=AUTO_ON_OFF)
    channels_last: str = setting("auto", "NHWC memory layout (auto: on; measured faster on CPU and GPU)", "str",
                                 "machine", choices=AUTO_ON_OFF)
    sync_bn: bool = setting(False, "with several GPUs, batchnorm statistics over all of their batches (CUDA only)",
                            "bool", "machine")
    compile: bool = setting(False, "torch.compile the network (the first steps compile it); it trains in float32 "
                                   "unless --amp on: compiled bf16 training diverged on an H200 (see the README)",
                            "bool", "machine")
    quiet: bool = setting(False, "no progress bars or tables", "bool", "machine", cli=False)

    @property
    def train_sizes(self) -> list[int]:
        """The training sizes in the order they are used: --sizes, or just --size."""
        return list(self.sizes) if self.sizes else [self.size]

    @property
    def final_size(self) -> int:
        """The size the model trains at last (the one it is used at, times the test-size factor)."""
        return self.train_sizes[-1]

    @property
    def eval_size(self) -> int:
        """Side of the images the model is validated and used at."""
        return self.test_size or round(self.final_size * TEST_SIZE_FACTOR)

    def valid_size(self, train_px: int) -> int:
        """The size validation images are shown at while training at `train_px`: the eval size,
        scaled down with --sizes (validated at 2x its training size, a 96 px model scored
        0.26-0.43 where it scores 0.8)."""
        return round(self.eval_size * train_px / self.final_size)

    @property
    def cache_px(self) -> int:
        """Side of the square training images kept in the cache (every training size crops from it)."""
        largest = max(self.train_sizes)
        return max(largest, round(largest * self.cache_margin))

    @property
    def eval_cache_px(self) -> int:
        """Side of the cached images the model is evaluated (and later used) on."""
        return round(self.eval_size * EVAL_SOURCE_FACTOR)

    def length_budget(self) -> tuple[float, int | None] | None:
        """(minutes, at most this many epochs or None) when a time budget chooses this run's epochs:
        --time (capped by --epochs when given), or the default's own budget when nothing fixes the
        epochs; None for a fixed plan. unfrozen_epochs() is the plan before the budget chooses."""
        if self.time_budget:
            return self.time_budget, self.epochs
        if self._length_unset() and self.folds == 1:
            return DEFAULT_MINUTES, DEFAULT_MAX_EPOCHS
        return None

    def own_budget(self) -> bool:
        """Whether the run's time budget is its preset's own (the default's, or best's), not --time."""
        own = PRESETS[self.preset]
        return not self.time_budget or (self.time_budget, self.epochs) == (own.get("time_budget"), own.get("epochs"))

    def _length_unset(self) -> bool:
        """Nothing sets the unfrozen stage's length (no --size-epochs, --epochs or SGDR cycles): the
        plan falls back to 12 epochs, and a single run's length is the default's budget."""
        return not self.size_epochs and self.epochs is None and self.schedule != "sgdr"

    def unfrozen_epochs(self) -> int:
        """Epochs of the unfrozen stage."""
        from germinate.training.schedule import sgdr_epochs

        if self._length_unset():
            return 12
        if self.size_epochs:
            return sum(self.size_epochs)
        if self.epochs is not None:
            return self.epochs
        return int(round(sgdr_epochs(self.cycles, self.cycle_len, self.cycle_mult)))

    def unfrozen_parts(self) -> int:
        """How many sizes the unfrozen stage can be split into: its SGDR cycles (--cycles, or as
        many as fit into --epochs), or with other schedules its epochs."""
        from germinate.training.plan import unfrozen_cycles

        return unfrozen_cycles(self)[0] if self.schedule == "sgdr" else self.unfrozen_epochs()

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_preset(cls, preset: str = "fast", **given: Any) -> TrainConfig:
        """A config from a preset's settings, then `given` on top (what the CLI does)."""
        if preset not in PRESETS:
            raise GerminateError(f"Invalid --preset {preset!r}; valid: {', '.join(PRESETS)}")
        settings = {**PRESETS[preset], "preset": preset, **given}
        # a preset's own budget guards the preset's length: a length given by hand (or K folds in
        # one go, which --time refuses) replaces it
        if "time_budget" not in given and ({"epochs", "size_epochs"} & given.keys() or
                                           settings.get("folds", 1) > 1 and not settings.get("fold")):
            settings["time_budget"] = None
        if given.get("time_budget") and "epochs" not in given:  # --time chooses them; a given --epochs caps them
            settings["epochs"] = None
        if given.get("size_epochs") and "epochs" not in given:  # a preset's --epochs yields to them
            settings["epochs"] = sum(given["size_epochs"])
        return cls(**settings)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys (from another version) are refused by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise GerminateError(f"config has unknown setting(s): {', '.join(unknown)}")
        return cls(**d)

    def command(self, out: str | Path) -> str:
        """The `germinate train` command line that repeats this run (it parses back to this config)."""
        args = ["germinate", "train", self.train_dir, "--out", str(out)]
        default = TrainConfig.from_preset(self.preset)
        if self.preset != "fast":  # the other fields are compared with the preset's
            args += ["--preset", self.preset]
        emitted = set()
        # a run whose preset's budget chose its epochs, or which was given a length instead, names
        # the length, so that the command repeats it without the budget
        unguarded = default.time_budget and not self.time_budget and self.epochs is not None
        for f in cli_fields():
            value = getattr(self, f.name)
            if value is None or value == getattr(default, f.name) and not (unguarded and f.name == "epochs"):
                continue  # None: a preset's --epochs left to --time
            emitted.add(f.name)
            flag = flag_of(f)
            if f.metadata["kind"] == "bool":
                args.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, list):
                args += [flag, ",".join(f"{x:g}" for x in value)]
            else:
                args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if emitted & set(SGDR_ONLY) and "schedule" not in emitted and self.schedule != "sgdr":
            args += ["--schedule", self.schedule]  # SGDR's options are refused with the preset's other schedule
        if self.quiet:
            args.append("--quiet")
        return " ".join(shlex.quote(a) for a in args)

    def validate(self) -> TrainConfig:
        """Check every value against its range; raise one clear GerminateError."""
        for f in dataclasses.fields(self):
            problem = check_value(f, getattr(self, f.name))
            if problem:
                raise GerminateError(problem)
        checks = [
            (self.lr == "auto" or (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)),
             f"--lr must be a positive number or auto, got {self.lr}"),
            (self.lrs is None or (len(self.lrs) == 3 and all(x > 0 for x in self.lrs)),
             "--lrs takes three positive LRs: early,late,head"),
            (not self.sizes or (len(self.sizes) >= 2 and all(a < b for a, b in zip(self.sizes, self.sizes[1:])) and
                                self.unfrozen_parts() >= len(self.sizes)),
             f"--sizes takes two or more increasing sizes, at most one per SGDR cycle (or, with other schedules, "
             f"per epoch) of the unfrozen stage ({self.unfrozen_parts()} here), got "
             f"{_joined(self.sizes)}"),
            (not self.size_epochs or self.epochs in (None, sum(self.size_epochs)),
             f"--epochs {self.epochs} and --size-epochs {_joined(self.size_epochs)} disagree: "
             f"give one of them"),
            (not self.size_epochs or (self.sizes and len(self.size_epochs) == len(self.sizes)
                                      and self.schedule != "sgdr"),
             f"--size-epochs takes one epoch count per size of --sizes ({len(self.sizes or [])} here), and not with "
             f"--schedule sgdr (its cycles decide each size's epochs), got "
             f"{_joined(self.size_epochs)}"),
            (self.resize_lr == 1 or (self.sizes and self.lr != "auto"),
             f"--resize-lr {self.resize_lr:g} needs --sizes and a fixed --lr (with --lr auto each size's range test "
             f"picks its LR)"),
            (self.fold <= self.folds and (self.folds > 1 or self.fold == 0),
             f"--fold {self.fold} needs --folds K with K >= {max(self.fold, 2)}"),
            (not (self.time_budget and self.epochs == 0), "--time with --epochs 0 leaves nothing to fit"),
            (not (self.time_budget and self.size_epochs),
             "--time chooses the epochs; it cannot be combined with --size-epochs (it shares them out over --sizes "
             "itself)"),
            (not (self.time_budget and self.folds > 1 and not self.fold),
             "--time cannot be combined with --folds: give each fold's run its own budget with --fold I"),
            (self.folds == 1 or not self.valid_dir, "--folds splits the labelled folder itself; it cannot be combined "
                                                    "with --valid"),
            (self.folds == 1 or not self.final_fit_all, "--folds and --final-fit-all cannot be combined: the K fold "
                                                        "models already use every image; pick one"),
            (not (self.final_fit_all and self.snapshot_ensemble),
             "--final-fit-all and --snapshot-ensemble cannot be combined: the snapshots would be the first fit's"),
            (not (self.trivial_augment and self.augment == "batch"), TRIVIAL_NEEDS_IMAGE),
        ]
        for ok, msg in checks:
            if not ok:
                raise GerminateError(msg)
        from germinate.models.backbones import check_arch

        check_arch(self.arch)  # before any data is read
        return self


def _joined(values: list | None) -> str:
    """A list as it is given on the command line: 128,192."""
    return ",".join(str(x) for x in values or [])


def cli_fields() -> list[dataclasses.Field]:
    """The fields the command line offers, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli")]


def flag_of(f: dataclasses.Field) -> str:
    """The field's main command-line flag."""
    return f.metadata["flags"][0] if f.metadata["flags"] else "--" + f.name.replace("_", "-")


def check_value(f: dataclasses.Field, value: Any) -> str | None:
    """Why `value` is not valid for field `f`, or None when it is."""
    if value is None or not f.metadata:
        return None
    meta = f.metadata
    name = flag_of(f) if meta.get("cli") else f.name
    if meta.get("choices") and value not in meta["choices"]:
        return f"Invalid {name} {value!r}; valid: {', '.join(meta['choices'])}"
    bound = meta.get("bound")
    for x in value if isinstance(value, list) else [value]:  # a list's bound holds for each value
        if bound is not None and not bound.ok(x):
            return f"{name} must be {bound.describe()}, got {x}"
    return None
