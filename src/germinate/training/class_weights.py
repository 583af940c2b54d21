"""Per-class weights for the training loss (`--class-weights`) or for drawing training images
(`--sampler`): rare classes count for more, or are seen more often. And the class-prior shift of
the exported model's logits (`--logit-adjust`): rare classes are predicted more often.

"balanced" is scikit-learn's n_samples / (n_classes * count): every class contributes equally to
the loss. "sqrt" is its square root, halfway (in log terms) between that and no weights.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Weights for classes 0..n_classes-1 from the training labels; None for "none". A class with
    no training image gets weight 1 (it cannot appear in the loss anyway)."""
    if mode == "none":
        return None
    present = np.unique(labels)
    w = np.ones(n_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return np.sqrt(w) if mode == "sqrt" else w


def sample_weights(labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Each training image's chance of being drawn (`--sampler`), up to a constant: its class's
    weight, so that with "balanced" every class is drawn equally often; None for "shuffle"."""
    w = class_weights(labels, n_classes, "none" if mode == "shuffle" else mode)
    return None if w is None else w[labels]


def logit_shift(labels: np.ndarray, n_classes: int, tau: float) -> np.ndarray | None:
    """`--logit-adjust T`: what to add to each class's logit, -T x log(its share of the training
    images), centred on 0 (softmax ignores a common offset); None for T = 0. Post-hoc logit
    adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment"): T = 1 aims at
    balanced accuracy; less leans the other way. A class with no training image counts as one."""
    if tau == 0:
        return None
    counts = np.maximum(np.bincount(labels, minlength=n_classes), 1).astype(np.float64)
    shift = -tau * np.log(counts / counts.sum())
    return shift - shift.mean()
