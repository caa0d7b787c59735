"""Why a stage of the anchors forward costs more in place than alone, and why a teacher's images/s depends on the
process that times it (issue 15, item 4; docs/ablations.md s.16).

Two tables, every figure measured in this one run, with the quick preset's shapes and random weights:

1. the student's search of 256 queries timed alone, and after each of three other operations, every pair interleaved
   with its parts: the student's first-layer product (1.8 MB of weights), a 3.2 MB copy (memory only) and small
   products that stay in L1 (arithmetic only). A pair's extra time over its parts, large after the memory-heavy
   operations and small after the compute-only one, says that the in-place cost is the caches, not the threads;
2. images/s at batch 256 of the ResNet-8 teacher, the same-width MLP and the student (anchors policy), each timed in a
   fresh process with glibc's default allocator and with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set
   high: by default the teacher's 12.8 MB activations are returned to the system and faulted in again at every call.

    python scripts/inplace_cost.py --threads 1,2 --out docs/inplace_cost.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
from anchors_cost import best_times, models, write_report

from cnn2gnn.models.cnn import create_teacher
from cnn2gnn.run import environment

HIGH = {"MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def best_seconds(fns: dict, seconds: float, repeats: int) -> dict[str, float]:
    """Seconds a call of each of the argument-free ``fns``: anchors_cost.py's interleaved best of ``repeats`` rounds."""
    return best_times({name: lambda _, fn=fn: fn() for name, fn in fns.items()}, [None], seconds, repeats)


def pair_table(seconds: float, repeats: int) -> list[str]:
    student, _ = models(1024)
    x = torch.randn(256, 784)
    with torch.inference_mode():
        student(x, graph="anchors")  # the bank's states and the fast path's tables
    states, k = student._bank_states(), student.graph.k
    product, hidden = states["product"], student.conv1.lin.weight.shape[0]
    v = product(x)[:, hidden:]
    src, dst = torch.randn(800_000), torch.empty(800_000)
    a, b = torch.randn(128, 128), torch.randn(128, 128)

    def search():
        return student.bank.nearest(v, k + 1, states["v"], states["v_sq"])

    def small_products():
        for _ in range(40):
            a @ b

    before = {
        "the first layer's product (1.8 MB of weights)": lambda: product(x),
        "a 3.2 MB copy (memory only)": lambda: dst.copy_(src),
        "small products in L1 (arithmetic only)": small_products,
    }
    fns = {"search": search}
    for i, fn in enumerate(before.values()):
        fns[f"op{i}"] = fn
        fns[f"pair{i}"] = lambda fn=fn: (fn(), search())
    t = best_seconds(fns, seconds, repeats)
    rows = [
        f"The search alone: {1e3 * t['search']:.3f} ms.",
        "",
        "| before the search | that operation alone (ms) | both in turn (ms) | extra over the parts (µs) |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(before):
        extra = t[f"pair{i}"] - t[f"op{i}"] - t["search"]
        rows.append(f"| {name} | {1e3 * t[f'op{i}']:.3f} | {1e3 * t[f'pair{i}']:.3f} | {1e6 * extra:.1f} |")
    return rows


def speeds(seconds: float, repeats: int) -> dict[str, float]:
    """Images/s at batch 256 of the teacher, the MLP and the student in this process (the child's job)."""
    student, mlp = models(1024)
    teacher = create_teacher("resnet8", 10, 1, 28).eval()
    x = torch.randn(256, 1, 28, 28)
    fns = {"teacher": lambda: teacher(x), "mlp": lambda: mlp(x), "student": lambda: student(x, graph="anchors")}
    t = best_seconds(fns, seconds, repeats)
    return {name: 256 / s for name, s in t.items()}


def allocator_table(threads: int, seconds: float, repeats: int) -> list[str]:
    rows = ["| allocator | teacher (images/s) | MLP (images/s) | student (images/s) |", "|---|---|---|---|"]
    for label, extra in (("glibc's default", {}), ("thresholds set high", HIGH)):
        cmd = [sys.executable, __file__, "--child", "--seconds", str(seconds), "--repeats", str(repeats)]
        env = {**os.environ, **extra, "OMP_NUM_THREADS": str(threads)}
        out = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
        rows.append(f"| {label} | " + " | ".join(f"{out[m] / 1e3:.1f}k" for m in ("teacher", "mlp", "student")) + " |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", default="1,2", help="torch CPU thread counts, one set of tables each (default 1,2)")
    p.add_argument("--seconds", type=float, default=0.2, help="seconds per timing round (default 0.2)")
    p.add_argument("--repeats", type=int, default=10, help="interleaved rounds per figure, the best kept (default 10)")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # table 2's timing in a fresh process
    args = p.parse_args()
    if args.child:
        print(json.dumps(speeds(args.seconds, args.repeats)))
        return
    env = environment()
    lines = [
        "# Where the in-place cost comes from, and what the allocator does to a teacher (CPU)",
        "",
        f"- command: `python scripts/inplace_cost.py {' '.join(sys.argv[1:])}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {env['platform']}, {os.cpu_count()} cores; torch {env['torch']}, python {env['python']}",
        "- models: the quick preset's shapes (student hidden 512, graph head 64, k 10, bank 1,024; ResNet-8 width 16 "
        "on 28 x 28 x 1), random weights; batch 256; every figure the best of --repeats interleaved rounds",
    ]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        s = "s" if threads > 1 else ""
        lines += ["", f"## {threads} torch thread{s}: the search after another operation", ""]
        lines += pair_table(args.seconds, args.repeats)
        lines += ["", f"## {threads} torch thread{s}: images/s at batch 256, each in a fresh process", ""]
        lines += allocator_table(threads, args.seconds, args.repeats)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
