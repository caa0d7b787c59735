"""Anchor bank size against cost and accuracy (issue 15): one trained student re-banked with m training images (1k to
the whole split; with `distill.train_graph=batch` the bank is used only at inference, so the same weights serve every
m), under each search backend: the time to build the bank's states and index, latency per image at batch 256,
recall@k of the approximate index against the exact neighbours, and test accuracy; plus a synthetic 1M x 64-d bank
(clustered Gaussian points) for the search alone.

    python scripts/bank_size.py --model runs/image-size/student28 --out docs/bank_size.md

Writes a markdown table with the command, machine, date and versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset, normalize
from cnn2gnn.evaluate import evaluate_accuracy, images_per_second
from cnn2gnn.models.gnn import input_features
from cnn2gnn.run import environment
from cnn2gnn.search import make_search, topk_torch
from cnn2gnn.student import stratified_anchors

SEARCHES = ("torch", "faiss", "faiss-ivf")


def recall(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row's exact neighbours that the approximate search found."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / e.numel() for a, e in zip(approx, exact, strict=True)]
    return sum(hits) / len(hits)


def bank_rows(model, meta, bundle, sizes, k: int) -> list[str]:
    rows = []
    test = normalize(bundle.test.images, meta["mean"], meta["std"])
    for size in sizes:
        m = len(bundle.train) if size == "all" else int(size)
        idx = stratified_anchors(bundle.train.labels, m, seed=0)
        model.set_bank(normalize(bundle.train.images[idx], meta["mean"], meta["std"]), bundle.train.labels[idx], idx)
        exact = None
        for search in SEARCHES:
            model.bank.use_search(search)
            model.eval()
            model.bank.clear()
            t0 = time.perf_counter()
            with torch.no_grad():
                model(test[:1], graph="anchors")  # the bank's states and the index, once
            build = time.perf_counter() - t0
            fn = lambda x: model(x, graph="anchors")  # noqa: E731
            latency = 1000.0 / images_per_second(fn, test[:256], 256, min_seconds=1.0)
            with torch.no_grad():
                v = model.space(input_features(test[:1000], model.embed))
                states = model.bank._cache
                found = model.bank.nearest(v, k, states["v"], states["v_sq"])[1]
                exact = topk_torch(v, states["v"], k, bank_sq=states["v_sq"])[1] if exact is None else exact
            acc = evaluate_accuracy(model, meta, bundle.test, graph="anchors", seeds=(0,), sorted_check=False)["mean"]
            r = recall(found, exact)
            rows.append(f"| {m:,} | {search} | {build:.2f} | {latency:.3f} | {r:.3f} | {100 * acc:.2f} |")
            print(rows[-1], flush=True)
    return rows


def synthetic_rows(n: int, d: int, k: int, queries: int = 1000) -> list[str]:
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(1000, d, generator=g)
    bank = centres[torch.randint(0, 1000, (n,), generator=g)] + torch.randn(n, d, generator=g)
    q = centres[torch.randint(0, 1000, (queries,), generator=g)] + torch.randn(queries, d, generator=g)
    bank_sq = bank.pow(2).sum(dim=1)
    exact = topk_torch(q, bank, k, bank_sq=bank_sq)[1]
    rows = []
    for search in SEARCHES:
        t0 = time.perf_counter()
        index = make_search(search, bank, bank_sq, nlist=1024)  # IVF: 1,024 cells, 16 probed
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = torch.cat([index(part, k)[1] for part in q.split(256)])
        latency = 1000.0 * (time.perf_counter() - t0) / queries
        r = recall(found, exact)
        rows.append(f"| {n:,} (synthetic, {d}-d) | {search} | {build:.2f} | {latency:.3f} | {r:.3f} | - |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a student folder trained with distill.train_graph=batch")
    p.add_argument("--sizes", default="1024,4096,16384,all")
    p.add_argument("--synthetic", type=int, default=1_000_000, help="size of the synthetic bank (0: none)")
    p.add_argument("--out", type=Path, default=Path("docs/bank_size.md"))
    args = p.parse_args()
    model, meta = load_model(args.model)
    bundle = load_dataset(meta["data"], meta.get("data_root"))
    k = model.graph.k
    env = environment()
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    head = [
        "# Anchor bank size: build time, latency, recall and accuracy",
        "",
        f"Command: `{threads}python {' '.join(sys.argv)}`  ",
        f"Date {datetime.now(UTC).date()}; {env['platform']}, {os.cpu_count()} cores, torch threads {env['threads']}, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; torch {env['torch']}, "
        f"python {platform.python_version()}.",
        "",
        f"Student `{args.model}` ({meta['data']}, k = {k}); its bank replaced by m stratified training images "
        "(seed 0). *build*: the bank's states (its own graph included) and the search index, once; *latency*: per "
        "image at batch 256, graph included; *recall*: share of the exact k nearest anchors the search returns, "
        "on 1,000 test images in the student's graph space; *accuracy*: the 10,000 test images.",
        "",
        "| bank m | search | build (s) | latency (ms/image) | recall@k | test acc (%) |",
        "|---|---|---|---|---|---|",
    ]
    rows = bank_rows(model, meta, bundle, args.sizes.split(","), k)
    if args.synthetic:
        rows += synthetic_rows(args.synthetic, 64, k)
    args.out.write_text("\n".join([*head, *rows, ""]))


if __name__ == "__main__":
    main()
