"""Two CPU processes under torchrun (gloo): one run folder, the same weights on both, validation
exactly as a single-process evaluate sees it, and a SIGTERM'd run that resumes to the same logs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from germinate.training.distributed import World
from tests.conftest import PROB_ATOL, make_labelled

# 15 per class: 3 per class held out, 9 validation images, an odd number: 5 and 4 per process.
# The head's LR from a (sharded) range test; the unfrozen stage's given, which runs the same code at
# several times the cost.
SETTINGS = ["--preset", "recipe", "--size", "32", "--bs", "4", "--freeze-epochs", "1", "--cycles", "2", "--cycle-len", "1",
            "--cycle-mult", "3", "--precompute-augs", "1", "--seed", "3", "--tta", "1", "--lrs", "1e-4,3e-4,1e-3"]


def torchrun(*args, **kw) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port()),
            "-m", "germinate", *map(str, args)]


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GERMINATE_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_labelled(tmp_path_factory.mktemp("dist") / "train", per_class=15)


@pytest.fixture(scope="module")
def two_process_run(data: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("dist-runs") / "run"
    proc = subprocess.run(torchrun("train", data, "--out", out, *SETTINGS), env=_env(), capture_output=True,
                          text=True, timeout=300)
    return out, proc


def test_two_processes_write_one_run_with_identical_weights(two_process_run):
    out, proc = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # one run folder, nothing beside it
    final = json.loads((out / "final.json").read_text())
    assert final["processes"] == 2 and final["identical_weights"] is True
    rows = _rows(out / "metrics.csv")
    assert [(r["stage"], r["epoch"]) for r in rows] == [("head", "1")] + [("unfrozen", str(e)) for e in range(1, 5)]
    # only rank 0 speaks: each message once
    assert proc.stderr.count("LR range test (head): lr") == 1, proc.stderr[-3000:]
    assert "batch 8 (4 on each of 2 processes)" in proc.stderr


def test_distributed_validation_equals_a_single_process_evaluate(two_process_run, tmp_path: Path):
    from germinate.inference import evaluate_folder

    out, proc = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["config"]
    valid = tmp_path / "valid"
    split = _rows(out / "split.csv")
    for r in split:
        if r["split"] == "valid":
            (valid / r["class"]).mkdir(parents=True, exist_ok=True)
            (valid / r["file"]).symlink_to(Path(config["train_dir"]) / r["file"])
    assert sum(r["split"] == "valid" for r in split) == 9
    result = evaluate_folder(out, valid, tmp_path / "eval", tta=1, device="cpu")
    last = _rows(out / "metrics.csv")[-1]
    final = json.loads((out / "final.json").read_text())
    assert result["n"] == 9
    # the last epoch's logged validation is the exported (final) model's, over all 9 images once
    assert float(last["valid_loss"]) == pytest.approx(result["plain"]["loss"], abs=PROB_ATOL)
    assert float(last["accuracy"]) == pytest.approx(result["plain"]["accuracy"])
    assert final["plain"]["loss"] == pytest.approx(result["plain"]["loss"], abs=PROB_ATOL)
    assert final["tta"]["loss"] == pytest.approx(result["loss"], abs=PROB_ATOL)
    assert final["tta"]["confusion"] == result["confusion"]


def _start(data: Path, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(torchrun("train", data, "--out", out, *SETTINGS, *extra), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_budgeted_run_under_torchrun_plans_and_watches_its_time_as_one(data: Path, tmp_path: Path):
    # the probe's epochs and every epoch's deadline check are rank 0's, broadcast: no rank waits alone.
    # With --sam: both ranks climb along the averaged gradient, so their weights stay the same.
    out = tmp_path / "run"
    proc = subprocess.run(torchrun("train", data, "--out", out, "--size", "32", "--bs", "4", "--time", "2", "--epochs", "3",
                                   "--seed", "3", "--tta", "1", "--sam", "0.05"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["time_budget"]["epochs"] == recorded["config"]["epochs"] == len(_rows(out / "metrics.csv"))
    assert json.loads((out / "final.json").read_text())["identical_weights"] is True
    assert proc.stderr.count("--time 2: the run took") == 1  # rank 0 speaks


def _wait_for_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.csv").exists() and len(_rows(out / "metrics.csv")) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    raise AssertionError("the run did not get that far")


def test_sigterm_under_torchrun_stops_both_and_resumes_to_the_same_logs(data: Path, two_process_run, tmp_path: Path):
    done, proc = two_process_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    run = _start(data, out)
    _wait_for_rows(out, 2, run)  # the head stage and the first unfrozen epoch are logged
    run.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler would
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and not (out / "final.json").exists(), err[-3000:]
    assert err.count("interrupted; resume with: germinate train --resume") == 1, err[-3000:]  # rank 0 for both
    assert err.count("stopping at the next safe point") == 1
    stopped_at = len(_rows(out / "metrics.csv"))
    assert stopped_at < 5
    one_process = tmp_path / "one-process"
    shutil.copytree(out, one_process)
    resumed = subprocess.run(torchrun("train", "--resume", out), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("metrics.csv", "lrs.csv"):
        assert (out / name).read_text() == (done / name).read_text(), name
    # The same checkpoint resumed by one process: the position is mapped to its steps.
    single = subprocess.run([sys.executable, "-m", "germinate", "train", "--resume", one_process], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "it was on 2 process(es), now 1: position mapped by images seen" in single.stderr, single.stderr[-2000:]
    assert len(_rows(one_process / "metrics.csv")) == 5


def test_a_process_that_dies_takes_the_others_down(data: Path, tmp_path: Path):
    out = tmp_path / "run"
    run = _start(data, out, "--lr", "1e-3")
    _wait_for_rows(out, 1, run)
    children = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    os.kill(int(children[-1]), signal.SIGKILL)
    start = time.monotonic()
    _, err = run.communicate(timeout=120)
    assert time.monotonic() - start < 90
    assert run.returncode != 0
    assert not any(Path(f"/proc/{c}").exists() for c in children)  # nobody left waiting
    # the survivor says why in one line (torchrun then prints its own failure summary)
    ours = [line for line in err.splitlines() if line.startswith("germinate: rank")]
    assert len(ours) == 1 and "error: lost contact with the other processes of the run" in ours[0], err[-3000:]
    assert "Read error" in ours[0] or "Connection" in ours[0] or "timed out" in ours[0]


def test_shards_cover_every_item_once_in_step():
    for n in (9, 10, 64, 65, 203):
        for size in (1, 2, 3):
            worlds = [World(r, size) for r in range(size)]
            shards = [w.shard(n) for w in worlds]
            assert np.array_equal(np.concatenate(shards), np.arange(n))  # in order, none twice
            batches = [w.shard_batches(n, 8) for w in worlds]
            assert len({len(b) for b in batches}) == 1  # the same number of batches on every rank
            assert all(0 < len(x) <= 8 for b in batches for x in b)
            assert [np.concatenate(b).tolist() for b in batches] == [s.tolist() for s in shards]
    g = np.arange(12)
    assert [World(r, 3).my_slice(g).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_sync_bn_on_the_cpu_is_a_one_line_error(data: Path, tmp_path: Path, capsys):
    from germinate.cli import main

    code = main(["train", str(data), "--out", str(tmp_path / "r"), "--sync-bn", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--sync-bn needs CUDA" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_commands_that_run_in_one_process_refuse_torchrun_once(monkeypatch, capsys, tmp_path: Path, rank: str):
    from germinate.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    if rank == "0":
        assert err == "germinate: error: only train and lr-find run on several processes; run report without torchrun\n"
    else:
        assert err == ""  # rank 0 speaks for both
