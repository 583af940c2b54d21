"""The command line end to end, and every user-error path: one line, non-zero exit, no traceback."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from germinate.cli import main

TINY = ["--size", "32", "--bs", "8", "--freeze-epochs", "1", "--cycles", "1", "--precompute-augs", "1", "--quiet"]


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_version():
    out = subprocess.run([sys.executable, "-m", "germinate", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("germinate 0.")


def test_user_errors_in_a_real_process_print_one_line(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "germinate", "train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_train_error_paths(tmp_path: Path, labelled: Path, unlabelled: Path, capsys):
    cases = [
        (["train", tmp_path / "missing", "--out", tmp_path / "r1"], ["does not exist"]),
        (["train", unlabelled, "--out", tmp_path / "r2"], ["no class subfolders", "unlabelled folder"]),
        (["train", labelled, "--out", tmp_path / "r3", "--arch", "nonet"], ["Invalid arch 'nonet'"]),
        (["train", labelled, "--out", tmp_path / "r4", "--flip", "sideways"], ["Invalid --flip 'sideways'"]),
        (["train", labelled, "--out", tmp_path / "r5", "--size", "abc"], ["invalid int value"]),
        (["train", labelled, "--out", tmp_path / "r6", "--lr", "-1"], ["must be positive"]),
        (["train", labelled, "--out", tmp_path / "r7", "--lrs", "1e-3,1e-2"], ["--lrs takes three"]),
        (["train", labelled], ["--out RUN_DIR"]),
        (["train", "--resume", tmp_path], ["config.json is missing"]),
        (["train", labelled, "--out", tmp_path / "r8", "--valid-pct", "2"], ["valid-pct"]),
    ]
    for args, fragments in cases:
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, *fragments)


def test_one_class_is_refused(tmp_path: Path, labelled: Path, capsys):
    import shutil

    for name in ("Green-leaf", "Blue leaf"):
        shutil.rmtree(labelled / name)
    code, _, err = run_cli(["train", labelled, "--out", tmp_path / "r", *TINY], capsys)
    assert_one_line_error(code, err, "1 usable class")


def test_existing_run_folder_is_not_overwritten(tiny_run: Path, labelled: Path, capsys):
    before = (tiny_run / "model.safetensors").read_bytes()
    code, _, err = run_cli(["train", labelled, "--out", tiny_run, *TINY], capsys)
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert (tiny_run / "model.safetensors").read_bytes() == before


def test_predict_and_evaluate_error_paths(tmp_path: Path, tiny_run: Path, labelled: Path, unlabelled: Path, capsys):
    cases = [
        (["predict", tmp_path, unlabelled], ["no exported model"]),
        (["predict", tiny_run, labelled], ["looks like a labelled folder"]),
        (["predict", tiny_run, tmp_path / "nothing"], ["does not exist"]),
        (["evaluate", tiny_run, unlabelled], ["no class subfolders"]),
        (["report", tmp_path], ["config.json is missing"]),
    ]
    for args, fragments in cases:
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, *fragments)


def test_evaluate_on_other_classes_is_reported(tmp_path: Path, tiny_run: Path, capsys):
    from tests.conftest import make_labelled

    other = make_labelled(tmp_path / "other", per_class=2)
    (other / "Red leaf").rename(other / "Purple leaf")
    code, out, err = run_cli(["evaluate", tiny_run, other, "--json", tmp_path / "m.json"], capsys)
    assert code == 0
    assert "classes the model does not know were left out: Purple leaf" in err
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 4


def test_train_predict_evaluate_end_to_end(tmp_path: Path, labelled: Path, unlabelled: Path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", labelled, "--out", run, *TINY], capsys)
    assert code == 0, err
    for name in ("config.json", "metrics.csv", "skipped.csv", "model.safetensors", "model.json", "lrs.csv",
                 "checkpoints/last.pt", "checkpoints/best.safetensors", "report.html"):
        assert (run / name).exists(), name
    (unlabelled / "broken.png").write_bytes(b"garbage")
    sub = tmp_path / "sub.csv"
    code, _, err = run_cli(["predict", run, unlabelled, "--submission", sub, "--probs", tmp_path / "p.csv"], capsys)
    assert code == 0
    rows = list(csv.reader(open(sub)))
    assert rows[0] == ["file", "species"]
    assert sorted(r[0] for r in rows[1:]) == sorted(f"t{i}.png" for i in range(7))
    assert {r[1] for r in rows[1:]} <= {"Blue leaf", "Green-leaf", "Red leaf"}
    assert "1 file(s) could not be read" in err and (tmp_path / "sub.csv.skipped.csv").exists()
    probs = list(csv.reader(open(tmp_path / "p.csv")))
    assert probs[0] == ["file", "Blue leaf", "Green-leaf", "Red leaf"]
    assert all(abs(sum(map(float, r[1:])) - 1) < 1e-3 for r in probs[1:])
    code, out, _ = run_cli(["evaluate", run, labelled, "--json", tmp_path / "m.json"], capsys)
    assert code == 0 and "micro-F1" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"accuracy", "f1_micro", "f1_macro", "n", "per_class", "plain"} <= set(m)
    assert m["n"] == 36 and set(m["per_class"]) == {"Blue leaf", "Green-leaf", "Red leaf"}
    assert (run / "eval-train" / "confusion.csv").exists() and (run / "eval-train" / "confusion.png").exists()


def test_lr_find_cli_writes_both_files_and_prints_a_number(tmp_path: Path, labelled: Path, capsys):
    code, out, err = run_cli(["lr-find", labelled, "--out", tmp_path / "lr", "--size", "32", "--bs", "4", "--steps", "60", "--quiet"], capsys)
    assert code == 0, err
    assert float(out.strip().splitlines()[-1]) > 0
    rows = list(csv.reader(open(tmp_path / "lr" / "lr_find.csv")))
    assert rows[0] == ["lr", "loss", "smoothed_loss"] and len(rows) > 10
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 1000


def test_submission_for_the_real_test_folder(data_dir: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", data_dir / "train", "--out", run, "--limit-per-class", "5", "--size", "32",
                            "--bs", "8", "--freeze-epochs", "1", "--cycles", "0", "--precompute-augs", "1", "--quiet"], capsys)
    assert code == 0, err
    sub = tmp_path / "submission.csv"
    code, _, err = run_cli(["predict", run, data_dir / "test", "--submission", sub, "--tta", "1"], capsys)
    assert code == 0, err
    ours = list(csv.reader(open(sub)))
    sample = list(csv.reader(open(data_dir / "sample_submission.csv")))
    assert ours[0] == ["file", "species"] and len(ours) == 795
    assert [r[0] for r in ours] == [r[0] for r in sample]
    classes = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    assert {r[1] for r in ours[1:]} <= set(classes)


def test_file_names_with_spaces_and_non_ascii_are_kept_exactly(tmp_path: Path, tiny_run: Path, capsys):
    import numpy as np

    from tests.conftest import make_image

    folder = tmp_path / "täst images"
    folder.mkdir()
    names = ["blätter 1.png", "幼苗.PNG", "with space.JPG"]
    for i, name in enumerate(names):
        make_image((200, 40, 40), np.random.default_rng(i)).convert("RGB").save(folder / name, format="PNG" if i < 2 else "JPEG")
    sub = tmp_path / "sub.csv"
    code, _, err = run_cli(["predict", tiny_run, folder, "--submission", sub, "--tta", "0"], capsys)
    assert code == 0, err
    rows = list(csv.reader(open(sub, encoding="utf-8")))
    assert sorted(r[0] for r in rows[1:]) == sorted(names)
