"""A real process stopped by SIGTERM mid-run: it checkpoints, exits cleanly, and resumes."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from germinate.cli import main
from tests.conftest import make_labelled


def test_sigterm_checkpoints_and_the_run_resumes(tmp_path: Path):
    train_dir = make_labelled(tmp_path / "train", per_class=16)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "germinate", "train", str(train_dir), "--out", str(run), "--size", "32", "--bs", "4",
           "--freeze-epochs", "1", "--cycles", "3", "--cycle-mult", "2", "--precompute-augs", "1", "--lr", "1e-3", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"germinate train --resume {run}" in err
    assert (run / "checkpoints" / "last.pt").exists() and not (run / "model.json").exists()
    done = len(list(csv.DictReader(open(run / "metrics.csv"))))
    assert 1 <= done < 8

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["head"] + ["unfrozen"] * 7
    assert (run / "model.json").exists() and (run / "report.html").exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # already finished: refused, one line


def test_show_batch_draws_a_grid(tmp_path: Path, labelled: Path):
    out = tmp_path / "batch.png"
    assert main(["show-batch", str(labelled), "--out", str(out), "--n", "6", "--size", "32"]) == 0
    from PIL import Image

    img = Image.open(out)
    assert img.width > 300 and img.height > 200
