"""The resolved settings: defaults derived from others, and validation of impossible ones."""

import itertools
import re
from pathlib import Path

import pytest

from germinate.config import TrainConfig
from germinate.errors import GerminateError


def test_test_size_defaults_to_a_quarter_more_than_the_training_size_and_the_cache_holds_it():
    assert TrainConfig(size=128).eval_size == 160
    assert TrainConfig(size=224).eval_size == 280
    cfg = TrainConfig(size=128, test_size=200)
    assert cfg.eval_size == 200 and cfg.eval_cache_px >= 200
    # cached larger than used, so that evaluation images are downsampled like training crops
    assert TrainConfig(size=128).cache_px == 160 and TrainConfig(size=128).eval_cache_px == 192
    assert TrainConfig(size=128, test_size=100, cache_margin=2.0).cache_px == 256


def test_validation_scales_the_eval_size_with_a_smaller_training_size():
    cfg = TrainConfig(sizes=[96, 128])  # the final size 128 is used at 160
    assert (cfg.valid_size(96), cfg.valid_size(128)) == (120, 160)
    assert TrainConfig(sizes=[128, 192], test_size=200).valid_size(128) == 133


def test_a_tiny_test_size_is_refused():
    with pytest.raises(GerminateError, match="--test-size"):
        TrainConfig(size=64, test_size=8).validate()


# ---- one source of truth ------------------------------------------------------------------------
import dataclasses  # noqa: E402
import shlex  # noqa: E402

from germinate.cli import _config_from, build_parser  # noqa: E402
from germinate.config import cli_fields, flag_of  # noqa: E402


def _parse_command(command: str) -> TrainConfig:
    args = build_parser().parse_args(shlex.split(command)[1:])
    return _config_from(args)


def _everything_changed() -> TrainConfig:
    """A config with every setting away from its default (and valid, but for --final-fit-all with
    --snapshot-ensemble, --folds with --valid or --final-fit-all, which validate() refuses together)."""
    return TrainConfig(
        preset="best", sizes=[64, 96], bn_reestimate=True, fixed_blocks=5, freeze_bn=True, train_dir="/data/seed lings/train", valid_dir="/data/valid", valid_pct=0.2, folds=5, fold=2, limit_per_class=7, exclude="/data/issues.csv", size=96,
        test_size=120, cache_margin=1.5, cache_dir="/tmp/a cache", use_cache=False, workers=3, flip="side-on", augment="image", trivial_augment=True,
        min_scale=0.5, mask="green", max_rotate=20.0, max_lighting=0.1, erase=0.25, mixup=0.2, cutmix=1.0, arch="resnet18", pretrained=False, weights="/w.safetensors",
        pool="gem", hidden=0, dropout=0.25, drop_path=0.1, bs=16, opt="sgd", wd=0.001, wd_norm_bias=False, momentum=0.8, label_smoothing=0.1, poly=1.0, sam=0.05, sam_last=0.25, lr=0.003, class_weights="sqrt", sampler="sqrt",
        lrs=[1e-4, 3e-4, 1e-3], lr_ratio=2.5, suggest="steepest", lr_find_steps=60, freeze_epochs=3, schedule="onecycle", epochs=5, time_budget=12.5, size_epochs=[2, 3], resize_lr=0.5,
        cycles=2, cycle_len=2, cycle_mult=3, warmup_pct=0.2, precompute="off", precompute_augs=2,
        snapshot_ensemble=True, final_fit_all=True, valid_every=3, logit_adjust=0.5, tta=3, seed=7, device="cpu", amp="off", channels_last="off", sync_bn=True, compile=True, quiet=True,
    )


def test_every_field_is_changed_by_the_round_trip_fixture():
    changed, default = _everything_changed(), TrainConfig()
    same = [f.name for f in dataclasses.fields(TrainConfig)
            if getattr(changed, f.name) == getattr(default, f.name) and f.name != "valid_pct"]
    assert same == []  # valid_pct stays: --valid and --valid-pct exclude each other


@pytest.mark.parametrize("cfg", [TrainConfig(train_dir="/data/train"), _everything_changed(),
                                 TrainConfig(train_dir="/data/train", cycles=2, cycle_mult=1)],
                         ids=["default", "all-changed", "sgdr-options-with-cosine"])
def test_the_recorded_command_parses_back_to_the_same_config(cfg: TrainConfig):
    assert _parse_command(cfg.command("/runs/x")) == cfg


def test_every_numeric_option_has_a_range_and_the_help_quotes_the_real_default():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    flat = " ".join(help_text.split())
    for f in cli_fields():
        if f.metadata["kind"] in ("int", "float"):
            assert f.metadata["bound"] is not None, f.name
        default = f.metadata["default_text"] or (f.default if f.default is not None else "none")
        assert f"(default: {default})" in flat, (f.name, default)
        assert flag_of(f) in flat


@pytest.mark.parametrize("name,value", [("tta", -1), ("dropout", 1.0), ("wd", -0.1), ("label_smoothing", 1.0),
                                        ("hidden", -3), ("max_lighting", 2.0), ("erase", 1.5), ("size", 8), ("epochs", -1),
                                        ("lr_ratio", 0.5), ("cycle_mult", 0), ("min_scale", 0.0), ("bs", 1),
                                        ("mixup", -0.2)])
def test_the_python_api_checks_the_same_ranges(name: str, value):
    with pytest.raises(GerminateError, match="must be"):
        TrainConfig(**{name: value}).validate()


def test_a_preset_sets_its_settings_and_given_ones_override_it():
    from germinate.config import PRESETS

    assert PRESETS["fast"] == {}  # the plain defaults
    best = TrainConfig.from_preset("best")
    assert best.preset == "best" and PRESETS["best"]
    assert all(getattr(best, k) == v for k, v in PRESETS["best"].items())
    assert TrainConfig.from_preset("best", cycles=5).cycles == 5
    cfg = _parse_command("germinate train /data/train --out r --preset best --seed 3")
    assert cfg == TrainConfig.from_preset("best", train_dir="/data/train", seed=3)
    # the command a best run records names the preset and only what differs from it
    assert cfg.command("r") == "germinate train /data/train --out r --preset best --seed 3"
    # once best's own budget has chosen the epochs (or a length was given instead), the command
    # names them, so that it repeats the run without the budget
    for epochs in (24, 21):
        chosen = dataclasses.replace(cfg, epochs=epochs, time_budget=None)
        assert chosen.command("r") == f"germinate train /data/train --out r --preset best --epochs {epochs} --seed 3"
        assert _parse_command(chosen.command("r")) == chosen
    with pytest.raises(GerminateError, match="--preset"):
        TrainConfig.from_preset("slow")


def test_every_train_option_is_in_the_readme():
    """The README's options table is written by hand: a new setting must be documented there."""
    from germinate.config import cli_fields, flag_of

    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = lines.index("| option | default | meaning |")
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2:])
    # the flags named in each row's first cell ("| `--size-epochs A,B,..` | ...")
    documented = {flag for line in table for flag in re.findall(r"--[a-z0-9-]+", re.split(r"(?<!\\)\|", line)[1])}
    missing = []
    for f in cli_fields():
        flag = flag_of(f)
        forms = [flag] + (["--no-" + flag[2:]] if f.metadata["kind"] == "bool" else [])
        if not documented & set(forms):
            missing.append(flag)
    assert not missing, f"undocumented in README.md: {missing}"
