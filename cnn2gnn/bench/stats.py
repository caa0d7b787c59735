"""Aggregation over training seeds (docs/method.md section 6): mean, std (sample, n - 1) and n of every measurement of a
row, per-epoch mean curves, and nested {x: {series: stats}} tables for the test batch size and test-time k.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .plan import Row


def stats(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else float("nan"),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def mean_curve(curves: list[list[float]]) -> list[float]:
    """Per epoch, the mean over seeds (all runs of a row have the same number of epochs)."""
    return [statistics.fmean(epoch) for epoch in zip(*curves, strict=True)]


def aggregate(row: Row) -> dict[str, Any]:
    """A row's entry of ``results.json``: its runs' training logs and evaluations (``run["eval"]``) over the seeds."""
    runs = row.runs
    out: dict[str, Any] = {
        "label": row.label,
        "kind": row.kind,
        "group": row.group,
        "overrides": list(row.overrides),
        "teacher": row.teacher,
        "seeds": [r["seed"] for r in runs],
        "folders": [r["folder"] for r in runs],
        "parameters": runs[0]["eval"]["parameters"],
        "train_flops_per_image": runs[0]["eval"].get("train_flops_per_image"),
        "epochs": len(runs[0]["metrics"]),
        "seconds_per_epoch": stats([statistics.fmean(m["train_seconds"] for m in r["metrics"]) for r in runs]),
        "train_seconds": stats([r["wall"] for r in runs]),
        "best_epoch": stats([r["best"]["epoch"] + 1 for r in runs]),
        "val_acc_best": stats([r["best"]["val_acc"] for r in runs]),
        # the saved model's epoch (1-based): the best-val epoch under run.keep=best; runs of 0.1 saved the last
        "saved_epoch": stats([r["summary"].get("saved_epoch", len(r["metrics"]) - 1) + 1 for r in runs]),
        "val_acc_last": stats([r["metrics"][-1].get("val_acc", float("nan")) for r in runs]),
        "logged_policy": runs[0]["logged_policy"],
        "curve_val": mean_curve([[m.get("val_acc", float("nan")) for m in r["metrics"]] for r in runs]),
        "policies": {},
    }
    if "anchors" in runs[0]["eval"]:
        out["anchors"] = runs[0]["eval"]["anchors"]
    for policy, first in runs[0]["eval"]["policies"].items():
        entry = {"test_acc": stats([r["eval"]["policies"][policy]["test_acc"] for r in runs])}
        val = [r["summary"].get(f"val_acc_{policy}", r["summary"].get("val_acc")) for r in runs]
        if all(v is not None for v in val):  # the saved model's validation accuracy under this policy
            entry["val_acc"] = stats(val)
        if "class_sorted_acc" in first:
            entry["class_sorted_acc"] = stats([r["eval"]["policies"][policy]["class_sorted_acc"] for r in runs])
        for key in ("flops_per_image", "images_per_s"):
            if key in first:
                entry[key] = first[key]
        out["policies"][policy] = entry
    return out


def aggregate_nested(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """[{x: {series: acc}}] over seeds -> {x: {series: stats}}."""
    return {x: {s: stats([d[x][s] for d in per_seed]) for s in per_seed[0][x]} for x in per_seed[0]}
