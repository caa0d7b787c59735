"""Datasets as in-memory uint8 tensors: the registry of known datasets, where their files live (``resolve_root``),
and ``load_dataset``, which adds seeded stratified subsets (``limit_*``), a stratified validation split taken from
train, train-split normalisation statistics and a fingerprint of the raw data for run manifests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from cnn2gnn.data.formats import find_cifar, find_stl10, read_cifar, read_idx, read_image_folder, read_stl10
from cnn2gnn.errors import DataError

__all__ = ["DATASETS", "FASHION_MNIST_CLASSES", "DataBundle", "Split", "load_dataset", "resolve_root"]

DATA_ENV = "CNN2GNN_DATA"  # environment variable naming the folder that holds the datasets
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_HOW_TO_FIX = "pass --data-root DIR (or set $CNN2GNN_DATA), or --download"


@dataclass
class Split:
    """Images and labels of one split, kept as uint8 so that a whole dataset fits in memory.

    Shapes:
        images: uint8 ``(N, C, H, W)``; labels: int64 ``(N,)``.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"Split: images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split: labels must be int64 (N,) with N={self.images.shape[0]}, got {self.labels.shape}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at ``index`` (int64 positions or a bool mask), in that order."""
        return Split(self.images[index], self.labels[index])

    def sorted_by_class(self) -> Split:
        """The same samples stably sorted by label (class 0 first, original order within a class)."""
        return self.subset(torch.sort(self.labels, stable=True).indices)


@dataclass
class DataBundle:
    """A loaded dataset: train / val / test splits plus what a run needs to describe and normalise them.

    ``mean`` / ``std`` are per-channel statistics of the train split (after the val split was removed) scaled to
    [0, 1]; ``fingerprint`` is a short sha256 (16 hex digits) of the train and test arrays, labels and class names
    as the reader returns them: before ``limit_*``, the val split and ``image_size`` resizing (an ImageFolder reader
    already brings its images to one size), so runs on the same files share it whatever their options.
    """

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple(self.train.images.shape[2:])


class RawData(NamedTuple):
    """What a dataset reader returns: numpy uint8 ``(N, H, W, C)`` images, int64 labels, class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# ------------------------------------------------------------------------------------------------ readers


def _download(name: str, root: Path, fetch: Callable[[str], object]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch(str(root))
    except Exception as e:  # network, disk, checksum: all end up as one message naming the dataset and root
        raise DataError(f"{name}: download into {root} failed ({type(e).__name__}: {e})") from e


def _find_fashion_mnist(root: Path) -> dict[str, Path] | None:
    folders = (root, root / "FashionMNIST" / "raw")
    found = {}
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        hits = [d / (stem + s) for d in folders for s in (".gz", "") if (d / (stem + s)).is_file()]
        if not hits:
            return None
        found[stem] = hits[0]
    return found


def _read_fashion_mnist(root: Path, *, image_size: int | None, download: bool) -> RawData:
    files = _find_fashion_mnist(root)
    if files is None and download:
        import torchvision

        _download("fashion-mnist", root, lambda r: torchvision.datasets.FashionMNIST(r, train=True, download=True))
        files = _find_fashion_mnist(root)
    if files is None:
        raise DataError(
            f"fashion-mnist: no {{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] files in {root} or "
            f"{root / 'FashionMNIST' / 'raw'}; {_HOW_TO_FIX} (or apt-get install dataset-fashion-mnist)"
        )
    c = FASHION_MNIST_CLASSES
    x_tr, y_tr, _ = read_idx(files["train-images-idx3-ubyte"], files["train-labels-idx1-ubyte"], classes=c)
    x_te, y_te, _ = read_idx(files["t10k-images-idx3-ubyte"], files["t10k-labels-idx1-ubyte"], classes=c)
    return RawData(x_tr, y_tr, x_te, y_te, list(c))


def _read_digits(root: Path | None, *, image_size: int | None, download: bool) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    # no official test split: a fixed (seed 0) stratified 75/25 split, independent of the run's seed
    train, test = _stratified_split(labels, 0.25, np.random.default_rng(0), min_one=True)
    classes = [str(int(c)) for c in digits.target_names]
    return RawData(images[train], labels[train], images[test], labels[test], classes)


def _torchvision_reader(
    name: str, folder: str, present: Callable, read: Callable, fetch: Callable
) -> Callable[..., RawData]:
    """A reader for a dataset that torchvision can download in the format that ``read(root, split)`` reads;
    ``present(root)`` says whether its ``folder`` is at or in ``root``."""

    def reader(root: Path, *, image_size: int | None, download: bool) -> RawData:
        if not present(root) and download:
            import torchvision

            _download(name, root, lambda r: fetch(torchvision.datasets, r))
        if not present(root):
            raise DataError(f"{name}: no {folder} folder at or in {root}; {_HOW_TO_FIX}")
        x_tr, y_tr, classes = read(root, "train")
        x_te, y_te, _ = read(root, "test")
        return RawData(x_tr, y_tr, x_te, y_te, classes)

    return reader


def _read_image_folder(root: Path, *, image_size: int | None, download: bool) -> RawData:
    x_tr, y_tr, classes = read_image_folder(root, "train", image_size)
    x_te, y_te, _ = read_image_folder(root, "test", image_size)
    return RawData(x_tr, y_tr, x_te, y_te, classes)


DATASETS: dict[str, Callable[..., RawData]] = {
    # name -> reader(root, *, image_size, download) -> RawData
    "fashion-mnist": _read_fashion_mnist,
    "digits": _read_digits,
    "cifar10": _torchvision_reader(
        "cifar10",
        "cifar-10-batches-py",
        lambda r: find_cifar(r, "cifar10") is not None,
        lambda r, s: read_cifar(r, s, variant="cifar10"),
        lambda tv, r: tv.CIFAR10(r, download=True),
    ),
    "cifar100": _torchvision_reader(
        "cifar100",
        "cifar-100-python",
        lambda r: find_cifar(r, "cifar100") is not None,
        lambda r, s: read_cifar(r, s, variant="cifar100"),
        lambda tv, r: tv.CIFAR100(r, download=True),
    ),
    "stl10": _torchvision_reader(
        "stl10",
        "stl10_binary",
        lambda r: find_stl10(r) is not None,
        read_stl10,
        lambda tv, r: tv.STL10(r, split="train", download=True),  # the archive holds train, test and unlabeled
    ),
    "imagefolder": _read_image_folder,
}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def resolve_root(name: str, root: str | Path | None, *, download: bool = False) -> Path:
    """Where the files of dataset ``name`` are looked for.

    An explicit ``root`` wins (returned even if missing, so that a download can create it). Otherwise, for
    fashion-mnist, ``/usr/share/datasets/fashion-mnist`` if it exists; then ``$CNN2GNN_DATA/<name>`` if it exists,
    else ``$CNN2GNN_DATA``. With ``download=True`` and nothing found: ``~/.cache/cnn2gnn/<name>``. ``digits`` ships
    inside scikit-learn and resolves to its data folder. Anything else is a ``DataError``.
    """
    _check_name(name)
    if root is not None:
        return Path(root).expanduser()
    if name == "digits":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"
    if name == "fashion-mnist" and SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    env = os.environ.get(DATA_ENV)
    if env:
        base = Path(env).expanduser()
        return base / name if (base / name).is_dir() else base
    if download:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnn2gnn" / name
    if name == "imagefolder":
        raise DataError(
            "imagefolder: no data root given; pass --data-root DIR holding train/<class>/ and test/<class>/"
        )
    looked = f"{SYSTEM_FASHION_MNIST} and " if name == "fashion-mnist" else ""
    raise DataError(f"{name}: no data root given and none found (looked at {looked}${DATA_ENV}, unset); {_HOW_TO_FIX}")


# ------------------------------------------------------------------------------------ subsets and statistics


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator, *, min_one: bool) -> tuple:
    """Split positions into (keep, take) with ``round(fraction * n_c)`` of each class taken; with ``min_one`` at
    least one per class with >= 2 samples. At least one sample of every class is kept. Both sorted."""
    take = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(np.floor(fraction * len(idx) + 0.5))
        if min_one and fraction > 0 and len(idx) >= 2:
            k = max(k, 1)
        k = min(k, len(idx) - 1)
        if k > 0:
            take.append(rng.choice(idx, size=k, replace=False))
    mask = np.zeros(len(labels), dtype=bool)
    if take:
        mask[np.concatenate(take)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _stratified_subset(labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``n`` samples with the class proportions of ``labels`` (largest remainder); every class
    gets at least one sample when ``n`` >= the number of classes."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    base = np.zeros(len(classes), dtype=np.int64)
    if n >= len(classes):
        base += 1
    rest, weights = n - base.sum(), counts - base
    quota = rest * weights / weights.sum()
    alloc = base + np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    alloc[order[: n - alloc.sum()]] += 1
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, alloc, strict=True) if k
    ]
    return np.sort(np.concatenate(picks))


def _fingerprint(raw: RawData) -> str:
    h = hashlib.sha256()
    for arr in (raw.train_images, raw.train_labels, raw.test_images, raw.test_labels):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        h.update(memoryview(arr).cast("B"))
    h.update("\n".join(raw.classes).encode())
    return h.hexdigest()[:16]


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 NCHW images scaled to [0, 1]; a constant channel gets
    std 1 so that normalising never divides by zero."""
    n_chan = images.shape[1]
    s = torch.zeros(n_chan, dtype=torch.int64)
    s2 = torch.zeros(n_chan, dtype=torch.int64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.int64)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    if count == 0:
        return (0.0,) * n_chan, (1.0,) * n_chan
    mean = [float(v) / count for v in s.tolist()]
    var = [max(float(q) / count - m * m, 0.0) for q, m in zip(s2.tolist(), mean, strict=True)]
    std = [v**0.5 / 255.0 if v > 0 else 1.0 for v in var]
    return tuple(m / 255.0 for m in mean), tuple(std)


def _to_split(images: np.ndarray, labels: np.ndarray, image_size: int | None, chunk: int = 4096) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if image_size is not None and tuple(x.shape[2:]) != (image_size, image_size):
        x = torch.cat(
            [
                F.interpolate(x[i : i + chunk].float(), size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
                for i in range(0, x.shape[0], chunk)
            ]
        )  # fmt: skip
    return Split(x, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int | None = None,
    download: bool = False,
) -> DataBundle:
    """Load dataset ``name`` into memory as a :class:`DataBundle`; never downloads unless ``download=True``.

    Order of operations: read train/test from ``resolve_root(name, root)``; take a seeded stratified subset of
    ``limit_train`` train and ``limit_test`` test samples; split a stratified ``val_fraction`` of every class off
    train (at least one per class with >= 2 samples when ``val_fraction > 0``); resize to ``image_size`` (bilinear);
    compute mean/std on what is left of train. All randomness depends on ``seed`` only.

    Args:
        name: one of ``DATASETS``.
        root: data folder; None for the default (see :func:`resolve_root`).
        val_fraction: fraction of each train class held out for validation, in [0, 1).
        seed: seed of the subsets and the val split (the digits test split is fixed).
        limit_train: number of train samples (before the val split) or None for all.
        limit_test: number of test samples or None for all.
        image_size: side of square images to resize to, or None to keep the native size.
        download: fetch the dataset through torchvision when it is not found.

    Shapes:
        splits hold uint8 ``(N, C, H, W)`` images and int64 ``(N,)`` labels.
    """
    _check_name(name)
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"{name}: val_fraction must be in [0, 1), got {val_fraction}")
    for key, value in (("limit_train", limit_train), ("limit_test", limit_test), ("image_size", image_size)):
        if value is not None and value < 1:
            raise DataError(f"{name}: {key} must be a positive integer or None, got {value}")
    path = resolve_root(name, root, download=download)
    if name != "digits" and not path.is_dir() and not (download and name != "imagefolder"):
        raise DataError(f"{name}: data root {path} does not exist or is not a folder; {_HOW_TO_FIX}")

    raw = DATASETS[name](path, image_size=image_size, download=download)
    if raw.train_images.shape[1:] != raw.test_images.shape[1:]:
        raise DataError(
            f"{name}: train images {raw.train_images.shape[1:]} and test {raw.test_images.shape[1:]} differ"
        )
    fingerprint = _fingerprint(raw)

    keep = _stratified_subset(raw.train_labels, limit_train, np.random.default_rng([seed, 1]))
    train_x, train_y = raw.train_images[keep], raw.train_labels[keep]
    tr, va = _stratified_split(train_y, val_fraction, np.random.default_rng([seed, 2]), min_one=True)
    test_keep = _stratified_subset(raw.test_labels, limit_test, np.random.default_rng([seed, 3]))

    train = _to_split(train_x[tr], train_y[tr], image_size)
    val = _to_split(train_x[va], train_y[va], image_size)
    test = _to_split(raw.test_images[test_keep], raw.test_labels[test_keep], image_size)
    mean, std = _channel_stats(train.images)
    return DataBundle(name, list(raw.classes), train, val, test, mean, std, fingerprint)
