#!/usr/bin/env python
"""Run named student variants x seeds (in parallel processes) and tabulate mean +- std of val/test accuracy.

Each run is `cnn2gnn distill` with the variant's overrides; results are read back from each run's summary.json and
collected in OUT/results.jsonl (one line per finished run, so a killed sweep keeps what it finished) and
OUT/table.md. Example:

    python scripts/sweep.py --out runs/sweep --teacher runs/fm-resnet8 --variants mlp,sage-anchors-labels \
        --seeds 0,1,2 --jobs 2 --set optim.epochs=30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# name -> overrides on top of the student defaults (cnn2gnn/config.py StudentConfig)
VARIANTS: dict[str, list[str]] = {
    "mlp": ["model.arch=mlp"],
    "gcn-batch": ["model.aggregate=gcn", "distill.train_graph=batch"],
    "gcn-anchors": ["model.aggregate=gcn", "distill.train_graph=anchors"],
    "gcn-anchors-labels": ["model.aggregate=gcn", "distill.train_graph=anchors", "model.label_messages=true"],
    "sage-batch": ["model.aggregate=sage", "distill.train_graph=batch"],
    "sage-anchors": ["model.aggregate=sage", "distill.train_graph=anchors"],
    "sage-anchors-labels": ["model.aggregate=sage", "distill.train_graph=anchors", "model.label_messages=true"],
    "sage-anchors-labels-m4096": [
        "model.aggregate=sage",
        "distill.train_graph=anchors",
        "model.label_messages=true",
        "bank.size=4096",
    ],
    "sage-anchors-labels-head": [
        "model.aggregate=sage",
        "distill.train_graph=anchors",
        "model.label_messages=true",
        "model.graph_space=head",
    ],
    "sage-anchors-labels-pixels": [
        "model.aggregate=sage",
        "distill.train_graph=anchors",
        "model.label_messages=true",
        "model.graph_space=pixels",
    ],
    "sage-anchors-labels-detach": [
        "model.aggregate=sage",
        "distill.train_graph=anchors",
        "model.label_messages=true",
        "model.detach_graph=true",
    ],
}


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``name`` from VARIANTS, or ``name+key=value+key=value`` to add overrides to a named variant."""
    base, *extra = spec.split("+")
    if base not in VARIANTS:
        raise SystemExit(f"unknown variant '{base}' (known: {', '.join(VARIANTS)})")
    return spec, VARIANTS[base] + extra


def run_one(args, name: str, overrides: list[str], seed: int, kd: bool) -> dict:
    tag = f"{name}{'' if kd else '+ce'}".replace("/", "_")
    out = Path(args.out) / "runs" / f"{tag}-s{seed}"
    cmd = [
        sys.executable,
        "-m",
        "cnn2gnn",
        "distill",
        "--data",
        args.data,
        "--out",
        str(out),
        "--quiet",
        "--overwrite",  # a sweep trains every run afresh
        "--seed",
        str(seed),
        "--set",
        "run.threads=1",
        "--set",
        f"run.device={args.device}",
    ]
    if kd:
        cmd += ["--teacher", args.teacher]
    for o in overrides + args.set:
        cmd += ["--set", o]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    row = {
        "variant": name,
        "kd": kd,
        "seed": seed,
        "overrides": overrides + args.set,
        "rc": proc.returncode,
        "wall": round(time.time() - t0, 1),
    }
    if proc.returncode == 0:
        row.update(json.loads((out / "summary.json").read_text()))
        hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        row["curve_val"] = [h.get("val_acc") for h in hist]
    else:
        row["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
    return row


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["rc"] == 0:
            groups.setdefault((r["variant"], r["kd"]), []).append(r)
    keys = sorted({k for r in rows for k in r if k.startswith(("val_acc_", "test_acc_"))})
    lines = ["| variant | loss | n | " + " | ".join(keys) + " | s/run |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for (variant, kd), rs in sorted(groups.items()):
        cells = []
        for k in keys:
            vals = [100 * r[k] for r in rs if k in r]
            if not vals:
                cells.append("-")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.2f} +- {sd:.2f}")
        wall = statistics.fmean(r["wall"] for r in rs)
        lines.append(f"| {variant} | {'KD' if kd else 'CE'} | {len(rs)} | " + " | ".join(cells) + f" | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the runs")
    p.add_argument("--results", help="folder for results.jsonl and table.md (default: --out)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--teacher", help="teacher folder (KD runs); without it only CE runs are made")
    p.add_argument("--variants", default="mlp,sage-anchors-labels", help="comma-separated VARIANTS names")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ce", action="store_true", help="also run each variant with cross-entropy only")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="override for every run")
    args = p.parse_args()
    out = Path(args.results or args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = []
    for spec in args.variants.split(","):
        name, overrides = parse_variant(spec)
        for kd in ([True] if args.teacher else []) + ([False] if args.ce or not args.teacher else []):
            jobs += [(name, overrides, s, kd) for s in seeds]
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool, open(out / "results.jsonl", "a") as log:
        futures = [pool.submit(run_one, args, *job) for job in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            row = fut.result()
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            accs = {k: round(v, 4) for k, v in row.items() if "_acc_" in k}
            print(
                f"[{i}/{len(jobs)}] {row['variant']} kd={row['kd']} seed={row['seed']} rc={row['rc']} "
                f"{row['wall']}s {accs} {row.get('error', '')}",
                flush=True,
            )
            (out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
