"""What a SAM step costs against a plain one, and what its move uphill and back costs alone,
fused (`training.sam.climb`: foreach kernels over every parameter at once) against a loop over
the parameters (a few kernels each, as before). On a GPU at small batches the launches, not
the arithmetic, are the cost, so there the fused move matters; on a CPU it hardly shows.

    python benchmarks/bench_sam_step.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from germinate.models.network import create_network
from germinate.training.sam import batchnorm_stats_kept, climb, climb_back


@torch.no_grad()
def looped_climb(params: list[torch.Tensor], rho: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The move as it was written before: a norm, a scale and an add per parameter."""
    grads = [(p, p.grad) for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for _, g in grads]))
    moved = [(p, (g * (rho / (norm + 1e-12))).to(p.dtype)) for p, g in grads]
    for p, e in moved:
        p.add_(e)
    return moved


def timed(fn, device: torch.device, repeats: int) -> float:
    """Mean milliseconds of `fn` over `repeats` calls after three warm-ups."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    net = create_network(args.arch, 12, pretrained=False).to(device).train()
    params = [q for q in net.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(args.bs, 3, args.size, args.size, device=device)
    y = torch.randint(0, 12, (args.bs,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss()

    def backward() -> None:
        with autocast:
            out = net(x)
        opt.zero_grad(set_to_none=True)
        loss_fn(out.float(), y).backward()

    def plain() -> None:
        backward()
        opt.step()

    def sam() -> None:
        backward()
        moved = climb(params, 0.05)
        with batchnorm_stats_kept(net):
            backward()
        climb_back(moved)
        opt.step()

    @torch.no_grad()
    def looped() -> None:
        for q, e in looped_climb(params, 0.05):
            q.sub_(e)

    backward()  # gradients for the moves alone
    fused_ms = timed(lambda: climb_back(climb(params, 0.05)), device, args.repeats)
    looped_ms = timed(looped, device, args.repeats)
    plain_ms, sam_ms = timed(plain, device, args.repeats), timed(sam, device, args.repeats)
    print(f"{args.arch} at {args.size} px, batch {args.bs}, on {device} ({len(params)} parameter tensors)")
    print(f"plain step {plain_ms:.1f} ms, SAM step {sam_ms:.1f} ms ({sam_ms / plain_ms:.2f}x)")
    print(f"the move up and back: fused {fused_ms:.2f} ms, looped over the parameters {looped_ms:.2f} ms")


if __name__ == "__main__":
    main()
