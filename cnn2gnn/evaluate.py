"""Honest evaluation (docs/method.md sections 5-6): accuracy over seeded shuffles of the test set (never class-sorted),
mean and std over seeds, the batch-order sensitivity of the ``batch`` policy, and inference speed with the graph's cost
included. Prediction from image files is in predict.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import policy
from .data import BatchIterator, DataBundle, Split
from .errors import UserError
from .train import accuracy, predict_logits


def check_data(meta: dict[str, Any], bundle: DataBundle) -> None:
    shape = list(bundle.image_size)
    if (
        meta["num_classes"] != bundle.num_classes
        or meta["in_channels"] != bundle.in_channels
        or (list(meta["image_size"]) != shape)
    ):
        raise UserError(
            f"the model expects {meta['num_classes']} classes of {meta['in_channels']}x"
            f"{meta['image_size'][0]}x{meta['image_size'][1]} images ({meta['data']}), but "
            f"'{bundle.name}' has {bundle.num_classes} classes of {bundle.in_channels}x"
            f"{bundle.image_size[0]}x{bundle.image_size[1]}"
        )


def evaluate_accuracy(
    model: nn.Module,
    meta: dict[str, Any],
    split: Split,
    *,
    graph: str | None = None,
    batch_size: int = 256,
    seeds: Sequence[int] = (0, 1, 2),
    device="cpu",
    sorted_check: bool = True,
) -> dict[str, Any]:
    """Accuracy on ``split`` for each seeded shuffle of it; with the batch policy also on class-sorted batches.

    The images are normalised with the statistics stored in the model (those of its training split).
    """
    fn, name = policy.resolve(model, graph)
    accs = []
    for seed in seeds:
        it = BatchIterator(
            split, batch_size, mean=meta["mean"], std=meta["std"], shuffle=True, seed=seed, device=device
        )
        accs.append(accuracy(predict_logits(fn, it), split.labels))
    out: dict[str, Any] = {
        "policy": name,
        "batch_size": batch_size,
        "seeds": list(seeds),
        "accs": accs,
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
    }
    if sorted_check and policy.depends_on_batch(name):
        ordered = split.sorted_by_class()
        it = BatchIterator(ordered, batch_size, mean=meta["mean"], std=meta["std"], shuffle=False, device=device)
        out["class_sorted_acc"] = accuracy(predict_logits(fn, it), ordered.labels)
        out["sorted_minus_shuffled"] = out["class_sorted_acc"] - out["mean"]
    return out


@torch.no_grad()
def images_per_second(
    fn: Callable,
    example: torch.Tensor,
    batch_size: int,
    min_seconds: float = 1.0,
    max_iters: int = 200,
    repeats: int = 3,
) -> float:
    """Throughput of ``fn`` on batches of ``batch_size`` copies drawn from ``example`` (graph cost included): the
    best of ``repeats`` timings, each of at least ``min_seconds / repeats`` and at most ``max_iters / repeats`` calls
    (the best being the one least slowed by other work on the machine)."""
    return images_per_second_together([fn], [example], batch_size, min_seconds, max_iters, repeats)[0]


@torch.no_grad()
def images_per_second_together(
    fns: Sequence[Callable],
    examples: Sequence[torch.Tensor],
    batch_size: int,
    min_seconds: float = 1.0,
    max_iters: int | None = 200,
    repeats: int = 3,
) -> list[float]:
    """:func:`images_per_second` of each of ``fns`` (on its own ``examples[i]``), timed interleaved: each of the
    ``repeats`` rounds times every function once, in turn, so that the ratios between them compare the same moments
    of a machine whose speed drifts (the 2-core VM of docs/ moves by up to 2x between minutes). ``max_iters=None``:
    no cap on the calls, every function is timed for ``min_seconds / repeats`` a round (at least 3 calls), so that a
    fast one's best is not taken over fewer seconds (a noisier, hence higher, maximum) than a slow one's."""
    cap = float("inf") if max_iters is None else max_iters // repeats
    batches = []
    for fn, example in zip(fns, examples, strict=True):
        reps = -(-batch_size // len(example))
        x = example.repeat(reps, *([1] * (example.dim() - 1)))[:batch_size]
        batches.append(x + 0.01 * torch.randn_like(x))  # distinct rows: the graph is not built over exact duplicates
        fn(batches[-1])  # warm-up (builds the anchor cache once, as a deployed model would)
    best = [0.0] * len(fns)
    for _ in range(repeats):
        for i, (fn, x) in enumerate(zip(fns, batches, strict=True)):
            iters, start = 0, time.perf_counter()
            while iters < cap and (iters < 3 or time.perf_counter() - start < min_seconds / repeats):
                fn(x)
                iters += 1
            best[i] = max(best[i], iters * batch_size / (time.perf_counter() - start))
    return best


def measure_speed(
    model: nn.Module,
    meta: dict[str, Any],
    split: Split,
    *,
    graph: str | None = None,
    device="cpu",
    batch_sizes: Sequence[int] = (1, 256),
) -> dict[str, float]:
    """Images/s of the model under its inference policy on real images of ``split``, per batch size."""
    fn, _ = policy.resolve(model, graph)
    example = next(iter(BatchIterator(split, max(batch_sizes), mean=meta["mean"], std=meta["std"], device=device))).x
    return {str(b): images_per_second(fn, example, b) for b in batch_sizes}
