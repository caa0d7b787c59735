#!/usr/bin/env python
"""Images/s of one or more saved models under each inference policy (the graph's cost included).

A micro-benchmark for speed work on the student (docs/ablations.md section 5): random inputs of the model's size, a
few warm-up calls, then the best of ``--repeats`` timings of ``--calls`` forward passes. Example:

    python scripts/speed_policies.py runs/demo/student runs/demo/teacher --batch 256 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from cnn2gnn.checkpoint import load_model


def images_per_second(fn, x: torch.Tensor, calls: int, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(x)
            best = min(best, (time.perf_counter() - t0) / calls)
    return len(x) / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (teacher or student)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}")
    for folder in args.models:
        model, meta = load_model(folder)
        model.eval()
        x = torch.randn(args.batch, meta["in_channels"], *meta["image_size"])
        policies = (
            ["batch", "anchors"] if meta["kind"] == "student" and meta.get("aggregate", "sage") != "none" else [None]
        )
        for policy in policies:
            fn = model if policy is None else (lambda t, p=policy, m=model: m(t, graph=p))
            rate = images_per_second(fn, x, args.calls, args.repeats)
            print(f"{folder}  {policy or 'none':8s} {rate:10.0f} images/s")


if __name__ == "__main__":
    main()
