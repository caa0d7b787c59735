"""What the anchors policy costs on this CPU beyond its arithmetic (issue 15, item 4).

Three tables, every figure measured in this one run, models of the quick preset's shape (hidden 512, k 10, graph
head 64, bank 1024 unless --bank) with random weights (timings do not depend on the weights):

1. the selection of the k + 1 nearest anchors, ``torch.topk`` against :func:`cnn2gnn.select.nearest_k` in torch
   (block minima narrowing) and with the native kernel (:mod:`cnn2gnn.native`, when it could be built), on distances
   of 256 queries to banks of several sizes;
2. the whole search of 256 queries in such banks, isotropic and varying along 8 axes (as a learned graph space): the
   torch path (distance product, norms, clamp, selection; native selection or not) against the fused native search
   (:func:`cnn2gnn.native.nearest`) and the pruned one (:func:`cnn2gnn.native.nearest_pruned`), which the anchors
   policy chooses between (:class:`cnn2gnn.search.TorchSearch`);
3. images/s at batch 256 of the same-width MLP (and, for a fair reading, the same with its first layer on the packed
   product the student's fast path uses, models/product.py), the student under the anchors policy (its eval fast path,
   models/fastpath.py, with its prepared call; the same with its product on ``torch.mm``; the same calling its kernels
   through their checking wrappers, then
   also with its second layer outside the native pass, as torch's ``addmm`` like the MLP's; the general path; without
   the native kernels), and the student on the checking wrappers with one part of its forward pass (the search; the
   weights, sums and second layer) replaced by a lookup of that part's own results: what each part costs where it
   runs, not in isolation;
4. the bytes a batch reads (weights, bank tables, input) for each model, and one core's read rate by buffer size: where
   the L2 ends, beyond which a stage re-reads what another evicted at a rate a few times lower.

    python scripts/anchors_cost.py --threads 1,2 --out docs/anchors_cost.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from cnn2gnn import native, select
from cnn2gnn.bench.measure import flops_per_image
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models import fastpath
from cnn2gnn.models.embed import input_features
from cnn2gnn.models.gnn import GNNStudent
from cnn2gnn.models.mlp import MLPStudent
from cnn2gnn.models.product import PackedProduct, unpacked
from cnn2gnn.run import environment
from cnn2gnn.search import TorchSearch, topk_torch


def best_times(fns: dict, inputs: list, seconds: float, repeats: int) -> dict[str, float]:
    """Best seconds per call of each of ``fns`` over ``repeats`` rounds, each round timing every function once for at
    least ``seconds`` (cycling through ``inputs``): interleaved, so that a slow spell of the machine hits all alike."""
    best = dict.fromkeys(fns, float("inf"))
    with torch.inference_mode():
        for fn in fns.values():
            for x in inputs:
                fn(x)
        for _ in range(repeats):
            for name, fn in fns.items():
                calls, start = 0, time.perf_counter()
                while calls < 3 or time.perf_counter() - start < seconds:
                    fn(inputs[calls % len(inputs)])
                    calls += 1
                best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def torch_only(fn):
    """``fn`` run with the native kernels switched off (cnn2gnn's path where no C compiler is there)."""

    def call(*args):
        with native.disabled():
            return fn(*args)

    return call


def selection_table(k: int, sizes: list[int], seconds: float, repeats: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    rows = [
        "| bank m | topk (ms) | nearest_k, torch (ms) | nearest_k, native (ms) | torch speed-up | native speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for m in sizes:
        bank = torch.randn(m, 64, generator=g)
        dists = [torch.cdist(torch.randn(256, 64, generator=g), bank).pow(2) for _ in range(4)]
        fns = {"topk": lambda d: d.topk(k, dim=1, largest=False), "torch": torch_only(lambda d: select.nearest_k(d, k))}
        if native.available():
            fns["native"] = lambda d: select.nearest_k(d, k)
        t = best_times(fns, dists, seconds, repeats)
        t_native = t.get("native", float("nan"))
        rows.append(
            f"| {m:,} | {1e3 * t['topk']:.3f} | {1e3 * t['torch']:.3f} | {1e3 * t_native:.3f} | "
            f"{t['topk'] / t['torch']:.2f}x | {t['topk'] / t_native:.2f}x |"
        )
    return rows


def search_table(k: int, sizes: list[int], seconds: float, repeats: int, *, flat: bool) -> list[str]:
    """Each search of 256 queries in banks of 64-d points: isotropic (``flat=False``), or varying mostly along 8
    axes (a rank-8 product plus 5% noise, the queries near anchors), as a learned graph space does."""
    g = torch.Generator().manual_seed(0)
    rows = [
        "| bank m | torch path, torch selection (ms) | torch path, native selection (ms) | fused native search (ms) "
        "| pruned native search (ms) | distances the pruned search computes | fused over the torch path "
        "| pruned over fused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in sizes:
        if flat:
            bank = torch.randn(m, 8, generator=g) @ torch.randn(8, 64, generator=g)
            bank += 0.05 * bank.std() * torch.randn(m, 64, generator=g)
            near = [bank[torch.randint(0, m, (256,), generator=g)] for _ in range(4)]
            queries = [q + 0.2 * bank.std() * torch.randn(256, 64, generator=g) for q in near]
        else:
            bank = torch.randn(m, 64, generator=g)
            queries = [torch.randn(256, 64, generator=g) for _ in range(4)]
        packed, pruned = native.pack(bank, bank.pow(2).sum(dim=1)), native.pack_pruned(bank)
        product = lambda q, b=bank: topk_torch(q, b, k)  # noqa: E731 - distance product, norms, clamp, selection
        fns = {"torch": torch_only(product), "select": product}
        if packed is not None:
            fns["fused"] = lambda q, p=packed: native.nearest(q, p, k)
        if pruned is not None:
            fns["pruned"] = lambda q, p=pruned: native.nearest_pruned(q, p, k)
        t = best_times(fns, queries, seconds, repeats)
        t_fused, t_pruned = t.get("fused", float("nan")), t.get("pruned", float("nan"))
        share = native.scanned_fraction(pruned, queries[0], k) if pruned is not None else float("nan")
        rows.append(
            f"| {m:,} | {1e3 * t['torch']:.3f} | {1e3 * t['select']:.3f} | {1e3 * t_fused:.3f} | "
            f"{1e3 * t_pruned:.3f} | {share:.2%} | {t['select'] / t_fused:.2f}x | {t_fused / t_pruned:.2f}x |"
        )
    return rows


SERVED = {
    "search": "its search of the k + 1 nearest anchors (distances and selection)",
    "propagate": "its graph weights, both layers' weighted sums of the anchors' messages and its second layer "
    "(one native pass)",
}


def unfused(forward):
    """``forward`` with the second layer left out of the native pass (``propagate`` refuses a ``head``): the fast
    path then writes the activations and runs the second layer as torch's ``addmm``, as the MLP does."""
    real = native.propagate

    def without_head(*args, head=None, **kw):
        return None if head is not None else real(*args, **kw)

    def call(x):
        native.propagate = without_head
        try:
            with fastpath.checked():
                return forward(x)
        finally:
            native.propagate = real

    return call


def checked(forward):
    """``forward`` with the fast path calling its kernels through their checking wrappers (not the prepared call)."""

    def call(x):
        with fastpath.checked():
            return forward(x)

    return call


def serving(forward, inputs: list, owner, name: str):
    """``forward`` with ``owner.name`` (a module's function or a class's method) replaced by a lookup of what it
    returned on ``inputs`` (recorded once, served in the same order), so that a timing leaves out that one part."""
    real, found = getattr(owner, name), []

    def record(*args, **kw):
        found.append(real(*args, **kw))
        return found[-1]

    setattr(owner, name, record)
    try:
        with torch.inference_mode():
            for x in inputs:
                forward(x)
    finally:
        setattr(owner, name, real)
    results = itertools.cycle(found)

    def lookup(*args, **kw):
        return next(results)

    def call(x):
        setattr(owner, name, lookup)
        try:
            return forward(x)
        finally:
            setattr(owner, name, real)

    return call


def models(bank: int) -> tuple[GNNStudent, MLPStudent]:
    """The quick preset's student (random weights, a random bank of ``bank`` images) and its same-width MLP, in eval
    mode."""
    torch.manual_seed(0)
    cfg = StudentModelConfig()
    student = GNNStudent(784, 10, cfg, bank_size=bank)
    student.set_bank(torch.randn(bank, 784), torch.randint(0, 10, (bank,)), torch.arange(bank))
    return student.eval(), MLPStudent(784, 10, cfg).eval()


def forward_table(bank: int, seconds: float, repeats: int) -> list[str]:
    student, mlp = models(bank)
    images = [torch.randn(256, 1, 28, 28) for _ in range(4)]

    def anchors(x):
        return student(x, graph="anchors")

    with torch.inference_mode():
        anchors(images[0])  # the bank's states and its own graph, cached once before recording
    served = {  # on the checked path, where each part is its own call
        "search": serving(checked(anchors), images, TorchSearch, "__call__"),
        "propagate": serving(checked(anchors), images, native, "propagate"),
    }

    def general(x):
        with fastpath.disabled():
            return anchors(x)

    def unpacked_anchors(x):
        with unpacked():
            return anchors(x)

    first = PackedProduct(mlp.lin1.weight)  # the MLP given the student's packed product, for a fair reading

    def mlp_packed(x):
        h = first(input_features(x, mlp.embed)).add_(mlp.lin1.bias).relu_()
        return F.linear(h, mlp.lin2.weight, mlp.lin2.bias)

    fns = {"mlp": mlp, "anchors": anchors, "checked": checked(anchors), "unfused": unfused(anchors), "general": general}
    fns |= {"torch": torch_only(anchors), "unpacked": unpacked_anchors, "mlp_packed": mlp_packed, **served}
    t = best_times(fns, images, seconds, repeats)
    f_mlp, f_student = flops_per_image(mlp, images[0]), flops_per_image(anchors, images[0])
    ips = {name: 256 / seconds_per_call for name, seconds_per_call in t.items()}
    return [
        "| model (batch 256) | images/s | of the MLP's images/s | FLOPs/image | MLP/model FLOP ratio |",
        "|---|---|---|---|---|",
        f"| same-width MLP | {ips['mlp'] / 1e3:.1f}k | 100% | {f_mlp / 1e6:.2f}M | 100% |",
        f"| same-width MLP, its first layer on the packed product as the student's (not how torch runs it) | "
        f"{ips['mlp_packed'] / 1e3:.1f}k | {ips['mlp_packed'] / ips['mlp']:.0%} | {f_mlp / 1e6:.2f}M | 100% |",
        f"| student, anchors policy | {ips['anchors'] / 1e3:.1f}k | {ips['anchors'] / ips['mlp']:.0%} | "
        f"{f_student / 1e6:.2f}M | {f_mlp / f_student:.0%} |",
        f"| student, anchors policy, its product on torch.mm (weights not packed) | {ips['unpacked'] / 1e3:.1f}k | "
        f"{ips['unpacked'] / ips['mlp']:.0%} | {f_student / 1e6:.2f}M | {f_mlp / f_student:.0%} |",
        f"| student, anchors policy, its kernels through their checking wrappers (no prepared call) | "
        f"{ips['checked'] / 1e3:.1f}k | {ips['checked'] / ips['mlp']:.0%} | {f_student / 1e6:.2f}M | "
        f"{f_mlp / f_student:.0%} |",
        f"| student, anchors policy, the same with the second layer outside the native pass (torch's addmm, as in the "
        "MLP) | "
        f"{ips['unfused'] / 1e3:.1f}k | {ips['unfused'] / ips['mlp']:.0%} | {f_student / 1e6:.2f}M | "
        f"{f_mlp / f_student:.0%} |",
        f"| student, anchors policy, general path (no fast path) | {ips['general'] / 1e3:.1f}k | "
        f"{ips['general'] / ips['mlp']:.0%} | {f_student / 1e6:.2f}M | {f_mlp / f_student:.0%} |",
        f"| student, anchors policy, native kernels off | {ips['torch'] / 1e3:.1f}k | "
        f"{ips['torch'] / ips['mlp']:.0%} | {f_student / 1e6:.2f}M | {f_mlp / f_student:.0%} |",
        *(
            f"| student, anchors policy, checking wrappers, {part} served | {ips[key] / 1e3:.1f}k | "
            f"{ips[key] / ips['mlp']:.0%} | "
            f"{f_student / 1e6:.2f}M | {f_mlp / f_student:.0%} |"
            for key, part in SERVED.items()
        ),
    ]


def read_bandwidth(sizes_mb: list[float], repeats: int) -> list[str]:
    """One thread summing a buffer of each size again and again: where the caches end (the in-place costs of the
    forward table come from re-reading, at the rate beyond the L2, what another stage evicted)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = ["| buffer (MB) | read (GB/s) |", "|---|---|"]
    try:
        for mb in sizes_mb:
            buf = torch.ones(int(mb * 2**20) // 4)
            calls = max(3, int(64 / mb))
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    buf.sum()
                best = min(best, (time.perf_counter() - start) / calls)
            rows.append(f"| {mb:g} | {mb * 2**20 / best / 1e9:.0f} |")
    finally:
        torch.set_num_threads(saved)
    return rows


def working_sets(bank: int) -> list[str]:
    """The bytes one batch of 256 reads, by tensor: the MLP's weights, and the student's under its fast path (its
    stacked first-layer and graph-head weight, its second layer, the bank's message table and packed positions)."""
    student, mlp = models(bank)
    with torch.inference_mode():
        student(torch.randn(256, 1, 28, 28), graph="anchors")
    states, search = student._bank_states(), student.bank._index[1]
    packed = search.packed.data if search.packed is not None else states["v"]

    def mb(*tensors) -> str:
        return f"{sum(t.numel() * t.element_size() for t in tensors) / 2**20:.2f}"

    x = torch.empty(256, 784)
    weights = list(mlp.parameters())
    return [
        "| model | weights (MB) | bank tables (MB) | input (MB) |",
        "|---|---|---|---|",
        f"| same-width MLP | {mb(*weights)} | - | {mb(x)} |",
        f"| student, anchors policy (fast path) | {mb(states['product'].weight, student.conv2.lin.weight)} | "
        f"{mb(states['msg12'], packed)} (messages {mb(states['msg12'])}, positions {mb(packed)}) | {mb(x)} |",
        "",
        f"The fast path's packed product (models/product.py) keeps, beside its {mb(states['product'].weight)} MB "
        f"weight, MKL's packing of it for each batch size it packed: "
        + (", ".join(f"{mb(p)} MB for {n} rows" for n, p in states["product"].packs.items()) or "none (no MKL)")
        + " (the memory it holds, not what a batch reads).",
    ]


def write_report(lines: list[str], out: Path | None) -> None:
    """Print the markdown ``lines`` and, with ``out``, write them there too (the scripts' shared ending)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", default="1,2", help="torch CPU thread counts, one set of tables each (default 1,2)")
    p.add_argument("--bank", type=int, default=1024, help="anchor bank size of the student (default 1024)")
    p.add_argument("--sizes", default="256,1024,4096,16384,54000", help="bank sizes of the selection table")
    p.add_argument("--seconds", type=float, default=0.5, help="seconds per timing (default 0.5)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timings per figure, the best kept (default 7)")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    env = environment()
    lines = [
        "# What the anchors policy costs beyond its arithmetic (CPU)",
        "",
        f"- command: `python scripts/anchors_cost.py {' '.join(sys.argv[1:])}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {env['platform']}, {os.cpu_count()} cores",
        f"- versions: torch {env['torch']}, python {env['python']}",
        f"- selection: `nearest_k` runs the native kernel (built here: {native.available()}); without it, it narrows "
        f"rows of at least {select.WIDE_ONE_THREAD:,} entries on one thread and {select.WIDE:,} on more, from "
        f"{select.ROWS} rows, and is otherwise one `topk`",
        f"- search: the native searches serve CPUs with {native.MIN_LANES}-lane float vectors or wider (here: "
        f"{native.library().cnn2gnn_nearest_lanes() if native.available() else 0} lanes); the anchors policy's "
        f"search (`TorchSearch`) takes the pruned one for banks of {TorchSearch.PRUNE_FROM:,} anchors or more where a "
        f"calibration computes at most {TorchSearch.PRUNE_BELOW:.0%} of the distances, else the fused one; the "
        "anchors forward runs the eval fast path (models/fastpath.py) unless said otherwise",
        "- every figure: the best of --repeats interleaved timings (each function timed once a round, in turn)",
    ]
    lines += [
        "",
        "## Memory: what a batch of 256 reads, and how fast one core reads it",
        "",
        *working_sets(args.bank),
        "",
        *read_bandwidth([0.25, 0.5, 1, 1.5, 2, 3, 4, 8, 32, 256], args.repeats),
    ]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        lines += [
            "",
            f"## {threads} torch thread{'s' if threads > 1 else ''}: selecting the 11 nearest of 256 queries",
            "",
            *selection_table(11, sizes, args.seconds, args.repeats),
            "",
            f"## {threads} torch thread{'s' if threads > 1 else ''}: searching 256 queries (64-d, isotropic) for their "
            "11 nearest",
            "",
            *search_table(11, sizes, args.seconds, args.repeats, flat=False),
            "",
            f"## {threads} torch thread{'s' if threads > 1 else ''}: searching 256 queries (64-d, along 8 axes) for "
            "their 11 nearest",
            "",
            *search_table(11, sizes, args.seconds, args.repeats, flat=True),
            "",
            f"## {threads} torch thread{'s' if threads > 1 else ''}: the anchors forward pass against the MLP "
            f"(bank {args.bank})",
            "",
            *forward_table(args.bank, args.seconds, args.repeats),
        ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
