#!/usr/bin/env python
"""Images/s of one or more saved models under each inference policy (the graph's cost included).

A micro-benchmark for speed work on the student (docs/ablations.md section 5): the timing of ``cnn2gnn evaluate
--speed`` (:func:`cnn2gnn.evaluate.images_per_second`) on random inputs of the model's size, at one batch size and
thread count, best of ``--repeats``. Example:

    python scripts/speed_policies.py runs/demo/student runs/demo/teacher --batch 256 --threads 1
"""

from __future__ import annotations

import argparse

import torch

from cnn2gnn import policy
from cnn2gnn.checkpoint import load_model
from cnn2gnn.evaluate import images_per_second


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (teacher or student)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timings per model and policy; the best is printed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}")
    for folder in args.models:
        model, meta = load_model(folder)
        model.eval()
        x = torch.randn(args.batch, meta["in_channels"], *meta["image_size"])
        for graph in policy.supported(model) or (None,):
            fn, name = policy.resolve(model, graph)
            with torch.inference_mode():
                rate = max(images_per_second(fn, x, args.batch) for _ in range(args.repeats))
            print(f"{folder}  {name:8s} {rate:10.0f} images/s")


if __name__ == "__main__":
    main()
