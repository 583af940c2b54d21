"""The command line end to end, and every user-error path: one line, non-zero exit, no traceback."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from germinate.cli import main

TINY = ["--preset", "recipe", "--size", "32", "--bs", "8", "--freeze-epochs", "1", "--cycles", "1", "--precompute-augs", "1", "--quiet",
        "--lr-find-steps", "40"]  # the recipe's range tests, 40 steps each (100 by default)


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
        (["train", labelled, "--out", tmp_path / "r5", "--size", "abc"], ["expected an integer"]),
        (["train", labelled, "--out", tmp_path / "r6", "--lr", "-1"], ["must be a positive number or auto"]),
        (["train", labelled, "--out", tmp_path / "r7", "--lrs", "1e-3,1e-2"], ["--lrs takes three"]),
        (["train", labelled], ["--out RUN_DIR"]),
        (["train", "--resume", tmp_path], ["config.json is missing"]),
        (["train", labelled, "--out", tmp_path / "r8", "--valid-pct", "2"], ["valid-pct"]),
        (["train", labelled, "--out", tmp_path / "r9", "--trivial-augment", "--augment", "batch"],
         ["--trivial-augment", "--augment image"]),
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


def test_class_folders_without_images_are_refused_by_every_command_that_reads_them(tmp_path: Path, capsys):
    for name in ("a", "b"):  # class folders holding no images: one with a stray file, one empty
        (tmp_path / "data" / name).mkdir(parents=True)
    (tmp_path / "data" / "a" / "notes.txt").write_text("x")
    for command in (["train", "--out", tmp_path / "r", *TINY], ["lr-find", "--out", tmp_path / "lr", *TINY],
                    ["show-batch", "--out", tmp_path / "b.png"]):
        code, _, err = run_cli([command[0], tmp_path / "data", *command[1:]], capsys)
        assert_one_line_error(code, err, "class subfolders of", "hold no images (extensions: png")


def test_an_output_path_that_is_a_folder_is_refused_before_any_work(tmp_path: Path, tiny_run: Path, labelled: Path,
                                                                    unlabelled: Path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    for args, flag in ((["predict", tiny_run, unlabelled, "--submission", folder], "--submission"),
                       (["predict", tiny_run, unlabelled, "--submission", tmp_path / "s.csv", "--probs", folder], "--probs"),
                       (["evaluate", tiny_run, labelled, "--json", folder], "--json")):
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, f"{flag} '{folder}' is a folder: give a file name")
        assert code == 2 and list(folder.iterdir()) == [] and not (tmp_path / "s.csv").exists()


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
        (["export", tmp_path, "--onnx", tmp_path / "m.onnx"], ["no exported model"]),
        # refused before a server starts, without a warning about ONNX first
        (["serve", tmp_path, "--port", "0"], ["no exported model"]),
    ]
    for args, fragments in cases:
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, *fragments)
    import socket

    with socket.socket() as taken:  # a port another process listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["serve", tiny_run, "--port", port], capsys)
        assert_one_line_error(code, err, f"cannot serve on 127.0.0.1:{port} (Address already in use)", "--port")


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
                            "--bs", "8", "--freeze-epochs", "1", "--epochs", "0", "--precompute-augs", "1", "--quiet"], capsys)
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


BAD_VALUES = [
    (["--tta", "-1"], "--tta: must be an integer in [0, 64], got -1"),
    (["--dropout", "1.5"], "--dropout: must be a number in [0, 1), got 1.5"),
    (["--wd", "-0.1"], "--wd: must be a number in [0, 1]"),
    (["--label-smoothing", "1"], "--label-smoothing: must be a number in [0, 1)"),
    (["--poly", "-2"], "--poly: must be a number in [-1, 10]"),
    (["--hidden", "-3"], "--hidden: must be an integer >= 0"),
    (["--max-lighting", "2"], "--max-lighting: must be a number in [0, 1)"),
    (["--size", "8"], "--size: must be an integer in [16, 4096]"),
    (["--test-size", "0"], "--test-size: must be an integer in [16, 4096]"),
    (["--epochs", "-2"], "--epochs: must be an integer >= 0"),
    (["--lr-ratio", "0.5"], "--lr-ratio: must be a number in [1, 1000]"),
    (["--cycles", "-1"], "--cycles: must be an integer >= 0"),
    (["--min-scale", "0"], "--min-scale: must be a number in (0, 1]"),
    (["--warmup-pct", "1"], "--warmup-pct: must be a number in [0, 1)"),
    (["--bs", "1"], "--bs: must be an integer >= 2"),
    (["--dropout", "nan"], "--dropout: must be a number in [0, 1)"),
    (["--sizes", "96,12"], "--sizes: must be an integer in [16, 4096], got 12"),
    (["--sizes", "96,128.5"], "--sizes: must be an integer in [16, 4096], got 128.5"),
    (["--sizes", "96,big"], "--sizes: expected comma-separated numbers"),
    (["--sizes", "128,96"], "--sizes takes two or more increasing sizes"),
    (["--preset", "slow"], "--preset: Invalid --preset 'slow'; valid: fast, recipe, best"),
    (["--cycles", "4"], "--cycles applies to SGDR, and the fast preset's schedule is cosine: add --schedule sgdr"),
    (["--sam-last", "0.3"], "--sam-last applies to sharpness-aware minimisation, which the fast preset leaves off"),
    (["--sam", "0.05", "--sam-last", "0"], "--sam-last: must be a number in (0, 1]"),
]


def test_every_numeric_option_is_checked_at_parse_time(tmp_path: Path, labelled: Path, capsys):
    for flags, message in BAD_VALUES:
        code, _, err = run_cli(["train", labelled, "--out", tmp_path / "r", *flags], capsys)
        assert_one_line_error(code, err, message)
        assert not (tmp_path / "r").exists()  # refused before anything is written


def test_predict_and_evaluate_refuse_a_negative_tta(tiny_run: Path, unlabelled: Path, labelled: Path, tmp_path: Path, capsys):
    for cmd, folder in (("predict", unlabelled), ("evaluate", labelled)):
        code, _, err = run_cli([cmd, tiny_run, folder, "--tta", "-1"], capsys)
        assert_one_line_error(code, err, "--tta: must be an integer in [0, 64], got -1")
    code, _, err = run_cli(["predict", tiny_run, unlabelled, "--bs", "0"], capsys)
    assert_one_line_error(code, err, "--bs: must be an integer in [1, 4096]")


def test_epochs_works_with_the_sgdr_schedule(tmp_path: Path, labelled: Path, capsys):
    run = tmp_path / "run"
    args = ["train", labelled, "--out", run, "--size", "32", "--bs", "8", "--freeze-epochs", "1", "--epochs", "3",
            "--schedule", "sgdr"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "stage unfrozen (whole network): 3 epoch(s), SGDR, 2 cycle(s) of 1, 2 epoch(s)" in err  # the plan, printed
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["head", "unfrozen", "unfrozen", "unfrozen"]
    plan = json.loads((run / "config.json").read_text())["plan"]
    assert (plan[1]["cycles"], plan[1]["cycle_len"], plan[1]["cycle_mult"]) == (2, 1, 2)


def _stale_run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of a finished run with a stale snapshot, as an older run would leave."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    (old / "snapshot-9.safetensors").write_bytes((old / "model.safetensors").read_bytes())
    (old / "eval-x").mkdir()
    (old / "eval-x" / "confusion.csv").write_text("a\n")
    return old


def test_overwrite_leaves_only_the_new_runs_files(tiny_run: Path, labelled: Path, tmp_path: Path, capsys):
    old = _stale_run(tiny_run, tmp_path)
    code, _, err = run_cli(["train", labelled, "--out", old, *TINY, "--freeze-epochs", "0", "--lr", "1e-3", "--overwrite"], capsys)
    assert code == 0, err
    assert not list(old.glob("snapshot-*")) and not (old / "eval-x").exists()
    assert not (old / "lr_find_head.png").exists()  # this run had no head stage: the old picture is gone
    assert [r["stage"] for r in csv.DictReader(open(old / "metrics.csv"))] == ["unfrozen"]


def test_overwrite_refuses_a_folder_with_files_germinate_did_not_write(tiny_run: Path, labelled: Path, tmp_path: Path, capsys):
    old = _stale_run(tiny_run, tmp_path)
    (old / "my notes.txt").write_text("keep me")
    before = sorted(p.name for p in old.rglob("*"))
    code, _, err = run_cli(["train", labelled, "--out", old, *TINY, "--overwrite"], capsys)
    assert_one_line_error(code, err, "--overwrite refused", "'my notes.txt'")
    assert sorted(p.name for p in old.rglob("*")) == before and (old / "my notes.txt").read_text() == "keep me"


def test_out_pointing_at_a_folder_that_is_not_a_run_is_refused(labelled: Path, tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"x")
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(["train", labelled, "--out", folder, *TINY, *extra], capsys)
        assert_one_line_error(code, err, "is not empty and holds no germinate run")
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]


def test_resume_refuses_flags_it_would_ignore(tmp_path: Path, capsys):
    for flags, fragment in ((["--size", "64"], "--size cannot change"), (["--lr", "1e-2", "--tta", "2"], "--lr, --tta cannot change"),
                            (["--out", tmp_path / "x"], "drop --out")):
        code, _, err = run_cli(["train", "--resume", tmp_path, *flags], capsys)
        assert_one_line_error(code, err, fragment)


def test_lr_find_prints_the_lr_that_auto_trains_with(tmp_path: Path, labelled: Path, capsys):
    common = ["--preset", "recipe", "--size", "32", "--bs", "4", "--seed", "3", "--quiet",  # range tests, lr/9
              "--lr-find-steps", "40"]  # lr-find's own --steps defaults to it
    code, out, err = run_cli(["lr-find", labelled, "--out", tmp_path / "lr", "--unfrozen", *common], capsys)
    assert code == 0, err
    printed = float(out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert printed == pytest.approx(saved["suggestion"], rel=1e-5)
    # The curve's reading goes to the early body; the printed LR is the head's, r^2 = 9 times more.
    assert saved["suggestion"] == pytest.approx(saved["curve_suggestion"] * 9, rel=5e-3)  # to 3 digits
    from germinate.training.lr_find import suggest

    rows = list(csv.DictReader(open(tmp_path / "lr" / "lr_find.csv")))
    lrs, losses = [float(r["lr"]) for r in rows], [float(r["loss"]) for r in rows]
    assert suggest(lrs, losses, "valley") * 9 == pytest.approx(printed, rel=6e-3)
    # Auto, on the same data and seed, puts exactly that LR on the head of the unfrozen stage...
    stage = ["--freeze-epochs", "0", "--epochs", "1"]
    code, _, err = run_cli(["train", labelled, "--out", tmp_path / "auto", *common, *stage], capsys)
    assert code == 0, err
    auto = json.loads((tmp_path / "auto" / "config.json").read_text())["plan"][0]["lrs"]
    assert auto[2] == printed
    # ...and the printed number given back as --lr trains with the same LRs.
    code, _, err = run_cli(["train", labelled, "--out", tmp_path / "given", *common, *stage, "--lr", str(printed)], capsys)
    assert code == 0, err
    given = json.loads((tmp_path / "given" / "config.json").read_text())["plan"][0]["lrs"]
    assert given == auto
    assert (tmp_path / "auto" / "metrics.csv").read_text() == (tmp_path / "given" / "metrics.csv").read_text()


def test_cache_info_and_clear(tmp_path: Path, labelled: Path, capsys):
    from germinate.data.cache import decode_images
    from germinate.data.folders import scan_labelled

    decode_images(scan_labelled(labelled).files, 24, tmp_path / "c", workers=1)
    code, out, _ = run_cli(["cache", "--info", "--cache-dir", tmp_path / "c"], capsys)
    assert code == 0 and "24 px" in out and "36 images" in out
    code, out, _ = run_cli(["cache", "--clear", "--cache-dir", tmp_path / "c"], capsys)
    assert code == 0 and "removed 1 cached size(s)" in out
    code, out, _ = run_cli(["cache", "--info", "--cache-dir", tmp_path / "c"], capsys)
    assert "0.0 MiB in 0 size(s)" in out


@pytest.mark.parametrize("command", [[], ["train"], ["lr-find"], ["predict"], ["evaluate"], ["show-batch"], ["report"],
                                     ["serve"], ["export"], ["cache"]])
def test_every_help_page_prints(command, capsys):
    # argparse formats help strings with %: a stray one in a setting's help would crash --help
    code, out, err = run_cli([*command, "--help"], capsys)
    assert code == 0 and "usage: germinate" in out and not err


def test_every_accuracy_benchmark_setting_is_a_valid_run(tmp_path, capsys):
    # bench_accuracy.py passes each setting's flags to `germinate train`: a typo or a combination
    # the CLI refuses would otherwise show only when a 7-25 minute benchmark run starts
    import importlib.util

    from germinate.cli import _config_from, build_parser

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def config(name):
        flags = bench.SETTINGS[name]
        try:
            return _config_from(build_parser().parse_args(["train", str(tmp_path), *flags.split()]))
        except SystemExit:
            pytest.fail(f"{name}: {flags!r} is refused: {capsys.readouterr().err}")

    assert {"default", "best", "recipe", "warmup10"} <= set(bench.SETTINGS)
    for name in bench.SETTINGS:
        assert config(name).train_dir == str(tmp_path), name
    # settings measured before the warm-up keep their meaning; the default and the presets set their own
    assert config("fixed3-e12").warmup_pct == 0 and config("best").warmup_pct == 0
    assert config("default").warmup_pct == 0.1 and config("rotate-180").warmup_pct == 0.1
