"""Pure readers of the on-disk dataset formats: IDX (MNIST family, gzipped or not), CIFAR-10/100 python pickles,
STL-10 binaries and ImageFolder trees. Each returns ``(images, labels, classes)``: uint8 numpy ``(N, H, W, C)``,
int64 numpy ``(N,)`` and the class names. No torch, no downloading; every format problem is a ``DataError``.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from cnn2gnn.errors import DataError

__all__ = ["SPLITS", "find_cifar", "find_stl10", "read_cifar", "read_idx", "read_image_folder", "read_stl10"]

SPLITS = ("train", "test")

Arrays = tuple[np.ndarray, np.ndarray, list[str]]

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension (N,)

_STL10_SIZE = 96


def _check_split(split: str, what: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{what}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``; gzip is recognised by its magic bytes, not the suffix."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return raw


def _parse_idx(path: Path, magic: int, what: str) -> np.ndarray:
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        got = "file too short" if found is None else f"magic 0x{found:08x}"
        raise DataError(f"{path}: not an IDX {what} file ({got}, expected magic 0x{magic:08x})")
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX {what} file ({len(data)} bytes, header needs {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    payload = len(data) - header
    if payload != expected:
        state = "truncated" if payload < expected else "has trailing bytes"
        raise DataError(f"{path}: IDX {what} file {state} (shape {dims} needs {expected} bytes, found {payload})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(images_path: str | Path, labels_path: str | Path, *, classes: list[str] | None = None) -> Arrays:
    """Read an IDX image file and its IDX label file (MNIST, Fashion-MNIST), gzipped or not.

    Args:
        images_path: ``*-images-idx3-ubyte[.gz]`` (magic 0x00000803).
        labels_path: ``*-labels-idx1-ubyte[.gz]`` (magic 0x00000801).
        classes: class names; default ``["0", "1", ...]`` up to the largest label.

    Shapes:
        images: uint8 ``(N, H, W, 1)``; labels: int64 ``(N,)``.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = _parse_idx(images_path, _IDX_IMAGES_MAGIC, "images")[..., None]
    labels = _parse_idx(labels_path, _IDX_LABELS_MAGIC, "labels").astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    elif len(labels) and labels.max() >= len(classes):
        raise DataError(f"{labels_path}: label {labels.max()} out of range for {len(classes)} classes")
    return images, labels, list(classes)


# ------------------------------------------------------------------------------------------------------- CIFAR

_CIFAR_LAYOUTS = {
    # variant: (folder name, file that identifies it, train files, test files)
    "cifar10": (
        "cifar-10-batches-py",
        "batches.meta",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
    ),
    "cifar100": ("cifar-100-python", "meta", ["train"], ["test"]),
}


def _numpy_globals() -> dict[str, object]:
    """The numpy functions that array and scalar pickles name, taken from the running numpy itself (numpy 1 files
    name them under ``numpy.core``, numpy 2 files under ``numpy._core``; both resolve to these)."""
    array = np.zeros(1, dtype=np.uint8)
    return {
        "_reconstruct": array.__reduce__()[0],  # an array at protocols 0-4
        "_frombuffer": array.__reduce_ex__(5)[0],  # an array at protocol 5
        "scalar": np.uint8(0).__reduce__()[0],  # a numpy scalar
    }


_NUMPY = _numpy_globals()
_SAFE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol 0-2 pickles written by Python 3
    **{(f"numpy.{core}.multiarray", n): _NUMPY[n] for core in ("core", "_core") for n in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _NUMPY["_frombuffer"] for core in ("core", "_core")},
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes, numbers and numpy arrays and scalars; refuses every other global
    (a pickle that names ``builtins.open`` or ``os.system`` would otherwise call it)."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # the real files are Python 2 pickles of byte strings
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _SAFE_GLOBALS:
            raise DataError(
                f"{self.path}: refused to load '{module}.{name}' (a CIFAR file holds only arrays, lists and strings)"
            )
        return _SAFE_GLOBALS[module, name]


def _unpickle(path: Path) -> dict:
    # The CIFAR python files are pickles by format; a data root may hold files from anywhere, so only the globals
    # that arrays need are admitted (_ArrayUnpickler): a file that would run code is refused, never executed.
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle can raise nearly anything (UnpicklingError, EOFError, ValueError...)
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR pickle (expected a dict, got {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_cifar(root: Path, variant: str) -> Path | None:
    """The CIFAR folder (``variant`` ``"cifar10"`` or ``"cifar100"``) at or inside ``root``, or None."""
    folder, marker, _, _ = _CIFAR_LAYOUTS[variant]
    for d in (root / folder, root):
        if (d / marker).is_file():
            return d
    return None


def _names(meta: dict, key: str, path: Path) -> list[str]:
    if key not in meta:
        raise DataError(f"{path}: missing key {key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def read_cifar(root: str | Path, split: str, coarse: bool = False, *, variant: str | None = None) -> Arrays:
    """Read CIFAR-10 or CIFAR-100 from the python-pickle release.

    ``root`` is the folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` or that folder itself. The
    variant is detected from the files (``batches.meta`` vs ``meta``) unless given.

    Args:
        root: data folder.
        split: ``"train"`` (CIFAR-10: ``data_batch_1..5``) or ``"test"``.
        coarse: CIFAR-100 only: the 20 superclass labels instead of the 100 fine labels.
        variant: ``"cifar10"``, ``"cifar100"`` or None to detect.

    Shapes:
        images: uint8 ``(N, 32, 32, 3)``; labels: int64 ``(N,)``.
    """
    root = Path(root)
    _check_split(split, f"CIFAR at {root}")
    if variant is not None and variant not in _CIFAR_LAYOUTS:
        raise DataError(f"unknown CIFAR variant {variant!r}; expected one of {', '.join(_CIFAR_LAYOUTS)}")
    if not root.is_dir():
        raise DataError(f"CIFAR: data root {root} does not exist or is not a folder")
    found = {v: d for v in ([variant] if variant else list(_CIFAR_LAYOUTS)) if (d := find_cifar(root, v))}
    if not found:
        wanted = " or ".join(_CIFAR_LAYOUTS[v][0] for v in ([variant] if variant else _CIFAR_LAYOUTS))
        raise DataError(f"CIFAR: no {wanted} folder (python version) in {root}")
    if len(found) > 1:
        raise DataError(f"CIFAR: {root} holds both CIFAR-10 and CIFAR-100; say which (variant=)")
    variant, folder = next(iter(found.items()))
    if coarse and variant != "cifar100":
        raise DataError(f"CIFAR: coarse labels exist only in CIFAR-100, but {folder} is CIFAR-10")
    _, marker, train_files, test_files = _CIFAR_LAYOUTS[variant]

    meta = _unpickle(folder / marker)
    if variant == "cifar10":
        classes, label_key = _names(meta, "label_names", folder / marker), "labels"
    elif coarse:
        classes, label_key = _names(meta, "coarse_label_names", folder / marker), "coarse_labels"
    else:
        classes, label_key = _names(meta, "fine_label_names", folder / marker), "fine_labels"

    images, labels = [], []
    for name in train_files if split == "train" else test_files:
        batch = _unpickle(folder / name)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{folder / name}: missing 'data' or {label_key!r} entry")
        data = np.asarray(batch["data"], dtype=np.uint8)
        lab = np.asarray(batch[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(lab):
            raise DataError(f"{folder / name}: expected data (N, 3072) and N labels, got {data.shape} and {lab.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # rows are C-order (3, 32, 32)
        labels.append(lab)
    labels_all = np.concatenate(labels)
    if len(labels_all) and (labels_all.min() < 0 or labels_all.max() >= len(classes)):
        raise DataError(f"{folder}: labels outside 0..{len(classes) - 1} in the {split} split")
    return np.ascontiguousarray(np.concatenate(images)), labels_all, classes


# ------------------------------------------------------------------------------------------------------ STL-10


def find_stl10(root: Path) -> Path | None:
    """The ``stl10_binary`` folder (identified by ``class_names.txt``) at or inside ``root``, or None."""
    return next((d for d in (root / "stl10_binary", root) if (d / "class_names.txt").is_file()), None)


def read_stl10(root: str | Path, split: str) -> Arrays:
    """Read the labelled STL-10 binaries (``stl10_binary/{train,test}_{X,y}.bin``, ``class_names.txt``).

    Images are stored column-major, i.e. each one as a C-order ``(3, W, H)`` block; labels are 1..10 on disk and
    0..9 here. ``root`` is the folder holding ``stl10_binary`` or that folder itself.

    Args:
        root: data folder.
        split: ``"train"`` (5,000 images) or ``"test"`` (8,000).

    Shapes:
        images: uint8 ``(N, 96, 96, 3)``; labels: int64 ``(N,)``.
    """
    root = Path(root)
    _check_split(split, f"STL-10 at {root}")
    folder = find_stl10(root)
    if folder is None:
        raise DataError(f"STL-10: no stl10_binary folder (with class_names.txt) in {root}")
    classes = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    x, y = _read_bytes(x_path), _read_bytes(y_path)
    per_image = 3 * _STL10_SIZE * _STL10_SIZE
    if len(x) % per_image:
        raise DataError(f"{x_path}: size {len(x)} is not a multiple of {per_image} (one 3x96x96 image); truncated?")
    if len(x) // per_image != len(y):
        raise DataError(f"{x_path} has {len(x) // per_image} images but {y_path} has {len(y)} labels")
    labels = np.frombuffer(y, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{y_path}: labels must be 1..{len(classes)}")
    images = np.frombuffer(x, dtype=np.uint8).reshape(-1, 3, _STL10_SIZE, _STL10_SIZE)  # (N, C, W, H)
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)), labels, classes


# ------------------------------------------------------------------------------------------------ ImageFolder

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _class_dirs(split_dir: Path) -> list[Path]:
    return [p for p in _visible(split_dir) if p.is_dir()]


def _probe(path: Path) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) from the header, or None when PIL cannot identify the file."""
    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _scan_split(split_dir: Path, classes: list[str]) -> tuple[list[tuple[Path, int, str, tuple[int, int]]], int]:
    """Readable files of one split as (path, label, mode, size), in class then file-name order, and the number of
    files skipped; an empty class folder is an error."""
    index = {c: i for i, c in enumerate(classes)}
    files, skipped = [], 0
    for cdir in _class_dirs(split_dir):
        if cdir.name not in index:
            raise DataError(f"ImageFolder: class {cdir.name!r} in {split_dir} is not a class folder of train/")
        n_before = len(files)
        for p in _visible(cdir):
            if not p.is_file():
                continue
            info = _probe(p)
            if info is None:
                skipped += 1
            else:
                files.append((p, index[cdir.name], *info))
        if len(files) == n_before:
            raise DataError(f"ImageFolder: class folder {cdir} holds no readable images")
    return files, skipped


def read_image_folder(root: str | Path, split: str, image_size: int | None = None) -> Arrays:
    """Read ``root/{train,test}/<class>/<image files>`` with PIL.

    Classes are the sorted folder names of ``train/``; hidden files are ignored; files PIL cannot read are skipped
    with one warning giving the count. Images are RGB when any image of train/ or test/ is colour, else 1 channel,
    and are resized (bilinear) to ``image_size`` or, when None, to the size of the first train image.

    Args:
        root: folder holding ``train/`` and ``test/``.
        split: ``"train"`` or ``"test"``.
        image_size: side of the square output images, or None.

    Shapes:
        images: uint8 ``(N, H, W, C)`` with ``C`` 1 or 3; labels: int64 ``(N,)``.
    """
    root = Path(root)
    _check_split(split, f"ImageFolder at {root}")
    if image_size is not None and image_size < 1:
        raise DataError(f"ImageFolder: image_size must be positive, got {image_size}")
    if not root.is_dir():
        raise DataError(f"ImageFolder: data root {root} does not exist or is not a folder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"ImageFolder: {root} has no train/ folder (expected root/{{train,test}}/<class>/<images>)")
    classes = [p.name for p in _class_dirs(train_dir)]
    if not classes:
        raise DataError(f"ImageFolder: {train_dir} holds no class folders")

    scans = {"train": _scan_split(train_dir, classes)}
    if (root / "test").is_dir():
        scans["test"] = _scan_split(root / "test", classes)
    elif split == "test":
        raise DataError(f"ImageFolder: {root} has no test/ folder")

    colour = any(mode not in _GREY_MODES for files, _ in scans.values() for _, _, mode, _ in files)
    mode = "RGB" if colour else "L"
    size = (image_size, image_size) if image_size is not None else scans["train"][0][0][3]  # PIL (W, H)

    files, skipped = scans[split]
    images, labels = [], []
    for path, label, _, _ in files:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if im.size != size:
                    im = im.resize(size, Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            skipped += 1
            continue
        labels.append(label)
    if skipped:
        warnings.warn(f"ImageFolder: skipped {skipped} unreadable or non-image file(s) in {root / split}", stacklevel=2)
    if not images:
        raise DataError(f"ImageFolder: no readable images in {root / split}")
    stacked = np.stack(images)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return stacked, np.asarray(labels, dtype=np.int64), classes
