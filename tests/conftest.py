"""Shared fixtures: the real Plant Seedlings data (when present), small synthetic folders, and a
private image cache per test session."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# float32 results of the same network differ with batch size and memory layout, because the
# CPU picks other kernels (measured 1e-5 to 4e-5 on probabilities here; more on other CPUs).
# Comparisons of such results use this tolerance; differences that must show are asserted
# to be at least ten times larger.
PROB_ATOL = 1e-3


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV file a run wrote (a missing file is an error, not an empty list)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _data_dir() -> Path | None:
    candidates = [os.environ.get("GERMINATE_DATA"), ROOT.parent / "shared" / "data" / "plant-seedlings"]
    for c in candidates:
        if c and (Path(c) / "train").is_dir():
            return Path(c)
    return None


# Under pytest-xdist (pyproject's addopts: two workers) each worker takes one core: two workers of
# two threads each on a 2-core machine ran the suite slower than one process did.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # the tests' own subprocesses too
    import torch

    torch.set_num_threads(1)

DATA = _data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared Plant Seedlings data not found (set GERMINATE_DATA)")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own image cache, so tests never see a user's."""
    os.environ["GERMINATE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data set's root (train/, test/, sample_submission.csv); skips when absent."""
    if DATA is None:
        pytest.skip("shared Plant Seedlings data not found (set GERMINATE_DATA)")
    return DATA


# Colours and shapes a small network tells apart within an epoch: the synthetic classes.
COLOURS = {"Red leaf": (200, 40, 40), "Green-leaf": (40, 180, 60), "Blue leaf": (40, 60, 200)}


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A noisy image dominated by one colour, with a random bright square."""
    arr = rng.normal(0, 25, (size, size, 3)) + np.array(colour)
    x, y = rng.integers(0, size - 12, 2)
    arr[y : y + 10, x : x + 10] = 255
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_labelled(root: Path, per_class: int = 12, size: int = 48, seed: int = 0) -> Path:
    """root/<class>/<i>.png for the synthetic classes (names with spaces and dashes)."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(colour, rng, size).save(root / name / f"img {i:02d}.png")
    return root


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """A small synthetic labelled folder (3 classes x 12 images)."""
    return make_labelled(tmp_path / "train")


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    """A flat folder of 7 synthetic images."""
    rng = np.random.default_rng(1)
    root = tmp_path / "test"
    root.mkdir()
    for i, colour in enumerate(list(COLOURS.values()) * 2 + [(128, 128, 128)]):
        make_image(colour, rng).save(root / f"t{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished training run on synthetic data, shared by tests that only read a run."""
    from germinate import TrainConfig, train

    base = tmp_path_factory.mktemp("tinyrun")
    train_dir = make_labelled(base / "train", per_class=16)
    cfg = TrainConfig.from_preset("recipe", train_dir=str(train_dir), size=32, bs=8, freeze_epochs=1, cycles=2,
                                  cycle_len=1, cycle_mult=1, precompute_augs=1, quiet=True, seed=3, lr_find_steps=40)
    train(cfg, base / "run")
    return base / "run"
