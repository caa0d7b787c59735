#!/usr/bin/env python
"""What can neighbours' labels add to an MLP? k-NN votes over the whole training split, in pixel space, in a
trained MLP's hidden space, in a fixed random-convolution feature space (64 zero-mean 5x5 filters, ReLU, 4x4
average pooling, standardised) and, with --teacher, in the teacher's penultimate features (which means running the
teacher at test time): each vote alone, added to the MLP's probabilities with a weight w (one combiner: a lower
bound on what neighbours can add), and the oracle headroom, the share of images the MLP gets wrong and the vote
right (what a perfect chooser between the two would add; docs/ablations.md, section 3).

    python scripts/knn_bound.py --model runs/fm-mlp-ce     # an MLP from `cnn2gnn distill --set model.arch=mlp`
    python scripts/knn_bound.py --model runs/fm-mlp-ce --teacher runs/fm-resnet8
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from cnn2gnn import policy
from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset


def votes(queries: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, k: int, classes: int) -> torch.Tensor:
    """Share of each class among the k nearest bank rows of every query (blocked to bound memory)."""
    out = []
    for q in queries.split(2048):
        idx = torch.cdist(q, bank).topk(k, largest=False).indices
        out.append(torch.zeros(len(q), classes).scatter_add_(1, labels[idx], torch.ones(idx.shape)) / k)
    return torch.cat(out)


def random_conv_features(images: torch.Tensor, seed: int = 0, filters: int = 64, pool: int = 4) -> torch.Tensor:
    """Fixed random 5x5 filters (zero mean, unit norm), ReLU, average pooling, flattened: (N, filters * (H/pool)^2)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(filters, images.shape[1], 5, 5, generator=g)
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return torch.cat([F.avg_pool2d(F.relu(F.conv2d(x, w, padding=2)), pool).flatten(1) for x in images.split(4096)])


def teacher_features(teacher, images: torch.Tensor) -> torch.Tensor:
    """The teacher's penultimate features of normalised images, in blocks."""
    return torch.cat([teacher.forward_features(x) for x in images.split(1024)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="MLP student folder (model.arch=mlp)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--ks", default="5,10,20")
    p.add_argument("--weights", default="0.25,0.5,1,2")
    p.add_argument("--teacher", help="teacher folder: also vote in its penultimate features (runs the teacher)")
    p.add_argument("--spaces", default="pixels,hidden,random-conv,teacher", help="comma-separated spaces to vote in")
    args = p.parse_args()
    model, meta = load_model(args.model)
    if meta["kind"] != "student" or policy.supported(model):
        raise SystemExit(f"{args.model}: expected an MLP student (model.arch=mlp)")
    b = load_dataset(args.data)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)

    def images(split):
        return (split.images.float() / 255 - mean) / std

    def flat(split):
        return images(split).reshape(len(split), -1)

    ks = [int(k) for k in args.ks.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    x_train, y_train, c = flat(b.train), b.train.labels, b.num_classes
    with torch.no_grad():
        h_train = torch.relu(model.lin1(x_train))
        conv = "random-conv" in args.spaces.split(",")
        r_train = random_conv_features(images(b.train)) if conv else torch.zeros(len(b.train), 1)
        r_mean, r_std = r_train.mean(0), r_train.std(0) + 1e-6
        r_train = (r_train - r_mean) / r_std
        teacher = load_model(args.teacher)[0] if args.teacher else None
        t_train = teacher_features(teacher, images(b.train)) if teacher else None
        for name, split in (("val", b.val), ("test", b.test)):
            x, y = flat(split), split.labels
            h = torch.relu(model.lin1(x))
            prob = torch.softmax(model.lin2(h), 1)
            print(f"{name}: MLP alone {100 * (prob.argmax(1) == y).float().mean():.2f}")
            r = (random_conv_features(images(split)) - r_mean) / r_std if conv else torch.zeros(len(split), 1)
            spaces = [("pixels", x_train, x), ("hidden", h_train, h), ("random-conv", r_train, r)]
            if teacher is not None:
                spaces.append(("teacher", t_train, teacher_features(teacher, images(split))))
            for space, bank, q in [sp for sp in spaces if sp[0] in args.spaces.split(",")]:
                for k in ks:
                    v = votes(q, bank, y_train, k, c)
                    knn = 100 * (v.argmax(1) == y).float().mean()
                    ens = {w: 100 * ((prob + w * v).argmax(1) == y).float().mean() for w in weights}
                    shown = "  ".join(f"w={w:g}: {a:.2f}" for w, a in ens.items())
                    headroom = 100 * ((prob.argmax(1) != y) & (v.argmax(1) == y)).float().mean()
                    print(
                        f"{name}: k-NN in {space} space, k={k}: {knn:.2f}   MLP + w * vote: {shown}   "
                        f"oracle headroom (MLP wrong, vote right): {headroom:.2f}"
                    )


if __name__ == "__main__":
    main()
