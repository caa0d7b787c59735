"""Measurements of trained runs (docs/method.md sections 6-7): accuracy under each inference policy, FLOPs per image,
images/s, accuracy vs test batch size and vs test-time k, and the anchors graph's homophily and picture.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import native, plots, policy
from ..checkpoint import load_model
from ..data import BatchIterator, DataBundle
from ..evaluate import check_data, evaluate_accuracy, images_per_second_together
from ..models.cnn import count_parameters
from ..models.product import unpacked
from .plan import METHOD
from .presets import Preset
from .stats import aggregate_nested


def flops_per_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """FLOPs of one forward over the batch ``x`` divided by its size, counted by ``FlopCounterMode`` (matmuls and
    convolutions, 2 per multiply-add: the graph's distances and its dense propagation are included; top-k, the
    normalisation and elementwise ops are not). The anchors policy's bank is precomputed once beforehand, as a
    deployed model does. Counted on the torch path: the native search (:func:`cnn2gnn.native.nearest`) does the same
    multiply-adds as the distance product, which the counter cannot see inside a C kernel; and with the fast path's
    product on ``torch.mm``, whose FLOPs the counter knows (the packed product, models/product.py, is an MKL op it
    does not: it counted none)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), native.disabled(), unpacked():
        fn(x)
        counter = FlopCounterMode(display=False)
        with counter:
            fn(x)
    return counter.get_total_flops() / len(x)


def train_flops_per_image(model, meta: dict[str, Any], x: torch.Tensor) -> float:
    """FLOPs of one training step's forward and backward over the batch ``x``, per image, under the graph the model
    was trained with (for the anchors graph, the bank's states included: they are recomputed at every step)."""
    from torch.utils.flop_counter import FlopCounterMode

    graph = meta.get("train_graph", policy.NONE) if meta["kind"] == "student" else policy.NONE
    model.train()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            out = model(x) if graph == policy.NONE else model(x, graph=graph)
            out.float().sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return counter.get_total_flops() / len(x)


def policies(model) -> list[str]:
    """The inference policies to measure a model under: those it supports, or ``none`` for a model without a graph."""
    return list(policy.supported(model)) or [policy.NONE]


def _example(bundle: DataBundle, meta: dict[str, Any], n: int, device) -> torch.Tensor:
    it = BatchIterator(bundle.test, n, mean=meta["mean"], std=meta["std"], shuffle=True, seed=0, device=device)
    return next(iter(it)).x


def evaluate_run(
    folder: Path, bundle: DataBundle, preset: Preset, device: torch.device, *, cost: bool
) -> dict[str, Any]:
    """Accuracy of the model in ``folder`` under each policy it supports; with ``cost`` also its FLOPs."""
    model, meta = load_model(folder, device)
    check_data(meta, bundle)
    out: dict[str, Any] = {"parameters": count_parameters(model), "policies": {}}
    if meta["kind"] == "student":
        out["anchors"] = int(meta["student"]["bank"])
    example = _example(bundle, meta, 256, device) if cost else None
    if cost:
        out["train_flops_per_image"] = train_flops_per_image(model, meta, example)
    for name in policies(model):
        graph = None if name == policy.NONE else name
        shuffles = 1 if meta["kind"] == "teacher" else preset.shuffles
        acc = evaluate_accuracy(
            model,
            meta,
            bundle.test,
            graph=graph,
            batch_size=preset.eval_batch_size,
            seeds=range(shuffles),
            device=device,
        )
        entry: dict[str, Any] = {"test_acc": acc["mean"], "shuffle_accs": acc["accs"]}
        if "class_sorted_acc" in acc:
            entry["class_sorted_acc"] = acc["class_sorted_acc"]
        if cost:  # images/s: measure_speeds, all rows together
            entry["flops_per_image"] = flops_per_image(policy.resolve(model, graph)[0], example)
        out["policies"][name] = entry
    return out


SPEED_ROUNDS = 10  # interleaved rounds of the images/s timings, each row timed preset.speed_seconds / SPEED_ROUNDS


def measure_speeds(
    folders: list[Path], bundle: DataBundle, preset: Preset, device, *, repeats: int = SPEED_ROUNDS
) -> dict[str, dict[str, dict[str, float]]]:
    """Images/s at batch 1 and 256 of the model in each folder under each policy it supports, ``{folder name:
    {policy: {batch size: images/s}}}``, every (model, policy) timed together with the others in ``repeats`` rounds
    of equal time (:func:`cnn2gnn.evaluate.images_per_second_together`, ``preset.speed_seconds`` in all, no cap on the
    calls), the best round of each kept, so that the ratios the report states (student against MLP, against teacher)
    are measured at the same moments and over the same seconds."""
    fns, examples, keys = [], [], []
    for folder in folders:
        model, meta = load_model(folder, device)
        example = _example(bundle, meta, 256, device)
        for name in policies(model):
            fns.append(policy.resolve(model, None if name == policy.NONE else name)[0])
            examples.append(example)
            keys.append((folder.name, name))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for b in (1, 256):
        speeds = images_per_second_together(
            fns, examples, b, min_seconds=preset.speed_seconds, repeats=repeats, max_iters=None
        )
        for (folder, name), ips in zip(keys, speeds, strict=True):
            out.setdefault(folder, {}).setdefault(name, {})[str(b)] = ips
    return out


def acc_vs_test_batch_size(model, meta, bundle: DataBundle, preset: Preset, device) -> dict[str, dict[str, float]]:
    """Batch-policy accuracy at each test batch size, on shuffled and on class-sorted batches (docs/method.md 5-6)."""
    out = {}
    for b in preset.test_batch_sizes:
        # a batch of one is its own graph whatever the order: one pass, and sorting changes nothing
        seeds = range(1 if b == 1 else preset.shuffles)
        r = evaluate_accuracy(
            model, meta, bundle.test, graph="batch", batch_size=b, seeds=seeds, device=device, sorted_check=b > 1
        )
        out[str(b)] = {"shuffled": r["mean"], "class_sorted": r.get("class_sorted_acc", r["mean"])}
    return out


def acc_vs_test_k(model, meta, bundle: DataBundle, preset: Preset, device) -> dict[str, dict[str, float]]:
    """Accuracy of the trained model with k changed at test time only (both policies)."""
    trained_k = model.graph.k
    out = {}
    try:
        for k in preset.test_k:
            model.graph.k = k
            model.train(False)  # drops the cached anchor states, which depend on k
            out[str(k)] = {
                p: evaluate_accuracy(
                    model,
                    meta,
                    bundle.test,
                    graph=p,
                    batch_size=preset.eval_batch_size,
                    seeds=range(preset.shuffles if policy.depends_on_batch(p) else 1),
                    device=device,
                    sorted_check=False,
                )["mean"]
                for p in policies(model)
            }
    finally:
        model.graph.k = trained_k
        model.train(False)
    return out


def sensitivity(folders: list[Path], bundle: DataBundle, preset: Preset, device) -> tuple[dict, dict]:
    """Accuracy vs test batch size and vs test-time k of the CNN2GNN runs, aggregated over their seeds."""
    per_bs, per_k = [], []
    for folder in folders:
        model, meta = load_model(folder, device)
        per_bs.append(acc_vs_test_batch_size(model, meta, bundle, preset, device))
        if "anchors" in policies(model):
            per_k.append(acc_vs_test_k(model, meta, bundle, preset, device))
    return aggregate_nested(per_bs), (aggregate_nested(per_k) if per_k else {})


@torch.no_grad()
def anchor_neighbours(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge weights and anchor positions of the anchors graph of the images ``x``, largest weight first.

    The student's own :meth:`~cnn2gnn.models.gnn.GNNStudent.anchor_edges`, so the edges are exactly those of the
    ``anchors`` policy. Shapes: x (n, ...) -> weights (n, k), index (n, k).
    """
    return model.anchor_edges(x)


def homophily(model, meta, bundle: DataBundle, device) -> list[float]:
    """Per class: the mean over its test images of the share of their k anchors (non-zero edges) with their label."""
    it = BatchIterator(bundle.test, 1024, mean=meta["mean"], std=meta["std"], device=device)
    shares, labels = [], []
    for batch in it:
        w, idx = anchor_neighbours(model, batch.x)
        edge = w > 0
        same = (model.bank.labels[idx] == batch.y[:, None]) & edge
        shares.append((same.sum(1) / edge.sum(1).clamp_min(1)).cpu())
        labels.append(batch.y.cpu())
    share, label = torch.cat(shares), torch.cat(labels)
    return [float(share[label == c].mean()) if (label == c).any() else float("nan") for c in range(meta["num_classes"])]


def neighbour_picture(model, meta, bundle: DataBundle, n: int, path: Path, device) -> Path:
    """The first test image of each of ``n`` classes beside its k anchors (pixels un-normalised to [0, 1])."""
    labels = bundle.test.labels
    picks = [int(torch.nonzero(labels == c)[0]) for c in range(meta["num_classes"]) if (labels == c).any()][:n]
    pick = torch.tensor(picks, dtype=torch.long)
    split = bundle.test.subset(pick)
    x = next(iter(BatchIterator(split, len(split), mean=meta["mean"], std=meta["std"], device=device))).x
    w, idx = anchor_neighbours(model, x)
    c, (h, wd) = meta["in_channels"], meta["image_size"]
    mean = torch.tensor(meta["mean"], device=device).view(1, c, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(1, c, 1, 1)
    bank = model.bank.images.view(-1, c, h, wd) * std + mean
    return plots.plot_neighbours(
        (split.images.float() / 255).numpy(),
        [int(y) for y in split.labels],
        bank[idx].cpu().numpy(),
        model.bank.labels[idx].cpu().numpy(),
        w.cpu().numpy(),
        meta["classes"],
        path,
    )


def learned_graph(
    firsts: dict[str, Path], rows: dict[str, dict], bundle: DataBundle, preset: Preset, out: Path, device
) -> tuple[dict[str, Any], dict[str, str]]:
    """Homophily of the anchors graph of the graph students (first seed) and the nearest-anchors picture."""
    graph: dict[str, Any] = {"classes": list(bundle.classes), "homophily": {}}
    figures: dict[str, str] = {}
    for name in (METHOD, "gnn-ce", "gnn-pixels-kd"):
        if name not in rows or "anchors" not in rows[name]["policies"]:
            continue
        model, meta = load_model(firsts[name], device)
        per_class = homophily(model, meta, bundle, device)
        graph["homophily"][name] = {"per_class": per_class, "mean": statistics.fmean(per_class), "k": model.graph.k}
        if name == METHOD:
            path = neighbour_picture(model, meta, bundle, preset.neighbours, out / "graph_neighbours.png", device)
            figures["neighbours"] = path.name
    return graph, figures
