"""A real process stopped by SIGTERM mid-run: it checkpoints, exits cleanly, and resumes."""

import csv
import json
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
    cmd = [sys.executable, "-m", "germinate", "train", str(train_dir), "--out", str(run), "--preset", "recipe", "--size", "32",
           "--bs", "4", "--freeze-epochs", "1", "--cycles", "2", "--cycle-mult", "2", "--precompute-augs", "1", "--lr", "1e-3", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    def epochs_done() -> int:
        return len(list(csv.DictReader(open(run / "metrics.csv")))) if (run / "metrics.csv").exists() else 0

    while epochs_done() < 1 and time.time() < deadline and proc.poll() is None:
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
    assert 1 <= done < 4

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["head"] + ["unfrozen"] * 3
    assert (run / "model.json").exists() and (run / "report.html").exists()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2  # already finished: refused, one line


def test_show_batch_draws_a_grid(tmp_path: Path, labelled: Path):
    out = tmp_path / "batch.png"
    assert main(["show-batch", str(labelled), "--out", str(out), "--n", "6", "--size", "32"]) == 0
    import numpy as np
    from PIL import Image

    img = Image.open(out)
    assert img.width > 300 and img.height > 200
    # --trivial-augment is drawn too (through the per-image path, its only one), not ignored
    trivial = tmp_path / "trivial.png"
    assert main(["show-batch", str(labelled), "--out", str(trivial), "--n", "6", "--size", "32", "--trivial-augment"]) == 0
    drawn, plain = np.array(Image.open(trivial)), np.array(img)
    assert drawn.shape == plain.shape and not np.array_equal(drawn, plain)


# ---- a stop in every phase resumes exactly ------------------------------------------------------
import contextlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from germinate import TrainConfig, resume, train  # noqa: E402
from germinate.errors import GerminateError, TrainingInterrupted  # noqa: E402
from germinate.ui import Reporter  # noqa: E402


class SignalAt(Reporter):
    """A quiet reporter that sends this process SIGINT (as Ctrl-C would) after the `after`-th step
    of the `nth` progress bar whose description starts with `phase`."""

    def __init__(self, phase: str, nth: int = 1, after: int = 1):
        super().__init__(quiet=True)
        self.phase, self.nth, self.after, self.seen = phase, nth, after, 0

    @contextlib.contextmanager
    def progress(self, description: str, total: int):
        if not description.startswith(self.phase):
            yield lambda n=1, **f: None
            return
        self.seen += 1
        count = [0]

        def advance(n=1, **fields):
            count[0] += n
            if self.seen == self.nth and count[0] == self.after:
                os.kill(os.getpid(), signal.SIGINT)

        yield advance


def _cfg(train_dir: Path) -> TrainConfig:
    # precompute on (the default), both stages, a restart in the unfrozen stage; the head's LR from
    # the range test (the unfrozen stage's would run the same code, at twice the test's time);
    # --bn-reestimate, so that every phase the recipe can have is stopped in; stochastic depth, so
    # that its random draws (and the network built on resume) must repeat too
    return TrainConfig.from_preset("recipe", train_dir=str(train_dir), size=32, bs=4, freeze_epochs=1, cycles=2,
                                   cycle_mult=1, lrs=[1e-4, 3e-4, 1e-3], seed=11, quiet=True, bn_reestimate=True,
                                   drop_path=0.3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ref")
    train_dir = make_labelled(base / "train", per_class=16)
    train(_cfg(train_dir), base / "whole")
    return train_dir, base / "whole"


PHASES = [("recalibrating batchnorm", 1, 1), ("precomputing features", 1, 1), ("LR range test", 1, 10),
          ("head", 1, 3), ("unfrozen", 1, 4), ("validating", 1, 1), ("predicting", 1, 1)]


@pytest.mark.parametrize("phase,nth,after", PHASES, ids=[f"{p} #{n}" for p, n, _ in PHASES])
def test_a_stop_in_any_phase_resumes_to_the_uninterrupted_result(reference, tmp_path: Path, phase, nth, after):
    train_dir, whole = reference
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        train(_cfg(train_dir), cut, reporter=SignalAt(phase, nth, after))
    assert (cut / "checkpoints" / "last.pt").exists() and not (cut / "final.json").exists()
    resume(cut)
    for name in ("metrics.csv", "lrs.csv"):
        assert (cut / name).read_text() == (whole / name).read_text(), name
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    final_a, final_b = (json.loads((d / "final.json").read_text()) for d in (whole, cut))
    assert final_a["tta"]["f1_micro"] == final_b["tta"]["f1_micro"]


def test_a_checkpoint_keeps_the_batchnorm_eps_and_an_older_one_resumes_with_its_own(reference, tmp_path: Path):
    from germinate.models.backbones import LEGACY_LITE_BN_EPS, LITE_BN_EPS, batchnorm_eps
    from germinate.models.export import load_model

    train_dir, _ = reference
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        train(_cfg(train_dir), cut, reporter=SignalAt("unfrozen"))
    path = cut / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    assert state["bn_eps"] == LITE_BN_EPS  # not in the weights: a resume rebuilds the body with it
    del state["bn_eps"]  # as germinate wrote checkpoints before, when Lite bodies had timm's eps
    torch.save(state, path)
    learn = resume(cut)
    assert batchnorm_eps(learn.net.body) == LEGACY_LITE_BN_EPS  # the run goes on as it began
    meta = json.loads((cut / "model.json").read_text())
    assert meta["bn_eps"] == LEGACY_LITE_BN_EPS and meta["format_version"] == 1
    assert batchnorm_eps(load_model(cut)[0].body) == LEGACY_LITE_BN_EPS


def test_resume_refuses_changed_data_and_works_from_any_folder(tmp_path: Path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    make_labelled(tmp_path / "train", per_class=16)
    cfg = _cfg(Path("train"))  # relative: stored absolute
    with pytest.raises(TrainingInterrupted):
        train(cfg, "cut", reporter=SignalAt("recalibrating batchnorm"))
    saved = json.loads((tmp_path / "cut" / "config.json").read_text())["config"]
    assert saved["train_dir"] == str(tmp_path / "train")
    extra = tmp_path / "train" / "Red leaf" / "new.png"
    Image.new("RGB", (40, 40), (200, 0, 0)).save(extra)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(GerminateError, match=r"changed since the run started: 1 file\(s\) added \(e.g. 'Red leaf/new.png'\)"):
        resume(tmp_path / "cut")
    extra.unlink()
    (tmp_path / "train" / "Blue leaf" / "img 03.png").unlink()
    with pytest.raises(GerminateError, match=r"1 file\(s\) removed or unreadable \(e.g. 'Blue leaf/img 03.png'\)"):
        resume(tmp_path / "cut")
