"""Inference with batchnorm folded into the convolutions (models/fold_bn.py) against without.

    python benchmarks/bench_inference.py [--archs efficientnet_lite0,resnet50] [--size 160] [--bs 64]

1. Model only: images per second of one forward pass at the test size, the network as trained
   (batchnorm layers) and its folded copy, in alternation so that both see the same machine.
2. End to end: `predict_views`, the function behind `predict`, `evaluate` and a run's final
   evaluation, over the shared test images (794) with the default's 8 TTA views and with 1 view
   (a run's per-epoch validation), folded (germinate now) and not (as before), and how far their
   probabilities are apart.

Speed does not depend on the weights, so EfficientNet-Lite0 has its offline ImageNet weights and a
fresh head, and the others random weights (no download needed).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
sys.path.insert(0, str(ROOT / "src"))

from germinate.config import EVAL_SOURCE_FACTOR  # noqa: E402
from germinate.data.cache import decode_images  # noqa: E402
from germinate.data.folders import scan_unlabelled  # noqa: E402
from germinate.evaluate import predict as P  # noqa: E402
from germinate.models.backbones import OFFLINE_ARCHS  # noqa: E402
from germinate.models.export import ModelInfo  # noqa: E402
from germinate.models.fold_bn import fold_batchnorm  # noqa: E402
from germinate.models.network import create_network  # noqa: E402


def unfolded(net, size):
    """What predict_views did before folding: the network itself, in eval mode."""
    return copy.deepcopy(net).eval()


@torch.no_grad()
def model_only(arch: str, size: int, bs: int, reps: int) -> tuple[float, float]:
    net = create_network(arch, 12, pretrained=arch in OFFLINE_ARCHS).use_channels_last().eval()
    folded = fold_batchnorm(net, size)
    x = torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8)
    times: dict[str, list[float]] = {"bn": [], "folded": []}
    for m in (net, folded):
        m(x)  # warm-up
    for _ in range(reps):
        for key, m in (("bn", net), ("folded", folded)):
            started = time.perf_counter()
            m(x)
            times[key].append(time.perf_counter() - started)
    return bs / statistics.median(times["bn"]), bs / statistics.median(times["folded"])


def end_to_end(size: int, bs: int) -> list[tuple[int, float, float, float]]:
    files = scan_unlabelled(DATA / "test").files
    net = create_network("efficientnet_lite0", 12, pretrained=True)
    info = ModelInfo("efficientnet_lite0", [str(i) for i in range(12)], round(size / 1.25),
                     round(size * EVAL_SOURCE_FACTOR), (net.mean.flatten() / 255).tolist(),
                     (net.std.flatten() / 255).tolist(), "top-down", test_size=size)
    source = decode_images(files, info.source_px).source
    rows = []
    for n_views in (None, 0):  # every view the policy allows (8), and the plain one alone
        views = P.tta_views(info.flip, n_views)
        seconds, probs = {}, {}
        for key, fold in (("bn", unfolded), ("folded", fold_batchnorm)):
            P.fold_batchnorm = fold  # the one switch between the two
            started = time.perf_counter()
            probs[key] = P.predict_views([net], source, info, views, bs)
            seconds[key] = time.perf_counter() - started
        P.fold_batchnorm = fold_batchnorm
        diff = float(abs(probs["bn"] - probs["folded"]).max())
        rows.append((len(views), seconds["bn"], seconds["folded"], diff))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="efficientnet_lite0,resnet50")
    p.add_argument("--size", type=int, default=160, help="test size (the default's: 160)")
    p.add_argument("--bs", type=int, default=64, help="batch size (predict's default: 64)")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, batch {args.bs}")
    print("| backbone | model only, batchnorm | folded | speed-up |")
    print("| --- | --- | --- | --- |")
    for arch in args.archs.split(","):
        bn, folded = model_only(arch, args.size, args.bs, args.reps)
        print(f"| {arch} | {bn:.0f} img/s | {folded:.0f} img/s | {folded / bn:.2f}x |", flush=True)
    print(f"\n`predict_views` on {DATA / 'test'}, EfficientNet-Lite0:")
    print("| views | batchnorm | folded | speed-up | largest probability difference |")
    print("| --- | --- | --- | --- | --- |")
    for views, bn, folded, diff in end_to_end(args.size, args.bs):
        print(f"| {views} | {bn:.1f} s | {folded:.1f} s | {bn / folded:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
