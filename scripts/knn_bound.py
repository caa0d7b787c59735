#!/usr/bin/env python
"""How much can neighbours' labels add to an MLP? k-NN votes over the whole training split, in pixel space and in a
trained MLP's hidden space, alone and added to the MLP's probabilities (docs/ablations.md, section 3).

    python scripts/knn_bound.py --model runs/fm-mlp-ce     # an MLP from `cnn2gnn distill --set model.aggregate=none`
"""

from __future__ import annotations

import argparse

import torch

from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset


def votes(queries: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, k: int, classes: int) -> torch.Tensor:
    """Share of each class among the k nearest bank rows of every query (blocked to bound memory)."""
    out = []
    for q in queries.split(2048):
        idx = torch.cdist(q, bank).topk(k, largest=False).indices
        out.append(torch.zeros(len(q), classes).scatter_add_(1, labels[idx], torch.ones(idx.shape)) / k)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="MLP student folder (model.aggregate=none)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--ks", default="5,10,20")
    p.add_argument("--weights", default="0.25,0.5,1,2")
    args = p.parse_args()
    model, meta = load_model(args.model)
    if meta["kind"] != "student" or meta["student"]["kwargs"]["aggregate"] != "none":
        raise SystemExit(f"{args.model}: expected an MLP student (model.aggregate=none)")
    b = load_dataset(args.data)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)

    def flat(split):
        return ((split.images.float() / 255 - mean) / std).reshape(len(split), -1)

    ks = [int(k) for k in args.ks.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    x_train, y_train, c = flat(b.train), b.train.labels, b.num_classes
    with torch.no_grad():
        h_train = torch.relu(model.lin1(x_train))
        for name, split in (("val", b.val), ("test", b.test)):
            x, y = flat(split), split.labels
            h = torch.relu(model.lin1(x))
            prob = torch.softmax(model.lin2(h), 1)
            print(f"{name}: MLP alone {100 * (prob.argmax(1) == y).float().mean():.2f}")
            for space, bank, q in (("pixels", x_train, x), ("hidden", h_train, h)):
                for k in ks:
                    v = votes(q, bank, y_train, k, c)
                    knn = 100 * (v.argmax(1) == y).float().mean()
                    ens = {w: 100 * ((prob + w * v).argmax(1) == y).float().mean() for w in weights}
                    shown = "  ".join(f"w={w:g}: {a:.2f}" for w, a in ens.items())
                    print(f"{name}: k-NN in {space} space, k={k}: {knn:.2f}   MLP + w * vote: {shown}")


if __name__ == "__main__":
    main()
