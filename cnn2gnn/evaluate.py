"""Honest evaluation (docs/method.md sections 5-6): accuracy over seeded shuffles of the test set (never class-sorted),
mean and std over seeds, the batch-order sensitivity of the ``batch`` policy, inference speed with the graph's cost
included, and single-image prediction from image files under the ``anchors`` policy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
    fn: Callable, example: torch.Tensor, batch_size: int, min_seconds: float = 1.0, max_iters: int = 200
) -> float:
    """Throughput of ``fn`` on batches of ``batch_size`` copies drawn from ``example`` (graph cost included)."""
    reps = -(-batch_size // len(example))
    x = example.repeat(reps, *([1] * (example.dim() - 1)))[:batch_size]
    x = x + 0.01 * torch.randn_like(x)  # distinct rows, so the graph is not built over exact duplicates
    fn(x)  # warm-up (builds the anchor cache once, as a deployed model would)
    iters, start = 0, time.perf_counter()
    while iters < max_iters and (iters < 3 or time.perf_counter() - start < min_seconds):
        fn(x)
        iters += 1
    return iters * batch_size / (time.perf_counter() - start)


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


class UnreadableImage(UserError):
    """An image file that is missing or that PIL cannot decode; ``reason`` is the message without the path."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _read_image(path: str | Path, meta: dict[str, Any]) -> torch.Tensor:
    """One image file as uint8 ``(C, H, W)`` in the model's mode (grey/RGB) and size; ``UnreadableImage`` if not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if meta["in_channels"] == 1 else "RGB")
            h, w = meta["image_size"]
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise UnreadableImage(path, "no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImage(path, f"not a readable image ({err})") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _normalise(images: Sequence[torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
    x = torch.stack(list(images)).float() / 255.0
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


def load_images(paths: Sequence[str | Path], meta: dict[str, Any]) -> torch.Tensor:
    """Read image files into a normalised (n, C, H, W) batch matching the model's input (grey/RGB, size); every
    file must be readable (``UnreadableImage`` names the first that is not)."""
    return _normalise([_read_image(p, meta) for p in paths], meta)


@torch.no_grad()
def predict_files(
    model: nn.Module, meta: dict[str, Any], paths: Sequence[str | Path]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Class and probability for each readable image file, and ``(file, reason)`` for each file skipped as missing
    or unreadable; a student uses its anchors, so skipping a file changes no other prediction. A ``UserError``
    when no file can be read."""
    fn, name = policy.resolve(model)
    if policy.depends_on_batch(name):
        raise UserError(
            "this student has no anchor bank, so single images cannot be classified; retrain with bank.size > 0"
        )
    read, images, skipped = [], [], []
    for p in paths:
        try:
            images.append(_read_image(p, meta))
            read.append(p)
        except UnreadableImage as err:
            skipped.append((err.path, err.reason))
    if not images:
        first = ": ".join(skipped[0])
        raise UserError(first if len(skipped) == 1 else f"none of the {len(skipped)} image files is readable; {first}")
    probs = torch.softmax(fn(_normalise(images, meta)), dim=1)
    conf, cls = probs.max(dim=1)
    rows = [
        {"file": str(p), "class": meta["classes"][int(c)], "index": int(c), "probability": float(q)}
        for p, c, q in zip(read, cls, conf, strict=True)
    ]
    return rows, skipped
