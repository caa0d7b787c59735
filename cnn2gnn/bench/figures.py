"""The benchmark's figures (docs/method.md sections 6-7), drawn from a ``results.json`` dict alone: training curves,
accuracy vs inference cost, vs test batch size, vs test-time k, each trained sweep, and the graph's homophily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import plots
from ..policy import POLICIES
from .plan import METHOD, REFERENCE


def _points(results: dict, names: Sequence[tuple[Any, str]], policy: str) -> list[tuple[Any, float, float]]:
    pts = []
    for value, name in names:
        entry = results["rows"][name]["policies"].get(policy)
        if entry:
            x = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value).lower()
            pts.append((x, entry["test_acc"]["mean"], entry["test_acc"]["std"]))
    return pts


def _reference(results: dict) -> dict[str, float]:
    ref = results["rows"].get(REFERENCE)
    return {ref["label"]: ref["policies"]["none"]["test_acc"]["mean"]} if ref else {}


def figures(results: dict, out: Path) -> dict[str, str]:
    """Write the figures of ``results`` into ``out``; returns {figure: file name}. The neighbour picture needs a
    model and is drawn by :func:`cnn2gnn.bench.measure.neighbour_picture` instead."""
    rows = results["rows"]
    figs: dict[str, Path] = {}
    shown = [n for n, r in rows.items() if r["group"] in ("teacher", "main")]
    figs["curves"] = plots.plot_curves({rows[n]["label"]: rows[n]["curve_val"] for n in shown}, out / "curves.png")
    tb = results["test_batch_size"]
    if tb:
        series = {
            "CNN2GNN, batch policy, shuffled batches": [
                (int(b), v["shuffled"]["mean"], v["shuffled"]["std"]) for b, v in tb.items()
            ],
            "CNN2GNN, batch policy, class-sorted batches (leaks labels)": [
                (int(b), v["class_sorted"]["mean"], v["class_sorted"]["std"]) for b, v in tb.items()
            ],
        }
        refs = dict(_reference(results))
        anchors = rows[METHOD]["policies"].get("anchors")
        if anchors:
            refs["CNN2GNN, anchors policy (any batch size)"] = anchors["test_acc"]["mean"]
        figs["test_batch_size"] = plots.plot_sweep(
            series,
            out / "acc_vs_test_batch_size.png",
            xlabel="test batch size",
            log_x=True,
            references=refs,
            title="accuracy vs test batch size",
        )
    if results["test_k"]:
        tk = results["test_k"]
        policies = list(next(iter(tk.values())))
        series = {f"{p} policy": [(int(k), v[p]["mean"], v[p]["std"]) for k, v in tk.items()] for p in policies}
        figs["test_k"] = plots.plot_sweep(
            series,
            out / "acc_vs_k_test_time.png",
            xlabel=f"k at test time (trained with k={results['student_config']['model']['k']})",
            log_x=True,
            references=_reference(results),
            title="accuracy vs k (test time only)",
        )
    log_x = {sw["name"]: sw["log_x"] for sw in results["preset_config"]["sweeps"]}
    for name, sw in results["sweeps"].items():
        names = [(p["value"], p["row"]) for p in sw["points"]]
        series = {f"{p} policy": _points(results, names, p) for p in POLICIES}
        figs[f"sweep_{name}"] = plots.plot_sweep(
            series,
            out / f"sweep_{name}.png",
            xlabel=sw["title"],
            log_x=log_x[name],
            references=_reference(results),
            title=f"sensitivity: {sw['key']}" + (f" ({', '.join(sw['base'])})" if sw["base"] else ""),
        )
    cost = []
    for n in shown:
        for policy, entry in rows[n]["policies"].items():
            if "images_per_s" in entry:
                cost.append(
                    {
                        "label": rows[n]["label"] + ("" if policy == "none" else f" [{policy}]"),
                        "acc": entry["test_acc"]["mean"],
                        "std": entry["test_acc"]["std"],
                        "ips_1": entry["images_per_s"]["1"],
                        "ips_256": entry["images_per_s"]["256"],
                        "teacher": rows[n]["kind"] == "teacher",
                    }
                )
    figs["cost"] = plots.plot_cost(cost, out / "acc_vs_inference_cost.png")
    hom = results["graph"]["homophily"]
    if hom:
        figs["homophily"] = plots.plot_homophily(
            results["graph"]["classes"],
            {rows[n]["label"]: h["per_class"] for n, h in hom.items()},
            out / "graph_homophily.png",
        )
    return {k: p.name for k, p in figs.items()}
