"""Summary of the label-regime study (issue 14): for each regime's `cnn2gnn bench --preset regimes` results, the gap
of CNN2GNN (both policies) and of the strongest graph variant (selected on validation) to the best same-budget MLP
(CE or KD, selected on validation), paired by seed, mean +- std over the seeds, on validation and test.

    python scripts/regimes_summary.py runs/regimes --out docs/results/regimes

Reads RUNS/<regime>/results.json (regimes: n10 n100 n1000 all p20 p40, those present), copies each regime's
report.md, results.json and figures to OUT/<regime>/, and writes OUT/summary.md, OUT/summary.json, OUT/gap.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

REGIMES = {  # name -> (label, x for the few-label panel or None, x for the noise panel or None)
    "n10": ("10 labels per class", 10, None),
    "n100": ("100 labels per class", 100, None),
    "n1000": ("1000 labels per class", 1000, None),
    "all": ("every label, clean", 5400, 0.0),
    "p20": ("20% of labels flipped", None, 0.2),
    "p40": ("40% of labels flipped", None, 0.4),
}
MLPS = ("mlp-ce", "mlp-kd")
METHOD = "cnn2gnn"
VARIANTS = ("cnn2gnn", "zero-true", "labels-true", "gnn-ce", "gnn-pixels-kd")  # graph rows to select the strongest
TARGET = 1.0  # points ahead of the MLP on both validation and test that make a regime a use case


def _values(results: dict, row: str, policy: str, split: str) -> list[float]:
    return results["rows"][row]["policies"][policy][f"{split}_acc"]["values"]


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _gap(results: dict, row: str, policy: str, mlp: str) -> dict[str, dict[str, float]]:
    """Per-seed (graph - MLP) in points, mean and std, for val and test."""
    out = {}
    for split in ("val", "test"):
        diffs = [
            100 * (g - m)
            for g, m in zip(_values(results, row, policy, split), _values(results, mlp, "none", split), strict=True)
        ]
        out[split] = {"mean": _mean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0, "n": len(diffs)}
    return out


def summarise(results: dict) -> dict:
    """One regime: the best MLP (on val), the gaps of CNN2GNN under each policy and of the strongest variant."""
    mlp = max(MLPS, key=lambda r: _mean(_values(results, r, "none", "val")))
    candidates = [(r, p) for r in VARIANTS if r in results["rows"] for p in results["rows"][r]["policies"]]
    best = max(candidates, key=lambda rp: _mean(_values(results, *rp, "val")))
    out = {
        "mlp": mlp,
        "mlp_acc": {s: 100 * _mean(_values(results, mlp, "none", s)) for s in ("val", "test")},
        "rows": {f"{METHOD} ({p})": _gap(results, METHOD, p, mlp) for p in results["rows"][METHOD]["policies"]},
        "strongest": {"row": best[0], "policy": best[1], **_gap(results, *best, mlp)},
    }
    return out


def _fmt(g: dict[str, float]) -> str:
    return f"{g['mean']:+.2f} +- {g['std']:.2f}"


def table(summaries: dict[str, dict]) -> list[str]:
    lines = [
        "| regime | best MLP (val / test %) | CNN2GNN anchors: val / test gap | CNN2GNN batch: val / test gap "
        "| strongest graph student (selected on val) | its val / test gap |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        rows = s["rows"]
        a, b, st = rows.get(f"{METHOD} (anchors)"), rows.get(f"{METHOD} (batch)"), s["strongest"]
        lines.append(
            f"| {REGIMES[name][0]} | {s['mlp']} ({s['mlp_acc']['val']:.2f} / {s['mlp_acc']['test']:.2f}) "
            f"| {_fmt(a['val'])} / {_fmt(a['test'])} | {_fmt(b['val'])} / {_fmt(b['test'])} "
            f"| {st['row']} ({st['policy']}) | {_fmt(st['val'])} / {_fmt(st['test'])} |"
        )
    return lines


def plot(summaries: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, panel, title, xlabel in (
        (axes[0], 1, "few labels", "labelled training images per class (log)"),
        (axes[1], 2, "noisy labels", "fraction of training labels flipped"),
    ):
        names = [n for n in summaries if REGIMES[n][panel] is not None]
        names.sort(key=lambda n: REGIMES[n][panel])
        xs = [REGIMES[n][panel] for n in names]
        for key, label, style in (
            (f"{METHOD} (anchors)", "CNN2GNN, anchors", "o-"),
            (f"{METHOD} (batch)", "CNN2GNN, batch", "s--"),
            ("strongest", "strongest graph student (val)", "^:"),
        ):
            gaps = [summaries[n]["rows"].get(key) or summaries[n][key] for n in names]
            ax.errorbar(xs, [g["test"]["mean"] for g in gaps], yerr=[g["test"]["std"] for g in gaps], fmt=style,
                        capsize=3, label=label)  # fmt: skip
        ax.axhline(0.0, color="grey", lw=1)
        ax.axhline(TARGET, color="green", lw=1, ls=":", label=f"+{TARGET:g} (use-case bar)")
        if panel == 1:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test accuracy gap to the best MLP (points)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="folder holding one bench output folder per regime")
    p.add_argument("--out", type=Path, default=Path("docs/results/regimes"))
    args = p.parse_args()
    summaries, commands = {}, {}
    for name in REGIMES:
        src = args.runs / name / "results.json"
        if not src.is_file():
            continue
        results = json.loads(src.read_text())
        summaries[name] = summarise(results)
        commands[name] = results["command"]
        dst = args.out / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in [src, src.with_name("report.md"), *src.parent.glob("*.png")]:
            shutil.copy2(f, dst / f.name)
    if not summaries:
        raise SystemExit(f"no regime results under {args.runs}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    plot(summaries, args.out / "gap.png")
    lines = [
        "# Where the graph pays: CNN2GNN against the best same-budget MLP, by label regime",
        "",
        "Gap = CNN2GNN minus the best MLP (CE or KD, chosen on validation), in accuracy points, per training seed, "
        "mean +- std over the seeds; validation under the regime (few or noisy labels), test always clean. Produced by",
        "`bash scripts/regimes.sh` (each regime: `cnn2gnn bench --preset regimes`, then this summary:",
        "`python scripts/regimes_summary.py runs/regimes --out docs/results/regimes`).",
        "",
        *table(summaries),
        "",
        "![gap to the MLP against the regime](gap.png)",
        "",
        "Commands:",
        "",
        *[f"- {REGIMES[n][0]}: `{c}` ([report]({n}/report.md))" for n, c in commands.items()],
        "",
    ]
    (args.out / "summary.md").write_text("\n".join(lines))
    print("\n".join(table(summaries)))


if __name__ == "__main__":
    main()
