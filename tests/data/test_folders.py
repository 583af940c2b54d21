from pathlib import Path

import numpy as np
import pytest

from germinate.data.bundle import load_folder
from germinate.data.folders import (
    limit_per_class,
    scan_labelled,
    scan_unlabelled,
    stratified_split,
    write_skipped,
)
from germinate.errors import GerminateError
from tests.conftest import make_image


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), [50, 30, 20, 10])
    train, valid = stratified_split(labels, 0.2, seed=7)
    assert set(train).isdisjoint(valid)
    assert sorted(np.concatenate([train, valid])) == list(range(len(labels)))
    assert np.bincount(labels[valid]).tolist() == [10, 6, 4, 2]  # 20% of every class
    again = stratified_split(labels, 0.2, seed=7)
    assert np.array_equal(again[1], valid)
    other = stratified_split(labels, 0.2, seed=8)
    assert not np.array_equal(other[1], valid)


def test_split_keeps_at_least_one_of_each_class_on_both_sides():
    labels = np.array([0, 0, 1, 1, 1, 2])
    train, valid = stratified_split(labels, 0.1, seed=0)
    assert set(labels[valid]) == {0, 1}  # class 2 has one image: it stays in training
    assert set(labels[train]) == {0, 1, 2}


def test_bad_valid_pct_is_a_user_error():
    with pytest.raises(GerminateError, match="valid-pct"):
        stratified_split(np.zeros(10, int), 1.5, 0)


def test_class_names_with_spaces_sorted_and_kept(labelled: Path):
    items = scan_labelled(labelled)
    assert items.classes == ["Blue leaf", "Green-leaf", "Red leaf"]
    assert items.counts() == {"Blue leaf": 12, "Green-leaf": 12, "Red leaf": 12}
    assert all(items.classes[l] == f.parent.name for f, l in zip(items.files, items.labels))


def test_non_images_and_empty_classes_are_skipped_and_listed(labelled: Path, tmp_path: Path):
    (labelled / "Red leaf" / ".DS_Store").write_bytes(b"\0\1")
    (labelled / "Red leaf" / "notes.txt").write_text("hello")
    (labelled / "Empty class").mkdir()
    items = scan_labelled(labelled)
    assert "Empty class" not in items.classes
    reasons = {Path(s.path).name: s.reason for s in items.skipped}
    assert reasons[".DS_Store"] == "not an image file"
    assert reasons["notes.txt"] == "not an image file"
    assert reasons["Empty class"] == "class folder with no images"
    write_skipped(tmp_path / "skipped.csv", items.skipped)
    lines = (tmp_path / "skipped.csv").read_text().splitlines()
    assert lines[0] == "path,reason" and len(lines) == 4


def test_unreadable_images_are_skipped_at_load(labelled: Path):
    (labelled / "Red leaf" / "broken.png").write_bytes(b"not a png at all")
    (labelled / "Red leaf" / "empty.png").write_bytes(b"")
    data = load_folder(labelled, 32, valid_pct=0.25, seed=1)
    names = {Path(s.path).name for s in data.skipped}
    assert {"broken.png", "empty.png"} <= names
    assert len(data.train) + len(data.valid) == 36


def test_validation_images_are_decoded_at_their_own_size_with_the_same_split(labelled: Path):
    same = load_folder(labelled, 32, valid_pct=0.25, seed=1)
    own = load_folder(labelled, 32, valid_pct=0.25, seed=1, valid_px=48)
    assert own.valid.files == same.valid.files and list(own.valid.labels) == list(same.valid.labels)
    assert own.train.files == same.train.files
    assert tuple(own.train.source.get(0).shape[-2:]) == (32, 32)
    assert tuple(own.valid.source.get(0).shape[-2:]) == (48, 48)


def test_nested_folders_and_symlinks(labelled: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    nested = labelled / "Red leaf" / "batch 2" / "deeper"
    nested.mkdir(parents=True)
    make_image((200, 40, 40), rng).save(nested / "n.png")
    outside = tmp_path / "outside.png"
    make_image((40, 60, 200), rng).save(outside)
    (labelled / "Blue leaf" / "link.png").symlink_to(outside)
    (labelled / "Blue leaf" / "loop").symlink_to(labelled / "Blue leaf")  # a cycle must not hang
    (labelled / "Blue leaf" / "dangling.png").symlink_to(tmp_path / "gone.png")
    items = scan_labelled(labelled)
    names = [f.name for f in items.files]
    assert "n.png" in names and names.count("link.png") == 1
    assert any(s.reason == "broken link" for s in items.skipped)


def test_fewer_than_two_classes_is_an_error(tmp_path: Path):
    rng = np.random.default_rng(0)
    (tmp_path / "only").mkdir()
    for i in range(4):
        make_image((1, 2, 3), rng).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(GerminateError, match="1 usable class"):
        load_folder(tmp_path, 32)


def test_missing_path_and_wrong_layouts_are_errors(labelled: Path, unlabelled: Path, tmp_path: Path):
    with pytest.raises(GerminateError, match="does not exist"):
        scan_labelled(tmp_path / "nope")
    with pytest.raises(GerminateError, match="unlabelled folder"):
        scan_labelled(unlabelled)
    with pytest.raises(GerminateError, match="looks like a labelled folder"):
        scan_unlabelled(labelled)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GerminateError, match="holds no images"):
        scan_unlabelled(tmp_path / "empty")


def test_limit_per_class():
    labels = np.repeat(np.arange(3), [10, 2, 7])
    keep = limit_per_class(labels, 4, seed=0)
    assert np.bincount(labels[keep]).tolist() == [4, 2, 4]
    assert np.array_equal(keep, limit_per_class(labels, 4, seed=0))


def test_explicit_validation_folder(labelled: Path, tmp_path: Path):
    from tests.conftest import make_labelled

    valid = make_labelled(tmp_path / "valid", per_class=3, seed=9)
    data = load_folder(labelled, 32, valid_dir=valid)
    assert len(data.train) == 36 and len(data.valid) == 9
    assert data.classes == ["Blue leaf", "Green-leaf", "Red leaf"]
    # a validation folder of other classes only leaves nothing to validate on: refused, with or without --limit
    for name in ("Blue leaf", "Green-leaf", "Red leaf"):
        (valid / name).rename(valid / f"Other {name}")
    for limit in (None, 2):
        with pytest.raises(GerminateError, match=r"validation folder .* has no images in the training classes \(Blue"):
            load_folder(labelled, 32, valid_dir=valid, limit=limit)


@pytest.mark.parametrize("separate_valid", [False, True])
def test_split_images_reads_back_the_files_a_run_used(labelled: Path, tmp_path: Path, separate_valid: bool):
    """What the benchmarks read a finished run's split from: each path resolved against the folder
    the run took it from, its --valid folder included (relative paths in split.csv)."""
    import csv
    import json

    from germinate.data.manifest import FIELDS, split_images, split_rows
    from tests.conftest import make_labelled

    valid = make_labelled(tmp_path / "valid", per_class=3, seed=9) if separate_valid else None
    data = load_folder(labelled, 32, valid_pct=0.25, valid_dir=valid, seed=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"train_dir": str(labelled.absolute()),
                                                            "valid_dir": valid and str(valid.absolute())}}))
    with open(run / "split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(split_rows(data, labelled, valid))
    for split, part in (("train", data.train), ("valid", data.valid)):
        files, classes = split_images(run, split)
        assert [f.resolve() for f in files] == [Path(f).resolve() for f in part.files]
        assert classes == [data.classes[int(y)] for y in part.labels]
        assert all(f.is_file() for f in files)
    assert split_images(run, "valid")[0][0].is_relative_to(valid if separate_valid else labelled)
