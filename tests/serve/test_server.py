"""`germinate serve` on a loopback port: every endpoint, good and bad uploads, a bounded
concurrent load, and the upload page driven in headless Chromium."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from germinate.inference import predict_folder
from germinate.serve.app import create_app
from germinate.serve.predictor import Limits, Predictor
from tests.conftest import PROB_ATOL

LIMITS = Limits(max_bytes=200_000, max_pixels=1_000_000, max_files=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread on 127.0.0.1, stopped when the test module ends."""

    def __init__(self, app):
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(tiny_run: Path):
    server = Server(create_app(Predictor(tiny_run), LIMITS, max_batch=8, max_wait=0.02))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def images(tiny_run: Path, tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """Eight synthetic images and what `germinate predict` says of them (all TTA views)."""
    from tests.conftest import COLOURS, make_image

    folder = tmp_path_factory.mktemp("serve-images")
    rng = np.random.default_rng(7)
    for i, colour in enumerate(list(COLOURS.values()) * 3):
        make_image(colour, rng, size=60).save(folder / f"img{i}.png")
    files, probs, _ = predict_folder(tiny_run, folder)
    return files, probs


def _post(url: str, paths: list[Path], field: str = "files", **params) -> httpx.Response:
    files = [(field, (p.name, p.read_bytes(), "image/png")) for p in paths]
    return httpx.post(f"{url}/predict", files=files, params=params, timeout=60)


def test_health_ready_model_and_openapi(served: Server, tiny_run: Path):
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{served.url}/ready").json() == {"ready": True}
    model = httpx.get(f"{served.url}/model").json()
    assert model["classes"] == ["Blue leaf", "Green-leaf", "Red leaf"] and model["arch"] == "efficientnet_lite0"
    assert model["tta_views"] == 8 and model["flip"] == "top-down" and model["backend"] == "pytorch"
    assert model["mask"] == "none"
    import json

    final = json.loads((tiny_run / "final.json").read_text())
    assert model["validation_f1_micro"]["tta"] == final["tta"]["f1_micro"]
    assert model["weights_sha256"]["model.safetensors"] == json.loads((tiny_run / "model.json").read_text())["files"]["model.safetensors"]
    assert "/predict" in httpx.get(f"{served.url}/openapi.json").json()["paths"]
    page = httpx.get(f"{served.url}/").text
    assert "<input" in page and "http" not in page.replace("http-equiv", "")  # no CDN: works offline


def test_predictions_equal_germinate_predict(served: Server, images):
    files, expected = images
    r = _post(served.url, files[:4], top_k=3)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    classes = ["Blue leaf", "Green-leaf", "Red leaf"]
    for path, p, exp in zip(files[:4], preds, expected[:4]):
        assert p["file"] == path.name and len(p["top"]) == 3
        scores = {t["label"]: t["score"] for t in p["top"]}
        assert np.allclose([scores[c] for c in classes], exp, atol=PROB_ATOL)
        assert [t["score"] for t in p["top"]] == sorted((t["score"] for t in p["top"]), reverse=True)
        assert p["margin"] == pytest.approx(p["top"][0]["score"] - p["top"][1]["score"], abs=1e-5)
        assert p["ambiguous"] == (p["margin"] < 0.2)
    # A raw image body works too, and top_k=1 gives one class.
    raw = httpx.post(f"{served.url}/predict", content=files[5].read_bytes(), params={"top_k": 1, "filename": "x.png"},
                     headers={"Content-Type": "image/png"}, timeout=60).json()["predictions"][0]
    assert raw["file"] == "x.png" and len(raw["top"]) == 1
    assert raw["top"][0]["label"] == classes[int(expected[5].argmax())]


def test_many_images_at_once_are_forwarded_in_chunks_with_the_same_answers(tiny_run: Path, images):
    from germinate.serve import predictor as P

    files, expected = images
    predictor = Predictor(tiny_run)
    imgs = [predictor.decode(f.read_bytes(), 10**6) for f in files]
    n_views = len(predictor.views) * len(imgs)
    assert n_views > 2 * P.FORWARD_BATCH and n_views % P.FORWARD_BATCH  # several passes, the last partial
    assert np.allclose(predictor.probabilities(imgs), expected, atol=PROB_ATOL)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_bad_requests_get_a_4xx_and_one_line_and_the_server_lives_on(served: Server, images):
    good = images[0][0].read_bytes()
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big, "PNG")
    cases = [
        ({"files": [("files", ("a.png", b"this is not an image", "image/png"))]}, 400, "not a usable image"),
        ({"files": [("files", ("t.png", good[: len(good) // 2], "image/png"))]}, 400, "t.png: not a usable image"),
        ({"files": [("files", ("e.png", b"", "image/png"))]}, 400, "empty upload"),
        ({"files": [("files", ("big.png", big.getvalue(), "image/png"))]}, 413, "too large"),
        ({"files": [("files", ("bomb.png", _png_header_only(20_000, 20_000), "image/png"))]}, 413, "too large"),
        ({"files": [("files", (f"{i}.png", good, "image/png")) for i in range(5)]}, 413, "too many"),
        ({"files": [("picture", ("a.png", good, "image/png"))]}, 400, "unexpected field 'picture'"),
        ({"data": {"files": "not a file"}, "files": [("file", ("a.png", good, "image/png"))]}, 400, "holds text"),
        ({"data": {"files": "not a file"}}, 415, "multipart/form-data"),
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty upload"),
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415, "multipart/form-data"),
        ({"files": [("files", ("a.png", good, "image/png"))], "params": {"top_k": 0}}, 400, "top_k"),
        ({"files": [("files", ("a.png", good, "image/png"))], "params": {"top_k": "x"}}, 400, "top_k"),
    ]
    for kwargs, status, fragment in cases:
        r = httpx.post(f"{served.url}/predict", timeout=60, **kwargs)
        assert r.status_code == status, (fragment, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"} and fragment in body["error"] and "\n" not in body["error"], body
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"
    assert _post(served.url, images[0][:1]).status_code == 200


def test_concurrent_requests_are_batched_and_every_answer_is_right(served: Server, images):
    files, expected = images
    classes = ["Blue leaf", "Green-leaf", "Red leaf"]
    before = httpx.get(f"{served.url}/health").json()
    jobs = [(i % len(files),) for i in range(48)]
    started = time.time()

    def one(job):
        i = job[0]
        r = _post(served.url, [files[i]], top_k=3)
        return i, r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(one, jobs, timeout=120))
    assert time.time() - started < 120
    assert len(answers) == len(jobs)  # none lost
    for i, status, body in answers:
        assert status == 200
        p = body["predictions"][0]
        scores = {t["label"]: t["score"] for t in p["top"]}
        assert p["file"] == files[i].name
        assert np.allclose([scores[c] for c in classes], expected[i], atol=PROB_ATOL)
    after = httpx.get(f"{served.url}/health").json()
    assert after["images"] - before["images"] == len(jobs)
    assert after["largest_batch"] > 1  # requests that arrived together were classified together


def test_onnx_export_matches_pytorch_and_serves(tiny_run: Path, images, tmp_path: Path):
    import onnxruntime as ort
    import torch

    from germinate.cli import main
    from germinate.models.export import load_model

    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_run), "--onnx", str(out)]) == 0
    net, info = load_model(tiny_run)
    from germinate.data.augment import eval_transform
    from germinate.data.cache import decode_images

    src = decode_images(images[0], info.source_px).source
    x = torch.stack([eval_transform(info.eval_size)(src.get(i)) for i in range(len(src))])
    with torch.no_grad():
        torch_probs = net.eval()(x).softmax(1).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"images": x.numpy()})[0]
    assert onnx_probs.shape == (len(src), 3)
    # ONNX Runtime's kernels are not PyTorch's: measured differences 1e-5 to 1.2e-4
    assert np.abs(onnx_probs - torch_probs).max() <= PROB_ATOL
    # The same answers through the server with --onnx.
    onnx_pred, torch_pred = Predictor(tiny_run, onnx=out), Predictor(tiny_run)
    imgs = [onnx_pred.decode(p.read_bytes(), 10**6) for p in images[0]]
    assert np.abs(onnx_pred.probabilities(imgs) - torch_pred.probabilities(imgs)).max() <= 1e-4


def _chromedriver():
    import shutil

    driver, browser = shutil.which("chromedriver"), shutil.which("chromium") or shutil.which("chromium-browser")
    if not (driver and browser):
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs Debian's packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_upload_page_in_headless_chromium_shows_the_predicted_species(data_dir: Path, tmp_path_factory):
    """Train a small model on real seedlings, serve it, pick a real image on the page, read the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from germinate import TrainConfig, train

    base = tmp_path_factory.mktemp("page")
    cfg = TrainConfig(train_dir=str(data_dir / "train"), limit_per_class=5, size=32, bs=8, freeze_epochs=1, epochs=0,
                      quiet=True)
    train(cfg, base / "run")
    image = sorted((data_dir / "train" / "Maize").glob("*.png"))[0]
    predictor = Predictor(base / "run")
    probs = predictor.probabilities([predictor.decode(image.read_bytes(), 10**8)])[0]
    expected = predictor.info.classes[int(probs.argmax())]
    server = Server(create_app(predictor))
    browser = _chromedriver()
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 60).until(lambda b: "classes" in b.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "pick").send_keys(str(image))
        label = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".card .label"))
        assert label[0].text == expected
        assert image.name in browser.find_element(By.CSS_SELECTOR, ".card").text
        browser.save_screenshot(str(base / "page.png"))
        assert (base / "page.png").stat().st_size > 5000
    finally:
        browser.quit()
        server.stop()


def test_germinate_serve_in_a_real_process_defaults_to_onnx_runtime_on_cpu(tiny_run: Path, images, tmp_path: Path):
    import shutil
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "germinate", "serve", str(run), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/model").json()["backend"] == "onnxruntime"
        assert (run / "model.onnx").exists() and (run / "model.onnx.json").exists()  # exported once, beside the model
        files, expected = images
        p = _post(url, files[:1]).json()["predictions"][0]
        scores = {t["label"]: t["score"] for t in p["top"]}
        assert np.allclose([scores[c] for c in ["Blue leaf", "Green-leaf", "Red leaf"]], expected[0], atol=PROB_ATOL)
    finally:
        proc.terminate()
        proc.wait(30)
    # A second start reuses the export; a wrong --onnx file is one line and exit 2.
    before = (run / "model.onnx").stat().st_mtime_ns
    from germinate.models.onnx_export import ensure_onnx

    assert ensure_onnx(run) == run / "model.onnx" and (run / "model.onnx").stat().st_mtime_ns == before
    out = subprocess.run([sys.executable, "-m", "germinate", "serve", str(run), "--onnx", str(tmp_path / "none.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr
