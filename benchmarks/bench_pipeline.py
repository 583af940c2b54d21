"""Where training time goes, every figure measured in this run on this machine, for the same
architecture, image size and batch size:

 1. model-only training throughput (uint8 batches already in memory): the ceiling
 2. germinate end-to-end training throughput from the folder: cold cache and warm cache
 3. warm / ceiling; and the same epoch with each augmentation path (--augment image: one image
    at a time by torchvision, the CPU default; --augment batch: the batch at once on the device)
 4. the same training through fastai v2 (`pip install -e .[bench]`), and germinate's speed-up
 5. the frozen stage with and without precomputed activations
 6. a large-image variant (the shared images upscaled to ~1500 px PNGs): epoch time without
    and with the cache

    python benchmarks/bench_pipeline.py [--quick] [--size 160] [--bs 32] [--arch efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def learner(train_dir: Path, cache: Path, args, **kw):
    from germinate import TrainConfig, create_learner

    cfg = TrainConfig(train_dir=str(train_dir), size=args.size, bs=args.bs, arch=args.arch, quiet=True,
                      cache_dir=str(cache), limit_per_class=args.limit,
                      **{"fixed_blocks": 0, **kw})  # the whole network, as fastai trains it
    return create_learner(cfg)


def train_epoch_seconds(learn, epochs: int = 1) -> float:
    """Seconds per training epoch (no validation), whole network unfrozen, at a fixed LR."""
    from germinate.training.plan import Stage

    learn.unfreeze()
    stage = Stage("bench", 0, schedule="flat", epochs=epochs, lrs=(1e-4,) * 3)
    sched = stage.make_schedule(learn.steps_per_epoch())
    learn.plan, learn.pos.stage = [stage], 0
    start = time.perf_counter()
    for e in range(epochs):
        learn.pos.epoch, learn.pos.batch = e, 0
        learn._train_epoch(stage, sched, e)
    return (time.perf_counter() - start) / epochs


def path_epoch_seconds(learn, path: str) -> float:
    """train_epoch_seconds with the training views made by `path` (batch or image)."""
    saved, learn.augment_on = learn.augment_on, path
    try:
        return train_epoch_seconds(learn)
    finally:
        learn.augment_on = saved


def ceiling(learn, steps: int) -> float:
    """Images/s of forward+backward+step on one uint8 batch kept in memory."""
    learn.unfreeze()
    learn.net.train()
    x = torch.randint(0, 256, (learn.cfg.bs, 3, learn.cfg.size, learn.cfg.size), dtype=torch.uint8).to(learn.device)
    y = torch.randint(0, len(learn.data.classes), (learn.cfg.bs,)).to(learn.device)
    for _ in range(2):
        learn._step(x, y, False)
    start = time.perf_counter()
    for _ in range(steps):
        learn._step(x, y, False)
    return steps * learn.cfg.bs / (time.perf_counter() - start)


def fastai_epoch_seconds(train_dir: Path, args) -> tuple[float, int] | None:
    """Seconds of one unfrozen training epoch of fastai v2 (its defaults: Resize, aug_transforms
    on the CPU, fp32) on the same folder, arch, size and batch size; and its training images."""
    try:
        from fastai.vision.all import (
            ImageDataLoaders,
            Resize,
            aug_transforms,
            vision_learner,
        )
    except ImportError:
        return None
    dls = ImageDataLoaders.from_folder(train_dir, valid_pct=0.2, seed=42, item_tfms=Resize(round(args.size * 1.25)),
                                       batch_tfms=aug_transforms(size=args.size, flip_vert=True), bs=args.bs, device="cpu")
    learn = vision_learner(dls, args.arch, pretrained=False)
    learn.unfreeze()
    learn.fit(1, 1e-4)  # warm-up epoch: first-use costs
    start = time.perf_counter()
    learn.fit(1, 1e-4)
    total = time.perf_counter() - start
    # fastai's fit includes validation; time it alone and remove it for a like-for-like epoch
    start = time.perf_counter()
    learn.validate()
    return total - (time.perf_counter() - start), len(dls.train_ds)


def frozen_stage_seconds(learn, epochs: int, precompute: bool) -> float:
    """The head-only stage of `epochs` epochs, with or without precomputed features."""
    from germinate.training.plan import Stage

    learn._features = None
    learn.freeze()
    stage = Stage("head", 2, schedule="cosine", epochs=epochs, lrs=(1e-3,) * 3, precompute=precompute)
    learn.plan, learn.pos = [stage], type(learn.pos)()
    start = time.perf_counter()
    learn.fit_stage(stage)
    return time.perf_counter() - start


def make_large(src: Path, dst: Path, per_class: int, px: int) -> None:
    """Upscale `per_class` shared images per class to px-sided PNGs (standing in for Kaggle's originals)."""
    from concurrent.futures import ProcessPoolExecutor


    jobs = []
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / d.name).mkdir(parents=True)
        jobs += [(f, dst / d.name / f.name) for f in sorted(d.iterdir())[:per_class]]

    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_upscale, [(a, b, px) for a, b in jobs], chunksize=8))


def _upscale(job) -> None:
    from PIL import Image

    src, dst, px = job
    Image.open(src).convert("RGB").resize((px, px), Image.Resampling.BICUBIC).save(dst, compress_level=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller version, under 3 minutes")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--large-px", type=int, default=1500)
    args = p.parse_args()
    args.limit = 25 if args.quick else None
    large_per_class = 8 if args.quick else 40
    train_dir = DATA / "train"
    rows: list[tuple[str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="germinate-bench-"))
    try:
        # 2 (cold) first: an empty cache, decoding included
        start = time.perf_counter()
        learn = learner(train_dir, tmp / "cache", args)
        load = time.perf_counter() - start
        n = len(learn.data.train)
        cold_epoch = train_epoch_seconds(learn)
        warm_epoch = train_epoch_seconds(learn)
        # the cache is warm now: a new learner loads without decoding
        start = time.perf_counter()
        learn = learner(train_dir, tmp / "cache", args)
        warm_load = time.perf_counter() - start
        ceil = ceiling(learn, 6 if args.quick else 20)
        w1 = learner(train_dir, tmp / "cache", args, workers=1)
        w1_epoch = train_epoch_seconds(w1)
        image_epoch = path_epoch_seconds(learn, "image")
        batch_epoch = path_epoch_seconds(learn, "batch")
        rows += [
            ("1. model-only training (ceiling)", f"{ceil:.1f} img/s"),
            ("2. germinate, cold cache (decode + epoch)", f"{n / (load + cold_epoch):.1f} img/s  (decode {load:.1f} s, epoch {cold_epoch:.1f} s)"),
            ("2. germinate, warm cache (epoch)", f"{n / warm_epoch:.1f} img/s  (load {warm_load:.1f} s, epoch {warm_epoch:.1f} s)"),
            ("3. warm / ceiling", f"{n / warm_epoch / ceil:.2f}  (target >= 0.90)"),
            ("3. --augment batch (the batch at once, on the device)", f"{n / batch_epoch:.1f} img/s  ({n / batch_epoch / ceil:.2f} of ceiling)"),
            ("3. --augment image (per image, torchvision, as 0.1)", f"{n / image_epoch:.1f} img/s  ({n / image_epoch / ceil:.2f} of ceiling)"),
            ("   warm cache, --workers 1 instead of 0", f"{n / w1_epoch:.1f} img/s"),
        ]
        fa = fastai_epoch_seconds(train_dir if not args.quick else _subset(train_dir, tmp / "subset", 25), args)
        if fa is None:
            rows.append(("4. fastai v2", "not installed: pip install -e .[bench]"))
        else:
            fa_rate = fa[1] / fa[0]
            rows += [("4. fastai v2, same training epoch", f"{fa_rate:.1f} img/s  (epoch {fa[0]:.1f} s, {fa[1]} images)"),
                     ("4. germinate speed-up over fastai", f"{n / warm_epoch / fa_rate:.2f}x  (target >= 1.5x)")]
        head_epochs = 2
        plain = frozen_stage_seconds(learn, head_epochs, precompute=False)
        pre = frozen_stage_seconds(learn, head_epochs, precompute=True)
        rows += [
            (f"5. frozen stage, {head_epochs} epochs, no precompute", f"{plain:.1f} s"),
            (f"5. frozen stage, {head_epochs} epochs, precomputed", f"{pre:.1f} s  ({plain / pre:.1f}x faster; target >= 3x)"),
        ]
        large = tmp / "large"
        make_large(train_dir, large, large_per_class, args.large_px)
        args.limit = None
        t0 = time.perf_counter()
        nocache = learner(large, tmp / "cache-large", args, use_cache=False)
        check = time.perf_counter() - t0
        e_nocache = train_epoch_seconds(nocache)
        t0 = time.perf_counter()
        cached = learner(large, tmp / "cache-large", args)
        build = time.perf_counter() - t0
        e_cache = train_epoch_seconds(cached)
        rows += [
            (f"6. {args.large_px} px PNGs ({len(cached.data.train)} train), epoch without cache", f"{e_nocache:.1f} s  (one-time check {check:.1f} s)"),
            (f"6. {args.large_px} px PNGs, epoch with cache", f"{e_cache:.1f} s  ({e_nocache / e_cache:.1f}x faster; one-time build {build:.1f} s; target >= 5x)"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.arch}, {args.size} px, batch {args.bs}, {torch.get_num_threads()} threads, {n} training images"
          f"{' (quick)' if args.quick else ''}")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _subset(src: Path, dst: Path, per_class: int) -> Path:
    """Symlinks to `per_class` images per class, for fastai's quick run."""
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / d.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(d.iterdir())[:per_class]:
            (dst / d.name / f.name).symlink_to(f)
    return dst


if __name__ == "__main__":
    sys.exit(main())
