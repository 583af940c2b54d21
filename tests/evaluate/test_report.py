"""The run report: well-formed, every section, every image embedded, and it renders."""

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from germinate.evaluate.report import write_report

# The headline first: the result, then what explains it, then how the run was set up.
SECTIONS = ["result", "metrics", "most-confused", "top-losses", "training", "plan", "data", "model", "reproduce"]


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.images, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("script", "link", "iframe"):
            self.errors.append(f"external or active content: <{tag}>")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


def test_report_is_well_formed_with_every_section_and_image(tiny_run: Path):
    (tiny_run / "report.html").unlink()
    path = write_report(tiny_run)
    html = path.read_text()
    checker = _Checker()
    checker.feed(html)
    assert not checker.errors and not checker.stack
    assert checker.ids == SECTIONS
    names = {"curves.png", "schedule.png", "lr_find_head.png", "lr_find_unfrozen.png", "confusion.png", "top_losses.png"}
    expected = {n for n in names if (tiny_run / n).exists()}
    assert {"curves.png", "schedule.png", "confusion.png", "top_losses.png"} <= expected
    assert len(checker.images) == len(expected)
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "germinate train" in html and "http" not in html.replace("http://www.w3.org", "")
    # The first screen says the score with and without TTA, the time and the command.
    final = json.loads((tiny_run / "final.json").read_text())
    head = html.split('<section id="result">', 1)[1].split("</section>", 1)[0]
    assert f"micro-F1 {final['tta']['f1_micro']:.4f} with TTA, {final['plain']['f1_micro']:.4f} without" in head
    assert "minutes" in head and "germinate train" in head


def test_top_losses_name_the_truth_and_the_prediction(tiny_run: Path, monkeypatch):
    import numpy as np

    from germinate import finish
    from germinate.data.bundle import load_folder

    cfg = json.loads((tiny_run / "config.json").read_text())["config"]
    titles = []
    monkeypatch.setattr(finish.plots, "image_grid", lambda images, t, path: titles.extend(t))

    class _Learn:  # just what plot_top_losses reads
        data = load_folder(cfg["train_dir"], 40, seed=cfg["seed"])
        from germinate.config import TrainConfig as _C
        cfg_ = _C.from_dict(cfg)

    learn = _Learn()
    learn.cfg = learn.cfg_
    n, k = len(learn.data.valid), len(learn.data.classes)
    probs = np.full((n, k), 0.1 / (k - 1))
    probs[np.arange(n), (learn.data.valid.labels + 1) % k] = 0.9  # every prediction wrong, by one class
    finish.plot_top_losses(learn, probs, tiny_run / "unused.png")
    assert titles
    for t in titles:
        truth, predicted = t.splitlines()[:2]
        assert truth.startswith("truth: ") and predicted.startswith("predicted: ")
        ti, pi = learn.data.classes.index(truth[7:]), learn.data.classes.index(predicted[11:])
        assert pi == (ti + 1) % k


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(tiny_run: Path, tmp_path: Path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
         (tiny_run / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[0] >= 800
    assert img.std() > 10  # not a blank page: text, tables and plots
    assert (img < 128).mean() > 0.005  # some dark pixels (text)


def test_an_older_runs_report_shows_the_defaults_of_settings_it_predates(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"].pop("pool") == "concat"  # as written before --pool existed
    (run / "config.json").write_text(json.dumps(cfg))
    model = write_report(run).read_text().split('<section id="model">', 1)[1].split("</section>", 1)[0]
    assert "<td>pool</td><td>concat</td>" in model.replace(" ", ""), model
