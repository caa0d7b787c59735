"""Prediction from image files (docs/method.md section 5: a student classifies each image against its anchor bank):
find the image files under files and folders, read them one batch at a time in the model's colour mode and input
size, and return or write the K most probable classes of each image.

One record per image, the same in every output::

    {"path": "cats/1.png", "class": "cat", "index": 3, "probability": 0.91,
     "top_k": [{"class": "cat", "index": 3, "probability": 0.91}, {"class": "dog", "index": 5, "probability": 0.06}]}

``class``/``index``/``probability`` are the most probable class; ``top_k`` holds the K most probable, most probable
first (K = ``top_k``, at most the number of classes). ``FILE.jsonl`` holds one record a line; ``FILE.csv`` has the
header ``path,class,probability`` and for K > 1 ``class_2,probability_2,...,class_K,probability_K``; the text
output is the CSV's columns separated by tabs, without a header.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import policy
from .errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # lower case
OUTPUT_FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl"}  # --output extension -> format


class UnreadableImage(UserError):
    """An image file that is missing or that PIL cannot decode; ``reason`` is the message without the path."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


# ---------------------------------------------------------------------------------------------- finding files


def find_images(paths: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """The image files that ``paths`` name, and a warning for each folder without any.

    A folder stands for the files under it (recursively) whose extension is one of :data:`IMAGE_EXTENSIONS` (any
    case), sorted; any other path is taken as an image file as it is (a missing or unreadable one is skipped with a
    warning when it is read). Files keep the order of ``paths``; a file named twice is predicted once. A
    :class:`UserError` when there is nothing to predict.
    """
    files: dict[str, None] = {}  # ordered set
    warnings, empty = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.setdefault(str(p))
            continue
        found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        if not found:
            empty.append(str(p))
            warnings.append(f"{p}: no image files in this folder (looked for {' '.join(IMAGE_EXTENSIONS)})")
        for f in found:
            files.setdefault(str(f))
    if not files:
        where = empty[0] if len(empty) == 1 else f"any of the {len(empty)} folders given ({', '.join(empty)})"
        raise UserError(f"no image files to predict in {where} (looked for {' '.join(IMAGE_EXTENSIONS)}, any case)")
    return list(files), warnings


# ---------------------------------------------------------------------------------------------- reading images


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
    """uint8 ``(C, H, W)`` images as one float batch normalised with the model's mean and std; ``(0, C, H, W)``
    for no images."""
    if not images:
        return torch.empty(0, meta["in_channels"], *meta["image_size"])
    x = torch.stack(list(images)).float() / 255.0
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


def load_images(paths: Sequence[str | Path], meta: dict[str, Any]) -> torch.Tensor:
    """Read image files into a normalised (n, C, H, W) batch matching the model's input (grey/RGB, size); every
    file must be readable (``UnreadableImage`` names the first that is not)."""
    return _normalise([_read_image(p, meta) for p in paths], meta)


def iter_batches(
    files: Sequence[str | Path], meta: dict[str, Any], batch_size: int
) -> Iterator[tuple[torch.Tensor, list[str], list[tuple[str, str]]]]:
    """Consecutive groups of ``batch_size`` files, each decoded only when asked for: ``(x, good, skipped)`` with
    ``x`` the normalised ``(len(good), C, H, W)`` batch of the readable files ``good`` and ``(file, reason)`` for
    each file of the group that could not be read.

    Shapes:
        x: ``(n, C, H, W)`` with ``n <= batch_size`` (fewer for the last group and for unreadable files; 0 when
        none of a group is readable), ``C, H, W`` = ``meta["in_channels"]``, ``meta["image_size"]``.
    """
    if batch_size < 1:
        raise UserError(f"the batch size must be at least 1, got {batch_size}")
    for start in range(0, len(files), batch_size):
        images, good, skipped = [], [], []
        for path in files[start : start + batch_size]:
            try:
                images.append(_read_image(path, meta))
                good.append(str(path))
            except UnreadableImage as err:
                skipped.append((err.path, err.reason))
        yield _normalise(images, meta), good, skipped


# ---------------------------------------------------------------------------------------------- predicting


def _records(paths: Sequence[str], probs: torch.Tensor, top_k: int, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The module docstring's record for each row of ``probs`` ``(n, num_classes)``."""
    values, indices = probs.topk(top_k, dim=1)  # sorted, most probable first
    rows = []
    for path, vs, ix in zip(paths, values.tolist(), indices.tolist(), strict=True):
        top = [{"class": classes[i], "index": i, "probability": v} for v, i in zip(vs, ix, strict=True)]
        rows.append({"path": path, **top[0], "top_k": top})
    return rows


@torch.no_grad()
def predict(
    model: nn.Module,
    meta: dict[str, Any],
    files: Sequence[str | Path],
    *,
    batch_size: int = 256,
    top_k: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The record (module docstring) of each readable image file and ``(file, reason)`` for each file skipped as
    missing or unreadable, reading ``batch_size`` files at a time (one batch of decoded images in memory).

    The model runs under its default inference policy (:func:`cnn2gnn.policy.resolve`); one whose predictions
    depend on batch-mates (a student without an anchor bank) is a :class:`UserError`, so a prediction never
    depends on the batch size, the order or the skipped files. ``top_k`` larger than the number of classes gives
    every class. ``model`` must be on ``device``; ``progress`` shows a bar on stderr (when it is a terminal). A
    :class:`UserError` when no file can be read.
    """
    fn, name = policy.resolve(model)
    if policy.depends_on_batch(name):
        raise UserError(
            "this student has no anchor bank, so single images cannot be classified; retrain with bank.size > 0"
        )
    if top_k < 1:
        raise UserError(f"top-k must be at least 1, got {top_k}")
    top_k = min(top_k, meta["num_classes"])
    from tqdm.auto import tqdm

    rows, skipped = [], []
    bar = tqdm(
        total=len(files),
        desc="predict",
        unit="image",
        disable=None if progress else True,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        for x, good, bad in iter_batches(files, meta, batch_size):
            skipped += bad
            if len(good):
                probs = torch.softmax(fn(x.to(device)).float(), dim=1).cpu()
                rows += _records(good, probs, top_k, meta["classes"])
            del x  # the next batch is decoded while nothing holds this one
            bar.update(len(good) + len(bad))
    if not rows:
        first = ": ".join(skipped[0])
        raise UserError(first if len(skipped) == 1 else f"none of the {len(skipped)} image files is readable; {first}")
    return rows, skipped


# ---------------------------------------------------------------------------------------------- writing


def output_format(path: str | Path) -> str:
    """``csv`` or ``jsonl`` from the extension of ``path`` (any case); a :class:`UserError` for another extension
    or a folder that does not exist, so a long run never ends in a file it cannot write."""
    path = Path(path)
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = " or ".join(f"FILE{ext}" for ext in OUTPUT_FORMATS)
        raise UserError(f"--output {path}: unknown format '{path.suffix}' (use {known})")
    if not path.parent.is_dir():
        raise UserError(f"--output {path}: the folder {path.parent} does not exist")
    return fmt


def csv_header(top_k: int) -> list[str]:
    """``path,class,probability`` then ``class_i,probability_i`` for i = 2..K."""
    rest = [f"{c}_{i}" for i in range(2, top_k + 1) for c in ("class", "probability")]
    return ["path", "class", "probability", *rest]


def csv_row(row: dict[str, Any]) -> list[Any]:
    """A record's fields in :func:`csv_header` order (probabilities as Python writes floats: exact round trip)."""
    return [row["path"], *(c[key] for c in row["top_k"] for key in ("class", "probability"))]


def text_line(row: dict[str, Any]) -> str:
    """A record as the tab-separated line printed without ``--output``: path, class, probability (4 decimals), then
    the other top-k classes and probabilities."""
    return "\t".join([row["path"]] + [f"{c['class']}\t{c['probability']:.4f}" for c in row["top_k"]])


def write_predictions(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write records to ``path`` as CSV or JSON lines (by its extension, :func:`output_format`), atomically: the
    file appears complete or not at all. K is that of the records (the first one's ``top_k``)."""
    from .checkpoint import atomic_write

    fmt, rows = output_format(path), list(rows)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # any file name
            if fmt == "jsonl":
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                return
            writer = csv.writer(f)
            writer.writerow(csv_header(len(rows[0]["top_k"]) if rows else 1))
            writer.writerows(csv_row(r) for r in rows)

    atomic_write(path, write)
