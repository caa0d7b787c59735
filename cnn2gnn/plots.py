"""The benchmark's figures (docs/method.md sections 6-7): training curves, accuracy against a swept setting, accuracy
against inference cost, and two pictures of the learned graph (per-class homophily of the anchors graph, test images
with their nearest anchors). One function per figure; each saves a PNG and returns its path.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg renderer, no pyplot, no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_cost", "plot_curves", "plot_homophily", "plot_neighbours", "plot_sweep"]

# (x, mean, std) of one point of a series
Point = tuple[float | str, float, float]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_curves(curves: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "") -> Path:
    """Validation accuracy per epoch, one line per model (the mean over its seeds).

    Args:
        curves: label -> validation accuracy after each epoch (fractions in [0, 1]).
        path: the PNG to write.
        title: figure title.
    """
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for label, values in curves.items():
        values = [100 * v for v in values]
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title(title or "training curves (val accuracy, mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_sweep(
    series: Mapping[str, Sequence[Point]],
    path: str | Path,
    *,
    xlabel: str,
    title: str,
    log_x: bool = False,
    references: Mapping[str, float] | None = None,
) -> Path:
    """Accuracy (mean +- std) against one swept setting, one line per series; string x values are categories.

    Args:
        series: label -> points ``(x, mean, std)`` with accuracies as fractions.
        path: the PNG to write.
        xlabel: name of the swept setting.
        title: figure title.
        log_x: logarithmic x axis (numeric x only).
        references: label -> accuracy drawn as a horizontal dashed line (e.g. the MLP).
    """
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    categories: list[str] = []
    for points in series.values():
        for x, _, _ in points:
            if isinstance(x, str) and x not in categories:
                categories.append(x)
    for label, points in series.items():
        if not points:
            continue
        xs = [categories.index(x) if isinstance(x, str) else x for x, _, _ in points]
        ax.errorbar(
            xs,
            [100 * m for _, m, _ in points],
            yerr=[100 * s for _, _, s in points],
            marker="o",
            capsize=3,
            label=label,
        )
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(100 * value, ls="--", lw=1, color=f"C{len(series) + i}", label=label)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    elif log_x:
        xs = sorted({x for points in series.values() for x, _, _ in points})
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_cost(points: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Test accuracy against inference throughput (images/s, log axis): filled markers at batch 256, hollow at 1.

    Args:
        points: dicts with ``label``, ``acc`` and ``std`` (fractions), ``ips_1`` and ``ips_256`` (images/s) and
            ``teacher`` (bool: drawn as squares).
        path: the PNG to write.
        title: figure title.
    """
    fig = Figure(figsize=(10, 4.8))
    ax = fig.add_subplot()
    for i, p in enumerate(points):
        color, marker = f"C{i % 10}", "s" if p.get("teacher") else "o"
        y, e = 100 * p["acc"], 100 * p["std"]
        ax.errorbar([p["ips_256"]], [y], yerr=[e], fmt=marker, color=color, capsize=3, label=p["label"])
        ax.errorbar([p["ips_1"]], [y], yerr=[e], fmt=marker, mfc="none", color=color, capsize=3)
        ax.plot([p["ips_1"], p["ips_256"]], [y, y], color=color, lw=0.6, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("inference throughput (images/s; filled: batch 256, hollow: batch 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy vs inference cost (graph cost included)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_homophily(classes: Sequence[str], per_class: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Per-class homophily of the anchors graph: the share of a test image's k anchors that have its label.

    Args:
        classes: class names (x axis).
        per_class: model label -> homophily per class (fractions), one bar group per class.
        path: the PNG to write.
    """
    fig = Figure(figsize=(min(14.0, max(6.0, 0.3 * len(classes) * max(1, len(per_class)) + 2.0)), 4.2))
    ax = fig.add_subplot()
    n = max(len(per_class), 1)
    width = 0.8 / n
    x = np.arange(len(classes))
    for i, (label, values) in enumerate(per_class.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, [100 * v for v in values], width, label=label)
    ax.set_xticks(x, list(classes), rotation=30 if max(map(len, classes)) > 4 else 0, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("anchors with the same label (%)")
    ax.set_title("homophily of the anchors graph, per test class")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _show(ax, image: np.ndarray) -> None:
    """Draw a (C, H, W) image with values in [0, 1]."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0.0, 1.0))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_neighbours(
    queries: np.ndarray,
    query_labels: Sequence[int],
    neighbours: np.ndarray,
    neighbour_labels: np.ndarray,
    weights: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
) -> Path:
    """A grid: each row a test image, then its k nearest anchors by edge weight (green frame: same label).

    Args:
        queries: test images in [0, 1].
        query_labels: their labels.
        neighbours: their anchors, nearest (largest weight) first.
        neighbour_labels: the anchors' labels.
        weights: the edge weights.
        classes: class names.
        path: the PNG to write.

    Shapes:
        queries: (n, C, H, W); neighbours: (n, k, C, H, W); neighbour_labels, weights: (n, k)
    """
    n, k = neighbour_labels.shape
    fig = Figure(figsize=(1.1 * (k + 1) + 0.4, 1.25 * n + 0.5))
    axes = fig.subplots(n, k + 1, squeeze=False)
    for i in range(n):
        ax = axes[i][0]
        _show(ax, queries[i])
        ax.set_title(f"test: {classes[query_labels[i]]}", fontsize=7)
        for side in ax.spines.values():
            side.set_edgecolor("black")
            side.set_linewidth(2)
        for j in range(k):
            ax = axes[i][j + 1]
            _show(ax, neighbours[i, j])
            same = int(neighbour_labels[i, j]) == int(query_labels[i])
            ax.set_title(f"{classes[int(neighbour_labels[i, j])]} {weights[i, j]:.2f}", fontsize=6)
            for side in ax.spines.values():
                side.set_edgecolor("tab:green" if same else "tab:red")
                side.set_linewidth(2)
    share = float((neighbour_labels == np.asarray(query_labels)[:, None]).mean()) if n else math.nan
    fig.suptitle(f"test images and their k={k} anchors (weight shown; {100 * share:.0f}% same label)", fontsize=9)
    return _save(fig, path)
