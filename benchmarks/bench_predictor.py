"""The served model's own latency, without HTTP: `germinate serve`'s Predictor (the run's exported
model, batchnorm folded, the flip policy's fixed TTA views) answering for image bytes, one image
and eight images a call, on the device asked for. bench_serve.py measures the whole server.

    python benchmarks/bench_predictor.py RUN_DIR IMAGE_DIR [--device cuda] [--calls 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from germinate.serve.predictor import Limits, Predictor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--calls", type=int, default=50)
    args = p.parse_args()
    predictor = Predictor(args.run_dir, device=args.device)
    files = sorted(f for f in Path(args.images).rglob("*") if f.is_file())
    blobs = [f.read_bytes() for f in files]
    name = torch.cuda.get_device_name(0) if predictor.device.type == "cuda" else "CPU"
    print(f"{name}, {predictor.info.arch}, {predictor.info.eval_size} px, {len(predictor.views)} TTA views, "
          f"{len(predictor.nets)} model(s)")
    for per_call in (1, 8):
        times = []
        for i in range(args.calls + 3):  # 3 untimed calls: cuDNN autotuning, first allocations
            batch = [blobs[(i * per_call + j) % len(blobs)] for j in range(per_call)]
            start = time.perf_counter()
            predictor.probabilities([predictor.decode(b, Limits().max_pixels) for b in batch])
            if i >= 3:
                times.append(time.perf_counter() - start)
        ms = np.array(times) * 1000
        print(f"{per_call} image(s) a call: p50 {np.median(ms):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
              f"{per_call * 1000 / np.median(ms):.1f} images/s (decode and TTA included)")


if __name__ == "__main__":
    main()
