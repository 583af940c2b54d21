"""Which batchnorm statistics give the frozen body its most useful features? A logistic-regression
probe on pooled features of the shared data (train split -> validation split), for the pretrained
statistics and for statistics re-estimated as the head stage does (`recalibrate_bn`), on
augmented or plain images, with BN eps as timm builds the model (1e-5) and as TensorFlow trained it
(1e-3); also how often the ReLU6 activations saturate.

    python benchmarks/probe_bn.py [--size 128]
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
    from germinate.training.features import batchnorm_layers, recalibrate_bn

    cfg = TrainConfig(train_dir=str(DATA / "train"), size=args.size, test_size=args.size, quiet=True)
    learn = create_learner(cfg)
    net, tf = learn.net, eval_transform(args.size)
    pretrained = copy.deepcopy(net.state_dict())
    saturated: list[float] = []
    for act in (m for m in net.body.modules() if isinstance(m, torch.nn.ReLU6)):
        act.register_forward_hook(lambda m, i, o: saturated.append(float((i[0] >= 6).float().mean())))

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
        batches = [(torch.stack([tf(train.source.get(j)) for j in range(i, i + 32)]), None) for i in range(0, 1024, 32)]
        recalibrate_bn(net, batches, torch.device("cpu"), learn._autocast)

    print(f"{args.size} px, {len(learn.data.train)} training / {len(learn.data.valid)} validation images")
    print(f"{'batchnorm statistics':<48}{'probe':>8}{'ReLU6 >= 6':>13}{'s':>8}")
    for eps in (1e-5, 1e-3):
        net.load_state_dict(pretrained)
        for m in batchnorm_layers(net.body):
            m.eps = eps
        probe(f"pretrained, eps {eps:g}")
        learn.recalibrate_bn()
        probe(f"re-estimated on augmented images, eps {eps:g}")
        net.load_state_dict(pretrained)
        plain_recalibration()
        probe(f"re-estimated on plain images, eps {eps:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
