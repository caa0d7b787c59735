"""Teacher and student images/s at several batch sizes on whatever device is given (issue 15): eager, compiled
(``torch.compile(fullgraph=True)``; on a GPU ``mode="reduce-overhead"``, i.e. CUDA graphs at each fixed batch size)
and, with --amp bf16, under bfloat16 autocast. Inputs are random normalised images of the model's shape; the graph's
cost is included (the anchors policy's bank states computed once, before timing). Times are wall-clock with the
device synchronised; each figure is the best of --repeats timings of at least --seconds.

    python scripts/speed.py --model runs/teacher --model runs/student --device cuda --batches 1,256,4096 \
        --compile --amp bf16 --out docs/results/speed-h200.md

Writes a markdown table with the command, device, date and versions (and prints it).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from cnn2gnn import policy
from cnn2gnn.checkpoint import load_model
from cnn2gnn.run import environment, resolve_device


def timed(fn, x: torch.Tensor, device: torch.device, seconds: float, repeats: int) -> float:
    """Best images/s of ``fn(x)`` over ``repeats`` timings of at least ``seconds`` each (after 3 warm-up calls)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn(x)
    sync()
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            fn(x)
            calls += 1
        sync()
        best = max(best, calls * len(x) / (time.perf_counter() - start))
    return best


def variants(model, name: str, device: torch.device, compile_: bool, amp: str):
    fn, used = policy.resolve(model)
    yield f"{name} ({used}), eager", fn
    if amp == "bf16":

        def bf16(x, fn=fn):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return fn(x)

        yield f"{name} ({used}), eager, bf16", bf16
    if compile_:
        mode = "reduce-overhead" if device.type == "cuda" else None
        compiled = torch.compile(model, fullgraph=True, mode=mode)
        fn_c = compiled if used == policy.NONE else (lambda x: compiled(x, graph=used))
        yield f"{name} ({used}), compiled", fn_c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model folder (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", default="1,256,4096")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(fullgraph=True)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = resolve_device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    env = environment()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {env['threads']} threads"
    lines = [
        "# Images/s by batch size",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Device: {where}; {env['platform']}; torch {env['torch']}; date {datetime.now(UTC).date()}.",
        "",
        "| model | " + " | ".join(f"b={b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for folder in args.model:
        model, meta = load_model(folder, device)
        shape = (meta["in_channels"], *meta["image_size"])
        with torch.inference_mode():
            for label, fn in variants(model, Path(folder).name, device, args.compile, args.amp):
                cells = []
                for b in batches:
                    x = torch.randn(b, *shape, device=device)
                    cells.append(f"{timed(fn, x, device, args.seconds, args.repeats):,.0f}")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    text = "\n".join([*lines, ""])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
