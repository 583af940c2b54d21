"""--folds K: K runs, each validating on its own stratified K-th; out-of-fold figures; one ensemble."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from germinate import TrainConfig, predict_folder, resume, train
from germinate.cli import main
from germinate.data.bundle import load_folder
from germinate.data.folders import stratified_folds
from germinate.errors import GerminateError
from germinate.evaluate import metrics as M
from germinate.folds import finish_folds
from germinate.models.export import export_ensemble, load_model
from germinate.run import RunFolder
from germinate.ui import SILENT
from tests.conftest import PROB_ATOL, make_labelled, read_rows

K, PER_CLASS, CLASSES = 3, 12, 3


def test_every_image_is_in_one_fold_and_each_fold_keeps_the_class_shares():
    labels = np.repeat([0, 1, 2], [30, 12, 7])
    folds = stratified_folds(labels, 5, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))  # each image once
    for c, n in zip(range(3), (30, 12, 7)):
        per_fold = [int((labels[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n
    again, other = stratified_folds(labels, 5, seed=1), stratified_folds(labels, 5, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    with pytest.raises(GerminateError, match="--folds 8 needs at least 8 images in each class; class 'rare' has 7"):
        stratified_folds(labels, 8, seed=1, classes=["a", "b", "rare"])


def test_a_fold_validates_on_its_share_and_trains_on_the_rest(labelled: Path):
    bundles = [load_folder(labelled, 32, seed=4, fold=(i, K)) for i in range(1, K + 1)]
    valid = [set(map(str, b.valid.files)) for b in bundles]
    assert sum(len(v) for v in valid) == len(set().union(*valid)) == PER_CLASS * CLASSES
    for b, v in zip(bundles, valid):
        assert not v & set(map(str, b.train.files)) and len(v) + len(b.train) == PER_CLASS * CLASSES
        assert np.bincount(b.valid.labels).tolist() == [PER_CLASS // K] * CLASSES


@pytest.mark.parametrize("flags, message", [
    (["--fold", "2"], "--fold 2 needs --folds K with K >= 2"),
    (["--folds", "3", "--fold", "4"], "--fold 4 needs --folds K with K >= 4"),
    (["--folds", "3", "--final-fit-all"], "--folds and --final-fit-all cannot be combined"),
    (["--folds", "40"], "--folds 40 needs at least 40 images in each class"),
])
def test_fold_settings_that_cannot_work_are_refused_in_one_line(labelled: Path, tmp_path: Path, capsys, flags, message):
    assert main(["train", str(labelled), "--out", str(tmp_path / "run"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything is written


def _cfg(train_dir: Path) -> TrainConfig:
    return TrainConfig(train_dir=str(train_dir), size=32, bs=8, epochs=1, folds=K, seed=6, quiet=True)


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("folds")
    train_dir = make_labelled(base / "train", per_class=PER_CLASS)
    train(_cfg(train_dir), base / "run")
    return train_dir, base / "run"


def test_each_image_is_scored_once_by_the_fold_that_did_not_train_on_it(folds_run):
    train_dir, run = folds_run
    final = json.loads((run / "final.json").read_text())
    oof = read_rows(run / "oof.csv")
    everything = sorted(p.relative_to(train_dir).as_posix() for p in train_dir.rglob("*.png"))
    assert sorted(r["file"] for r in oof) == everything  # every labelled image, once
    for i in range(1, K + 1):
        split = {r["file"]: r["split"] for r in read_rows(run / f"fold-{i}" / "split.csv")}
        mine = {r["file"] for r in oof if r["fold"] == str(i)}
        assert mine == {f for f, s in split.items() if s == "valid"}  # its own validation images, no others
        assert json.loads((run / f"fold-{i}" / "config.json").read_text())["config"]["fold"] == i
    # The figures are the out-of-fold predictions' own.
    classes = load_model(run)[1].classes
    labels = np.array([classes.index(r["class"]) for r in oof])
    probs = np.array([[float(r[f"tta:{c}"]) for c in classes] for r in oof])
    assert final["tta"]["f1_micro"] == pytest.approx(M.summary(labels, probs.argmax(1), len(classes))["f1_micro"], abs=1e-9)
    assert final["tta"]["n"] == PER_CLASS * CLASSES and final["folds"]["k"] == K
    assert [f["images"] for f in final["folds"]["per_fold"]] == [PER_CLASS * CLASSES // K] * K
    assert all(r["predicted"] == classes[int(np.argmax(p))] for r, p in zip(oof, probs))
    # label_issues.csv: the out-of-fold mistakes that give their own label under 0.2, least likely first
    own = {r["file"]: float(r[f"tta:{r['class']}"]) for r in oof}
    doubted = sorted((r["file"] for r in oof if r["predicted"] != r["class"] and own[r["file"]] < 0.2), key=own.get)
    assert [r["file"] for r in read_rows(run / "label_issues.csv")] == doubted
    report = (run / "report.html").read_text()
    assert "out of fold" in report and 'href="fold-3/report.html"' in report


def test_the_run_predicts_with_its_folds_together(folds_run, unlabelled: Path):
    _, run = folds_run
    nets, info = load_model(run, snapshots=True)
    assert len(nets) == K and info.weights == "fold-1/model.safetensors"
    _, together, _ = predict_folder(run, unlabelled, tta=0)
    alone = [predict_folder(run / f"fold-{i}", unlabelled, tta=0)[1] for i in range(1, K + 1)]
    assert np.allclose(together, np.mean(alone, axis=0), atol=PROB_ATOL)
    assert max(np.abs(a - b).max() for a in alone for b in alone) > 10 * PROB_ATOL  # the folds are different models


def test_a_finished_folds_run_is_refused_a_resume_and_can_be_overwritten(folds_run, tmp_path: Path, capsys):
    _, run = folds_run
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert RunFolder(run).check_writable(overwrite=True)  # every file and fold folder is germinate's


def test_a_stopped_folds_run_resumes_keeping_the_finished_folds(folds_run, tmp_path: Path):
    _, ref = folds_run
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    # As if stopped in fold 2's evaluation, before fold 3 began: fold 2 resumes from its checkpoint.
    (run / "final.json").unlink()
    (run / "fold-2" / "final.json").unlink()
    shutil.rmtree(run / "fold-3")
    (run / "fold-3" / "checkpoints").mkdir(parents=True)  # a fold stopped before its folder was whole
    kept = (run / "fold-1" / "model.safetensors").stat().st_mtime_ns
    resume(run)
    assert (run / "fold-1" / "model.safetensors").stat().st_mtime_ns == kept
    final, before = json.loads((run / "final.json").read_text()), json.loads((ref / "final.json").read_text())
    assert [f["images"] for f in final["folds"]["per_fold"]] == [f["images"] for f in before["folds"]["per_fold"]]
    # the same seed and split: the resumed folds give the same out-of-fold figures
    assert final["tta"]["f1_micro"] == pytest.approx(before["tta"]["f1_micro"], abs=0.05)
    assert len(read_rows(run / "oof.csv")) == PER_CLASS * CLASSES


def test_an_ensemble_needs_members_that_differ_only_in_weights(folds_run, tmp_path: Path):
    _, run = folds_run
    other = tmp_path / "other"
    shutil.copytree(run / "fold-1", other / "a")
    shutil.copytree(run / "fold-2", other / "b")
    info = json.loads((other / "b" / "model.json").read_text())
    (other / "b" / "model.json").write_text(json.dumps({**info, "classes": ["x", "y", "z"]}))
    with pytest.raises(GerminateError, match="in more than its weights"):
        export_ensemble(other, ["a", "b"])


def test_the_run_records_the_processes_its_folds_ran_on(folds_run, tmp_path: Path):
    _, ref = folds_run
    assert json.loads((ref / "final.json").read_text())["processes"] == 1
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    # As if fold 2 ran under torchrun on two processes (`--folds K --fold 2` on another launch).
    fold = run / "fold-2" / "final.json"
    fold.write_text(json.dumps({**json.loads(fold.read_text()), "processes": 2}))
    finish_folds(RunFolder(run), K, SILENT)
    final = json.loads((run / "final.json").read_text())
    assert final["processes"] == 2 and [f["processes"] for f in final["folds"]["per_fold"]] == [1, 2, 1]
