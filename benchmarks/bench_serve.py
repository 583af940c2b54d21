"""`germinate serve` on loopback: requests/s and p50/p99 latency for single images and for batches
of 8 per request, PyTorch against ONNX Runtime, one client and eight concurrent clients.

    python benchmarks/bench_serve.py [--requests 80] [--size 128]

A small model is trained on the shared data only to have weights of the real architecture and
test size (speed does not depend on accuracy); each backend runs in its own `germinate serve`
process, and the clients are threads in this one.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "germinate", "serve", str(run), "--port", str(port), *extra],
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def _load(url: str, images: list[bytes], per_request: int, clients: int, requests: int) -> dict:
    import httpx

    def one(i: int) -> float:
        files = [("files", (f"{j}.png", images[(i + j) % len(images)], "image/png")) for j in range(per_request)]
        start = time.perf_counter()
        r = httpx.post(f"{url}/predict", files=files, timeout=120)
        r.raise_for_status()
        return time.perf_counter() - start

    one(0)  # warm
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = np.array(list(pool.map(one, range(requests))))
    wall = time.perf_counter() - start
    return {"rps": requests / wall, "ips": requests * per_request / wall,
            "p50": 1000 * np.percentile(lat, 50), "p99": 1000 * np.percentile(lat, 99)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=80)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args()
    from germinate import TrainConfig, train
    from germinate.models.onnx_export import export_onnx

    images = [f.read_bytes() for f in sorted((DATA / "test").glob("*.png"))[:64]]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(TrainConfig(train_dir=str(DATA / "train"), limit_per_class=10, size=args.size, freeze_epochs=1,
                          epochs=0, quiet=True), run)
        onnx = export_onnx(run, Path(tmp) / "model.onnx")
        print(f"efficientnet_lite0, test size {round(args.size * 1.25)} px, 8 TTA views, {args.requests} requests per row, "
              f"{os.cpu_count()} CPU cores")
        print(f"{'backend':<13}{'images/request':>15}{'clients':>8}{'requests/s':>12}{'images/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
        for backend, extra in (("pytorch", ["--backend", "pytorch"]), ("onnxruntime", ["--onnx", str(onnx)])):
            proc, url = _serve(run, extra)
            try:
                for per_request, clients in ((1, 1), (1, 8), (8, 1), (8, 4)):
                    r = _load(url, images, per_request, clients, args.requests)
                    print(f"{backend:<13}{per_request:>15}{clients:>8}{r['rps']:>12.1f}{r['ips']:>11.1f}"
                          f"{r['p50']:>9.0f}{r['p99']:>9.0f}")
            finally:
                proc.terminate()
                proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
