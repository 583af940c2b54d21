"""Distributed training throughput: 1 process, then N processes under torchrun, side by side.

For each world size: end-to-end training images per second (whole network, DistributedDataParallel
when N > 1, --bs per process, so N processes take N x bs images a step), the time one step takes,
and the time a step spends in communication: an all-reduce of as many gradient values as the
network has (what DDP sends each step), timed alone on the same process group.

    python benchmarks/bench_distributed.py [--procs 2] [--device cpu|cuda] [--size 128] [--bs 32]
                                           [--limit 40] [--epochs 1]

On this 2-core CPU the processes share the two cores (one thread each): it measures what the
distributed path costs, not a speed-up. On a machine with several GPUs, --device cuda --procs
<GPUs> gives the scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def worker(args) -> None:
    """One process's share: train `epochs` epochs, then time the gradient all-reduce."""
    import torch
    import torch.distributed as dist

    from germinate import TrainConfig
    from germinate.recipe import create_learner, join_world
    from germinate.training.plan import Stage

    cfg = TrainConfig(train_dir=str(DATA / "train"), size=args.size, bs=args.bs, limit_per_class=args.limit,
                      device=args.device, quiet=True, cache_dir=args.cache,
                      fixed_blocks=0)  # the whole network
    world, reporter = join_world(cfg, None)
    learn = create_learner(cfg, None, reporter, world)
    learn.unfreeze()
    stage = Stage("bench", 0, schedule="flat", epochs=args.epochs + 1, lrs=(1e-4,) * 3)
    sched = stage.make_schedule(learn.steps_per_epoch())
    learn.plan, learn.pos.stage = [stage], 0
    learn.pos.epoch, learn.pos.batch = 0, 0
    learn._train_epoch(stage, sched, 0)  # warm-up: first-use costs
    world.barrier()
    start = time.perf_counter()
    for e in range(1, args.epochs + 1):
        learn.pos.epoch, learn.pos.batch = e, 0
        learn._train_epoch(stage, sched, e)
    world.barrier()
    seconds = time.perf_counter() - start
    steps = learn.steps_per_epoch() * args.epochs
    images = steps * cfg.bs * world.size
    comm = 0.0
    if world.active:
        grads = torch.zeros(sum(p.numel() for p in learn.net.parameters()), device=world.device)
        for _ in range(2):
            dist.all_reduce(grads)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        t0, reps = time.perf_counter(), 10
        for _ in range(reps):
            dist.all_reduce(grads)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        comm = (time.perf_counter() - t0) / reps
    if world.is_main:
        print("RESULT " + json.dumps({"procs": world.size, "img_s": images / seconds, "step_s": seconds / steps,
                                      "comm_s": comm, "images": images, "threads": torch.get_num_threads(),
                                      "grad_values": sum(p.numel() for p in learn.net.parameters())}), flush=True)


def run(args, procs: int) -> dict:
    flags = ["--worker", "--device", args.device, "--size", str(args.size), "--bs", str(args.bs),
             "--limit", str(args.limit), "--epochs", str(args.epochs), "--cache", args.cache]
    if procs == 1:
        cmd = [sys.executable, __file__, *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), __file__, *flags]
    env = {**os.environ}
    if args.device == "cpu":  # the cores shared out between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{procs} process(es) failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--limit", type=int, default=40, help="images per class (12 classes)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--cache", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    args.cache = args.cache or tempfile.mkdtemp(prefix="germinate-dist-")
    rows = [run(args, 1), run(args, args.procs)]
    print(f"\nEfficientNet-Lite0, {args.size} px, --bs {args.bs} per process, {args.device}, "
          f"{rows[0]['grad_values'] / 1e6:.1f} M gradient values a step")
    print(f"{'processes':>9}  {'threads each':>12}  {'img/s':>7}  {'s/step':>7}  {'all-reduce s/step':>17}")
    for r in rows:
        comm = f"{r['comm_s']:.3f}" if r["procs"] > 1 else "-"
        print(f"{r['procs']:>9}  {r['threads']:>12}  {r['img_s']:>7.1f}  {r['step_s']:>7.3f}  {comm:>17}")
    print(f"throughput ratio {rows[1]['img_s'] / rows[0]['img_s']:.2f} ({args.procs} vs 1 process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
