"""--final-fit-all: the first fit's plan trained again on every labelled image, and exported."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from germinate import TrainConfig, resume, train
from germinate.cli import main
from germinate.errors import GerminateError, TrainingInterrupted
from germinate.models.export import load_model
from germinate.run import RunFolder
from tests.conftest import make_labelled, read_rows
from tests.training.test_interrupt import SignalAt

PER_CLASS, CLASSES = 16, 3


def _cfg(train_dir: Path) -> TrainConfig:
    # the head's LR from the range test (the final fit must reuse it; the unfrozen stage's would run
    # the same code at more cost), both stages
    return TrainConfig.from_preset("recipe", train_dir=str(train_dir), size=32, bs=8, freeze_epochs=1, cycles=1,
                                   lrs=[1e-4, 3e-4, 1e-3], seed=5, quiet=True, final_fit_all=True)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ff")
    train_dir = make_labelled(base / "train", per_class=PER_CLASS)
    train(_cfg(train_dir), base / "run")
    return train_dir, base / "run"


def _peaks(rows: list[dict], stage: str) -> list[float]:
    return [max(float(r[f"lr_group{g}"]) for r in rows if r["stage"] == stage) for g in range(3)]


def test_the_final_fit_repeats_the_plan_on_every_image_and_is_exported(whole):
    _, run = whole
    final = json.loads((run / "final.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["counts"]["train"] < PER_CLASS * CLASSES
    assert final["final_fit"]["train_images"] == PER_CLASS * CLASSES  # training and validation images
    assert 0 <= final["tta"]["f1_micro"] <= 1  # the first fit's figures stay

    # The same stages and epochs, at the LRs the first fit's range tests chose (no range test of its own).
    first_rows, final_rows = read_rows(run / "metrics.csv"), read_rows(run / "final-fit" / "metrics.csv")
    assert [(r["stage"], r["epoch"]) for r in final_rows] == [(r["stage"], r["epoch"]) for r in first_rows]
    assert all(r["f1_micro"] == "" and float(r["train_loss"]) > 0 for r in final_rows)  # nothing to validate on
    assert not list((run / "final-fit").glob("lr_find*")) and not list(run.glob("lr_find_*final*"))
    first_lrs, final_lrs = read_rows(run / "lrs.csv"), read_rows(run / "final-fit" / "lrs.csv")
    for stage in config["plan"]:
        assert _peaks(final_lrs, stage["name"]) == pytest.approx(stage["lrs"], rel=1e-4)
    # More images, so more steps per epoch: 48 images in batches of 8, against the first fit's fewer.
    steps = lambda rows: sum(1 for r in rows if r["stage"] == "unfrozen" and r["epoch"] == "1")  # noqa: E731
    assert steps(final_lrs) == PER_CLASS * CLASSES // 8 > steps(first_lrs)

    # The exported model is the final fit's; the first fit's is kept, loadable.
    exported, first = load_file(str(run / "model.safetensors")), load_file(str(run / "first-fit" / "model.safetensors"))
    assert any(not torch.equal(exported[k], first[k]) for k in exported)
    assert load_model(run)[1].classes == load_model(run / "first-fit")[1].classes
    assert "Final fit" in (run / "report.html").read_text()
    assert RunFolder(run).check_writable(overwrite=True)  # --overwrite may remove everything it wrote
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # finished, final fit included: refused


def test_a_stop_in_the_final_fit_resumes_to_the_uninterrupted_model(whole, tmp_path: Path):
    _, ref = whole
    # The reference run as it stood when its first fit had finished (cheaper than training one).
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    shutil.rmtree(cut / "final-fit")
    for name in ("model.json", "model.safetensors"):
        shutil.move(cut / "first-fit" / name, cut / name)
    (cut / "first-fit").rmdir()
    final = json.loads((cut / "final.json").read_text())
    del final["final_fit"]
    (cut / "final.json").write_text(json.dumps(final))

    # resumed, the final fit starts; stopped in its first unfrozen epoch, it checkpoints
    with pytest.raises(TrainingInterrupted) as e:
        resume(cut, reporter=SignalAt("unfrozen", nth=1, after=2))
    assert e.value.run_dir == str(cut)  # resumed as a whole, not as its final-fit folder
    assert (cut / "final-fit" / "last.pt").exists() and not (cut / "first-fit").exists()
    resume(cut)
    for name in ("metrics.csv", "lrs.csv"):
        assert (cut / "final-fit" / name).read_text() == (ref / "final-fit" / name).read_text(), name
    for name in ("model.safetensors", "first-fit/model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(cut / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_final_fit_and_snapshot_ensemble_are_refused_together():
    with pytest.raises(GerminateError, match="cannot be combined"):
        TrainConfig(train_dir="x", final_fit_all=True, snapshot_ensemble=True).validate()


def test_merge_valid_trains_on_the_hold_out_or_the_validation_folder_too(tmp_path: Path):
    from germinate.data.bundle import load_folder

    train_dir = make_labelled(tmp_path / "train", per_class=10)
    split = load_folder(train_dir, 32, valid_pct=0.2, seed=1)
    merged = load_folder(train_dir, 32, valid_pct=0.2, seed=1, merge_valid=True)
    assert len(split.train) == 24 and len(merged.train) == 30
    assert sorted(map(str, merged.train.files)) == sorted(map(str, split.train.files + split.valid.files))
    assert list(merged.valid.files) == list(split.valid.files)  # the validation split itself is unchanged
    valid_dir = make_labelled(tmp_path / "valid", per_class=4, seed=9)
    merged = load_folder(train_dir, 32, valid_dir=valid_dir, merge_valid=True)
    assert len(merged.train) == 42 and len(merged.valid) == 12
    labels = {str(f): int(y) for f, y in zip(merged.train.files, merged.train.labels)}
    assert all(labels[str(f)] == merged.classes.index(Path(f).parent.name) for f in merged.train.files)
