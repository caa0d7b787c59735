"""Why and where the anchors policy uses the pruned exact search (issue 15; cnn2gnn/native/pruned.c), measured on one
trained student's learned graph space:

1. how flat the space is: the share of the bank's variance along its first principal axes, and the share of anchors
   that a bound from the first P axes cannot rule out for the exact (k + 1)-th distance of test queries;
2. the search alone (256 test queries, one bank of the student's size) for several P, against the fused search;
3. the student's forward pass at batch 256 with the bank replaced by m stratified training images, the pruned search
   forced against the fused one, on one and two threads (what ``TorchSearch.PRUNE_FROM`` rests on);
4. each stage of the forward (the first layer's and the graph head's product, the search, the one native pass of the
   weights, sums and second layer) timed alone and inside the forward, median of many calls (why a stage costs more
   in place).

    python scripts/pruned_search.py --model runs/bench-quick/runs/cnn2gnn-197028aa38-s0 --out docs/pruned_search.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from anchors_cost import write_report

from cnn2gnn import native
from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset, normalize
from cnn2gnn.evaluate import images_per_second_together
from cnn2gnn.models.embed import input_features
from cnn2gnn.run import environment
from cnn2gnn.search import TorchSearch, topk_torch
from cnn2gnn.student import stratified_anchors


def rebank(model, meta, bundle, m: int) -> None:
    idx = stratified_anchors(bundle.train.labels, m, seed=0)
    model.set_bank(normalize(bundle.train.images[idx], meta["mean"], meta["std"]), bundle.train.labels[idx], idx)
    model.eval()


def graph_space(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images' and the bank's graph-space positions (the bank's states built once)."""
    with torch.no_grad():
        model(x[:1], graph="anchors")
        return model.space(input_features(x, model.embed)), model.bank._cache["v"]


def flatness_rows(bank: torch.Tensor, queries: torch.Tensor, k: int) -> list[str]:
    centred = (bank - bank.mean(dim=0)).double()
    variance = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    share = variance.cumsum(0) / variance.sum()
    axes = torch.linalg.eigh(centred.T @ centred)[1].flip(1).float()
    q, a = (queries - bank.mean(dim=0)) @ axes, (bank - bank.mean(dim=0)) @ axes
    kth = topk_torch(q, a, k)[0][:, -1:]
    rows = ["| first axes P | share of the variance | anchors a bound from P axes cannot rule out |", "|---|---|---|"]
    for p in (4, 8, 12, 16):
        bound = torch.cdist(q[:, :p], a[:, :p]).pow(2)
        rows.append(f"| {p} | {share[p - 1]:.1%} | {(bound <= kth).float().mean():.2%} |")
    return rows


def best_of(fns: dict, repeats: int, calls: int) -> dict[str, float]:
    """Best seconds per call of each function, timed interleaved (each once a round, ``calls`` calls a round)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def head_rows(bank: torch.Tensor, queries: torch.Tensor, k: int, repeats: int) -> list[str]:
    packs = {p: native.pack_pruned(bank, p) for p in (6, 8, 10, 12, 16)}
    fused = native.pack(bank, bank.pow(2).sum(dim=1))
    fns = {p: (lambda pk=pk: native.nearest_pruned(queries, pk, k)) for p, pk in packs.items()}
    fns["fused"] = lambda: native.nearest(queries, fused, k)
    t = best_of(fns, repeats, 50)
    rows = ["| search | ms (256 queries) | distances computed in full | over the fused search |", "|---|---|---|---|"]
    rows.append(f"| fused | {1e3 * t['fused']:.3f} | 100% | 1.00x |")
    for p, pk in packs.items():
        share = native.scanned_fraction(pk, queries, k)
        rows.append(f"| pruned, P = {p} | {1e3 * t[p]:.3f} | {share:.2%} | {t['fused'] / t[p]:.2f}x |")
    return rows


def force(model, pruned: bool) -> None:
    """The built search of the model's bank, made to take the pruned kernel (``pruned``) or the fused one."""
    search = model.bank._index[1]
    search.pruned = native.pack_pruned(search.bank.detach()) if pruned else None
    search._packed = native.pack(search.bank, search.bank_sq)
    for key in ("msg12", "run"):  # the fast path's tables, rebuilt with the forced search at the next call
        model.bank._cache.pop(key, None)


def forward_rows(path: str, meta, bundle, x: torch.Tensor, sizes: list[int], threads: list[int], seconds: float):
    rows = [
        "| bank m | threads | fused: images/s | pruned: images/s | pruned over fused | kept by TorchSearch |",
        "|---|---|---|---|---|---|",
    ]
    for m in sizes:
        pair = []
        for pruned in (False, True):
            model, _ = load_model(path)
            rebank(model, meta, bundle, m)
            graph_space(model, x)  # builds the states and the search once
            chosen = model.bank._index[1].pruned is not None
            force(model, pruned)
            pair.append(model)
        for n in threads:
            torch.set_num_threads(n)
            with torch.no_grad():
                fns = [lambda b, mod=mod: mod(b, graph="anchors") for mod in pair]
                fused, pruned = images_per_second_together(fns, [x, x], 256, seconds, None, repeats=5)
            speeds = f"{fused / 1e3:.1f}k | {pruned / 1e3:.1f}k | {pruned / fused:.2f}x"
            rows.append(f"| {m:,} | {n} | {speeds} | {chosen} |")
            print(rows[-1], flush=True)
    return rows


def stage_rows(model, x: torch.Tensor, threads: list[int], calls: int) -> list[str]:
    """Each stage of the anchors fast path (models/fastpath.py, ``graph_space=head``) alone and inside the forward,
    each called through its checking wrapper, then the whole forward as the fast path runs it (median seconds of
    ``calls`` calls)."""
    xf = input_features(x, model.embed)
    model(x, graph="anchors")  # builds the fast path's tables with the bank's states
    bank = model._bank_states()
    if "product" not in bank:
        raise SystemExit("pruned_search.py: the stage table follows the fast path of a student with graph_space=head")
    search, k = model.bank._index[1], model.graph.k
    w2, hidden = model.conv2.lin.weight, model.conv1.lin.weight.shape[0]
    msg, bias, product = bank["msg12"], bank["bias12"], bank["product"]
    both = product(xf)
    own, v = both[:, :hidden], both[:, hidden:]
    dist, pos = search(v, k + 1)
    stages = {
        "first layer and graph head (one product)": lambda: product(xf),
        "search": lambda: search(v, k + 1),
        "weights, sums, own term, ReLU, second layer (one pass)": lambda: native.propagate(
            dist, pos, k, msg, bias, base=own, relu=hidden, head=w2
        ),
    }
    rows = ["| threads | stage | alone (ms) | inside the forward (ms) |", "|---|---|---|---|"]
    for n in threads:
        torch.set_num_threads(n)
        alone = {}
        for name, fn in stages.items():
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            alone[name] = statistics.median(times)
        inside = {name: [] for name in [*stages, "whole forward"]}
        for _ in range(calls):
            t0 = time.perf_counter()
            b = product(xf)
            t1 = time.perf_counter()
            d, p = search(b[:, hidden:], k + 1)
            t2 = time.perf_counter()
            native.propagate(d, p, k, msg, bias, base=b[:, :hidden], relu=hidden, head=w2)
            t3 = time.perf_counter()
            spans = zip([*stages, "whole forward"], [t0, t1, t2, t0], [t1, t2, t3, t3], strict=True)
            for name, a, z in spans:
                inside[name].append(z - a)
        for name in [*stages, "whole forward"]:
            alone_ms = f"{1e3 * alone[name]:.3f}" if name in alone else f"{1e3 * sum(alone.values()):.3f} (sum)"
            rows.append(f"| {n} | {name} | {alone_ms} | {1e3 * statistics.median(inside[name]):.3f} |")
        prepared = []  # the same forward as the fast path runs it: one prepared call after the product
        for _ in range(calls):
            t0 = time.perf_counter()
            model(x, graph="anchors")
            prepared.append(time.perf_counter() - t0)
        median = 1e3 * statistics.median(prepared)
        rows.append(f"| {n} | whole forward, the fast path's prepared call | - | {median:.3f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="a trained graph student's folder (head graph space)")
    p.add_argument("--sizes", default="1024,4096,16384,all", help="bank sizes of the forward table")
    p.add_argument("--threads", default="1,2", help="torch thread counts (default 1,2)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per forward timing, in 5 rounds (default 2)")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    threads = [int(t) for t in args.threads.split(",")]
    model, meta = load_model(args.model)
    bundle = load_dataset(meta["data"], meta.get("data_root"))
    order = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(0))
    x = normalize(bundle.test.images[order[:256]], meta["mean"], meta["std"])
    sizes = [len(bundle.train) if s == "all" else int(s) for s in args.sizes.split(",")]
    k = model.graph.k + 1
    queries, bank = graph_space(model, x)
    env = environment()
    torch.set_num_threads(1)
    lines = [
        "# The pruned exact search: where a learned graph space lets it pay (CPU)",
        "",
        f"- command: `python scripts/pruned_search.py {' '.join(sys.argv[1:])}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {env['platform']}, {os.cpu_count()} cores; torch {env['torch']}, python {env['python']}",
        f"- student: `{args.model}` ({meta['data']}, its bank of {len(bank):,}, graph space {bank.shape[1]}-d); "
        f"256 shuffled test images (seed 0); the searches look for the k + 1 = {k} nearest",
        f"- `TorchSearch` takes the pruned search for banks of {TorchSearch.PRUNE_FROM:,} anchors or more where a "
        f"calibration computes at most {TorchSearch.PRUNE_BELOW:.0%} of the distances, else the fused one",
        "",
        "## 1. How flat the graph space is (its own bank)",
        "",
        *flatness_rows(bank, queries, k),
        "",
        "## 2. The search alone, one thread, by the bound's axes P (best of 15 interleaved rounds of 50 calls)",
        "",
        *head_rows(bank, queries, k, 15),
        "",
        f"## 3. The forward pass at batch 256, the search forced (5 interleaved rounds, {args.seconds:g} s a row)",
        "",
        *forward_rows(args.model, meta, bundle, x, sizes, threads, args.seconds),
        "",
        f"## 4. The stages of the forward, bank {len(bank):,} (fused search), median of 500 calls",
        "",
        *stage_rows(model, x, threads, 500),
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
