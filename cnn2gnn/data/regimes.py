"""Label regimes (issue 14): where a sample graph may earn its keep. Few labels (only N labelled training images per
class; the rest of the training split stays, unlabelled, for distillation and as anchors) and noisy labels (a seeded
fraction of training and validation labels flipped to another class; the test split stays clean).

Pure functions of a :class:`~cnn2gnn.data.datasets.DataBundle`; an unlabelled image has the label ``-1``.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import DataError
from .datasets import DataBundle, Split

UNLABELLED = -1


def _per_class(labels: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Positions of (up to) ``n`` samples of each class, chosen by ``g``, in increasing order."""
    keep = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values if keep else torch.empty(0, dtype=torch.long)


def few_labels(bundle: DataBundle, n: int, seed: int) -> DataBundle:
    """Keep the labels of ``n`` training images per class (seeded) and mark the others :data:`UNLABELLED`; the
    validation split keeps ``n`` images per class, as a user with ``n`` labels per class would have."""
    if n < 1:
        raise DataError(f"labels_per_class must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.full_like(bundle.train.labels, UNLABELLED)
    keep = _per_class(bundle.train.labels, n, g)
    labels[keep] = bundle.train.labels[keep]
    val = bundle.val.subset(_per_class(bundle.val.labels, n, g))
    return replace(bundle, train=Split(bundle.train.images, labels), val=val)


def flip_labels(labels: torch.Tensor, p: float, num_classes: int, g: torch.Generator) -> torch.Tensor:
    """``labels`` with round(p * N) of them, chosen by ``g``, changed to another class drawn uniformly."""
    out = labels.clone()
    flip = torch.randperm(len(labels), generator=g)[: round(p * len(labels))]
    shift = torch.randint(1, num_classes, (len(flip),), generator=g)
    out[flip] = (labels[flip] + shift) % num_classes
    return out


def noisy_labels(bundle: DataBundle, p: float, seed: int) -> DataBundle:
    """Flip a seeded fraction ``p`` of the training and of the validation labels uniformly to another class; the
    test split stays clean."""
    if not 0.0 <= p < 1.0:
        raise DataError(f"label_noise must be in [0, 1), got {p}")
    g = torch.Generator().manual_seed(seed)
    c = bundle.num_classes
    train = Split(bundle.train.images, flip_labels(bundle.train.labels, p, c, g))
    val = Split(bundle.val.images, flip_labels(bundle.val.labels, p, c, g))
    return replace(bundle, train=train, val=val)


def apply_regime(bundle: DataBundle, labels_per_class: int | None, label_noise: float, seed: int) -> DataBundle:
    """The bundle under the data config's regime: noise first (of all labels), then the few kept ones."""
    if label_noise:
        bundle = noisy_labels(bundle, label_noise, seed)
    if labels_per_class is not None:
        bundle = few_labels(bundle, labels_per_class, seed)
    return bundle


def labelled(split: Split, *, size: int | None = None) -> Split:
    """The labelled samples of ``split``; with ``size``, repeated (whole copies, in order) to about ``size`` samples,
    so that a model trained on few labels takes as many steps an epoch as one trained on the full split."""
    mask = split.labels != UNLABELLED
    out = split if bool(mask.all()) else split.subset(mask)
    if size is None or len(out) == 0 or len(out) >= size:
        return out
    times = max(1, round(size / len(out)))
    return Split(out.images.repeat(times, 1, 1, 1), out.labels.repeat(times))
