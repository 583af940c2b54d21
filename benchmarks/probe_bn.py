"""Which batchnorm statistics give the frozen body its most useful features? A logistic-regression
probe on pooled features of the shared data (train split -> validation split), for the pretrained
statistics and for statistics re-estimated as `--bn-reestimate` does (`recalibrate_bn`): on 1024
or on all augmented training images, on plain images, means only, variances only; and the
pretrained statistics with timm's BN eps (1e-5, as germinate built the Lite bodies before) instead
of the weights' own (TensorFlow's 1e-3), and with TensorFlow's SAME padding. Also how often the
ReLU6 activations saturate, and how much the re-estimation changes each channel's scale.

    python benchmarks/probe_bn.py [--size 128]       (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args()
    import torch
    from sklearn.linear_model import LogisticRegression

    from germinate import TrainConfig, create_learner
    from germinate.data.augment import eval_transform
    from germinate.models.backbones import batchnorm_layers
    from germinate.training.features import recalibrate_bn

    cfg = TrainConfig(train_dir=str(DATA / "train"), size=args.size, test_size=args.size, quiet=True,
                      fixed_blocks=0)  # every block's statistics, as measured
    learn = create_learner(cfg)
    net, tf = learn.net, eval_transform(args.size)
    pretrained = copy.deepcopy(net.state_dict())
    saturated: list[float] = []

    def watch(body: torch.nn.Module) -> None:
        for act in (m for m in body.modules() if isinstance(m, torch.nn.ReLU6)):
            act.register_forward_hook(lambda m, i, o: saturated.append(float((i[0] >= 6).float().mean())))

    watch(net.body)

    @torch.no_grad()
    def features(split) -> np.ndarray:
        net.eval()
        out = []
        for i in range(0, len(split), 128):
            x = torch.stack([tf(split.source.get(j)) for j in range(i, min(i + 128, len(split)))])
            out.append(net.features(x))
        return torch.cat(out).numpy()

    def probe(name: str) -> None:
        start = time.perf_counter()
        saturated.clear()
        ft, fv = features(learn.data.train), features(learn.data.valid)
        mean, std = ft.mean(0), ft.std(0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=0.5).fit((ft - mean) / std, learn.data.train.labels)
        acc = float((clf.predict((fv - mean) / std) == learn.data.valid.labels).mean())
        print(f"{name:<48}{acc:>8.3f}{100 * np.mean(saturated):>12.2f}%{time.perf_counter() - start:>8.0f}", flush=True)

    def plain_recalibration() -> None:
        train = learn.data.train
        batches = [torch.stack([tf(train.source.get(j)) for j in range(i, i + 32)]) for i in range(0, 1024, 32)]
        recalibrate_bn(net, batches, torch.device("cpu"), learn._autocast)

    def keep(part: str) -> None:
        """Put the pretrained running mean or variance back after a re-estimation."""
        current = net.state_dict()
        net.load_state_dict({k: (pretrained[k] if k.endswith(part) else v) for k, v in current.items()})

    def spread() -> str:
        """How the re-estimated standard deviations compare with the pretrained ones."""
        ratios = torch.cat([(m.running_var / pretrained[f"body.{n}.running_var"]).sqrt()
                            for n, m in net.body.named_modules() if isinstance(m, torch.nn.BatchNorm2d)])
        q = ratios[ratios.isfinite()].quantile(torch.tensor([0.1, 0.5, 0.9])).tolist()
        return f"re-estimated std / pretrained std: 10% {q[0]:.2f}, median {q[1]:.2f}, 90% {q[2]:.2f}"

    print(f"{args.size} px, {len(learn.data.train)} training / {len(learn.data.valid)} validation images")
    print(f"{'batchnorm statistics':<48}{'probe':>8}{'ReLU6 >= 6':>13}{'s':>8}")
    probe("pretrained (eps 1e-3, as TensorFlow trained it)")
    learn.recalibrate_bn()
    probe("re-estimated on 1024 augmented images")
    print("  " + spread())
    keep("running_var")
    probe("  the same, pretrained variances kept (means only)")
    net.load_state_dict(pretrained)
    learn.recalibrate_bn()
    keep("running_mean")
    probe("  the same, pretrained means kept (variances only)")
    net.load_state_dict(pretrained)
    learn.recalibrate_bn(max_images=len(learn.data.train))
    probe(f"re-estimated on all {len(learn.data.train)} augmented images")
    net.load_state_dict(pretrained)
    plain_recalibration()
    probe("re-estimated on 1024 plain images")
    net.load_state_dict(pretrained)
    for m in batchnorm_layers(net.body):
        m.eps = 1e-5
    probe("pretrained, eps 1e-5 (as timm builds it)")
    # the weights' own eps with TensorFlow's SAME padding (stride-2 convolutions pad after, not
    # around), as timm's tf_efficientnet_lite0 builds it: does the port's symmetric padding cost?
    import timm

    from germinate.models import weights as W
    from germinate.models.backbones import LITE_BN_EPS, TimmBody

    same = timm.create_model("tf_efficientnet_lite0", bn_eps=LITE_BN_EPS)
    path = W.lite_weights_path("efficientnet_lite0")
    W.load_by_order(same, torch.load(path, map_location="cpu", weights_only=True), path.name)
    net.body = TimmBody(same)
    watch(net.body)
    probe("pretrained, eps 1e-3, TensorFlow's SAME padding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
