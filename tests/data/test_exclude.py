"""--exclude: listed images are left out of training, after the split is drawn; label issues."""

from pathlib import Path

import numpy as np
import pytest

from germinate.cli import main
from germinate.data.bundle import load_folder
from germinate.data.manifest import read_file_list, split_rows
from germinate.errors import GerminateError
from germinate.evaluate.label_issues import issue_rows, label_issues


def _rel(files, root: Path) -> list[str]:
    return [Path(f).relative_to(root).as_posix() for f in files]


def test_listed_training_images_are_left_out_and_the_split_is_unchanged(labelled: Path):
    plain = load_folder(labelled, 32, seed=3)
    assert len(plain.excluded) == 0 and plain.excluded.classes == plain.classes  # nothing left out without a list
    assert {r["split"] for r in split_rows(plain, labelled)} == {"train", "valid"}
    train, valid = _rel(plain.train.files, labelled), _rel(plain.valid.files, labelled)
    listed = {train[0], train[5], valid[0]}  # two training images and a validation one
    out = load_folder(labelled, 32, seed=3, exclude=listed)
    assert _rel(out.valid.files, labelled) == valid  # validation keeps what it holds, the one listed too
    assert _rel(out.train.files, labelled) == [f for f in train if f not in listed]
    assert sorted(_rel(out.excluded.files, labelled)) == sorted([train[0], train[5]])
    kept = {f: y for f, y in zip(_rel(out.train.files, labelled), out.train.labels)}
    assert all(kept[f] == y for f, y in zip(train, plain.train.labels) if f in kept)  # labels stay with their images
    left = dict(zip(_rel(out.excluded.files, labelled), out.excluded.labels))
    assert all(left[f] == y for f, y in zip(train, plain.train.labels) if f in left) and len(left) == 2
    rows = split_rows(out, labelled)
    assert sorted(r["file"] for r in rows if r["split"] == "excluded") == sorted([train[0], train[5]])
    assert len(rows) == len(plain.train) + len(plain.valid)  # every image once, its split said


def test_a_list_for_another_folder_is_refused_rather_than_leaving_nothing_out(labelled: Path):
    with pytest.raises(GerminateError, match=r"--exclude: 1 of its 2 files are not images in .*'Red leaf/nope.png'"):
        load_folder(labelled, 32, seed=3, exclude={"Red leaf/img 00.png", "Red leaf/nope.png"})


def test_the_list_is_a_csv_with_a_file_column(tmp_path: Path, labelled: Path, capsys):
    good = tmp_path / "issues.csv"
    good.write_text("file,class\nRed leaf/img 00.png,Red leaf\nBlue leaf/img 03.png,Blue leaf\n")
    assert read_file_list(good) == {"Red leaf/img 00.png", "Blue leaf/img 03.png"}
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nRed leaf/img 00.png\n")
    for path, message in ((bad, "has no 'file' column"), (tmp_path / "missing.csv", "cannot read")):
        with pytest.raises(GerminateError, match=message):
            read_file_list(path)
        # the command line says so in one line, before anything trains
        assert main(["train", str(labelled), "--out", str(tmp_path / "run"), "--exclude", str(path), "--quiet",
                     "--epochs", "1", "--size", "32"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "run" / "metrics.csv").exists()


def test_label_issues_are_the_confident_mistakes_least_likely_label_first():
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array([[0.90, 0.05, 0.05],   # right
                      [0.85, 0.10, 0.05],   # wrong, own label 0.10: listed
                      [0.30, 0.45, 0.25],   # wrong, but its own label 0.25: a near miss, not listed
                      [0.02, 0.95, 0.03],   # wrong, own label 0.02: listed first
                      [0.10, 0.15, 0.75]])  # wrong, own label 0.15: listed
    assert label_issues(labels, probs).tolist() == [3, 1, 4]
    assert label_issues(labels, probs, below=0.3).tolist() == [3, 1, 4, 2]
    rows = [{"file": f"{i}.png", "class": "abc"[y], "fold": "1"} for i, y in enumerate(labels)]
    first = issue_rows(rows, labels, probs, ["a", "b", "c"])[0]
    assert first == {"file": "3.png", "class": "a", "predicted": "b", "p_class": "0.0200", "p_predicted": "0.9500",
                     "fold": "1"}

