"""Tests of the data layer: the format readers on small files written here in the real formats, dataset loading
(digits for real, Fashion-MNIST when the Debian package is installed), the stratified splits and the batch iterator
with its augmentation.
"""

import gzip
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn2gnn.data import (
    DATASETS,
    Augment,
    BatchIterator,
    Split,
    load_dataset,
    normalize,
    read_cifar,
    read_idx,
    read_image_folder,
    read_stl10,
    resolve_root,
)
from cnn2gnn.data import datasets as datasets_module
from cnn2gnn.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------- file writers


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def balanced_labels(n: int, k: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % k


def write_fashion(root: Path, *, gz: bool = True, n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    """A tiny Fashion-MNIST in the Debian layout (6x5 images to catch H/W mix-ups)."""
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", random_images(n, 6, 5, 1, s)[..., 0], gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", balanced_labels(n, 10), gz=gz)


def pickle_dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """The on-disk CIFAR row layout: each image as C-order (3, 32, 32) flattened to 3072 bytes."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1)


def write_cifar10(parent: Path, n_per_batch: int = 10) -> tuple[np.ndarray, np.ndarray]:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    pickle_dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n_per_batch})
    images = random_images(6 * n_per_batch, 32, 32, 3, seed=3)
    images[0] = 0
    images[0, 0, 5, 0] = 255  # one red pixel at row 0, column 5
    labels = balanced_labels(6 * n_per_batch, 10)
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        part = slice(i * n_per_batch, (i + 1) * n_per_batch)
        batch = {b"data": cifar_rows(images[part]), b"labels": labels[part].tolist(), b"batch_label": b"x"}
        pickle_dump(folder / name, batch)
    return images, labels


def write_stl10(parent: Path, images_hwc: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    folder = parent / "stl10_binary"
    folder.mkdir(parents=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "test"):
        # STL-10 stores each image column-major: a C-order (3, W, H) block
        (folder / f"{split}_X.bin").write_bytes(images_hwc[split].transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels[split] + 1).astype(np.uint8).tobytes())


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ------------------------------------------------------------------------------------------------ digits


def test_digits_loads_with_stratified_val_split():
    b = load_dataset("digits", val_fraction=0.1, seed=0)
    assert b.name == "digits" and b.num_classes == 10 and b.in_channels == 1 and b.image_size == (8, 8)
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape[1:] == (1, 8, 8)
    assert b.train.labels.dtype == torch.int64
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert b.train.images.max() == 255 and b.train.images.min() == 0
    # the test split is a stratified quarter of every class
    assert abs(len(b.test) - 1797 / 4) < 10
    # the val split takes round(0.1 * n_c) of every train class
    counts = torch.bincount(torch.cat([b.train.labels, b.val.labels]), minlength=10)
    val_counts = torch.bincount(b.val.labels, minlength=10)
    assert torch.equal(val_counts, torch.floor(counts * 0.1 + 0.5).long())
    # mean/std are those of the train split scaled to [0, 1]
    x = b.train.images.double() / 255
    assert b.mean == pytest.approx((x.mean().item(),)) and b.std == pytest.approx((x.std(unbiased=False).item(),))
    assert 0.2 < b.mean[0] < 0.4 and 0.3 < b.std[0] < 0.5


def test_digits_is_deterministic_and_test_split_ignores_seed():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=1)
    assert a.fingerprint == b.fingerprint == c.fingerprint and len(a.fingerprint) == 16
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert torch.equal(a.test.images, c.test.images) and torch.equal(a.test.labels, c.test.labels)
    assert not torch.equal(a.val.images, c.val.images)


def test_val_fraction_zero_and_limits():
    b = load_dataset("digits", val_fraction=0.0, limit_train=100, limit_test=30, seed=3)
    assert len(b.val) == 0 and b.val.images.shape == (0, 1, 8, 8)
    assert len(b.train) == 100 and len(b.test) == 30
    assert torch.bincount(b.train.labels, minlength=10).min() >= 9  # stratified: 10 per class
    same = load_dataset("digits", val_fraction=0.0, limit_train=100, limit_test=30, seed=3)
    assert torch.equal(b.train.images, same.train.images)
    tiny = load_dataset("digits", val_fraction=0.01, limit_train=20)
    assert torch.equal(torch.bincount(tiny.val.labels, minlength=10), torch.ones(10, dtype=torch.long))
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)


def test_image_size_resizes():
    b = load_dataset("digits", limit_train=50, limit_test=10, image_size=16)
    assert b.image_size == (16, 16) and b.test.images.shape[1:] == (1, 16, 16) and b.train.images.dtype == torch.uint8


# ----------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_debian_files():
    b = load_dataset("fashion-mnist", limit_train=300, limit_test=100)
    assert b.image_size == (28, 28) and b.in_channels == 1 and b.num_classes == 10
    assert len(b.train) + len(b.val) == 300 and len(b.test) == 100 and len(b.val) == 30
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"
    assert b.fingerprint == load_dataset("fashion-mnist", limit_train=50, limit_test=10).fingerprint


def test_fashion_mnist_fake_files_gz_raw_and_torchvision_layout(tmp_path):
    write_fashion(tmp_path / "gz", gz=True)
    write_fashion(tmp_path / "raw", gz=False)
    write_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    a = load_dataset("fashion-mnist", tmp_path / "gz")
    b = load_dataset("fashion-mnist", tmp_path / "raw")
    c = load_dataset("fashion-mnist", tmp_path / "tv")
    assert a.image_size == (6, 5) and len(a.test) == 20 and len(a.train) + len(a.val) == 60
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert torch.equal(a.train.images, c.train.images)
    write_fashion(tmp_path / "other", seed=7)
    assert load_dataset("fashion-mnist", tmp_path / "other").fingerprint != a.fingerprint


def test_fashion_mnist_missing_files_never_downloads_unless_asked(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            write_fashion(Path(root) / "FashionMNIST" / "raw", gz=True)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--download") as err:
        load_dataset("fashion-mnist", tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value) and calls == []
    b = load_dataset("fashion-mnist", tmp_path / "new", download=True)
    assert calls == [True] and len(b.test) == 20


# ---------------------------------------------------------------------------------------------------- IDX


def test_read_idx_gz_and_raw(tmp_path):
    images, labels = random_images(7, 4, 3, 1)[..., 0], balanced_labels(7, 3)
    for gz in (True, False):
        x, y, classes = read_idx(
            write_idx(tmp_path / f"x{gz}", images, gz=gz), write_idx(tmp_path / f"y{gz}", labels, gz=gz)
        )
        assert x.dtype == np.uint8 and x.shape == (7, 4, 3, 1) and np.array_equal(x[..., 0], images)
        assert y.dtype == np.int64 and np.array_equal(y, labels) and classes == ["0", "1", "2"]


def test_read_idx_errors_name_the_file(tmp_path):
    x = write_idx(tmp_path / "x.gz", random_images(5, 4, 4, 1)[..., 0], gz=True)
    y = write_idx(tmp_path / "y", balanced_labels(5, 2), gz=False)
    with pytest.raises(DataError, match=r"y.*magic"):
        read_idx(y, x)  # swapped
    (tmp_path / "short").write_bytes((tmp_path / "y").read_bytes()[:-2])
    with pytest.raises(DataError, match=r"short.*truncated"):
        read_idx(x, tmp_path / "short")
    (tmp_path / "cut.gz").write_bytes(x.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut\.gz"):
        read_idx(tmp_path / "cut.gz", y)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope", y)
    y3 = write_idx(tmp_path / "y3", balanced_labels(3, 2), gz=False)
    with pytest.raises(DataError, match=r"5 images.*3 labels"):
        read_idx(x, y3)


# -------------------------------------------------------------------------------------------------- CIFAR


def test_read_cifar10_orientation_and_roots(tmp_path):
    images, labels = write_cifar10(tmp_path)
    x, y, classes = read_cifar(tmp_path, "train")
    assert x.shape == (50, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, images[:50]) and np.array_equal(y, labels[:50])
    assert x[0, 0, 5, 0] == 255 and x[0, 5, 0, 0] == 0 and x[0, 0, 5, 1] == 0  # red, row 0, column 5
    assert classes[0] == "airplane" and len(classes) == 10
    x2, y2, _ = read_cifar(tmp_path / "cifar-10-batches-py", "test")
    assert np.array_equal(x2, images[50:]) and np.array_equal(y2, labels[50:])
    b = load_dataset("cifar10", tmp_path, val_fraction=0.2)
    assert b.image_size == (32, 32) and b.in_channels == 3 and len(b.val) == 10 and len(b.test) == 10
    with pytest.raises(DataError, match="coarse"):
        read_cifar(tmp_path, "train", coarse=True)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", tmp_path)


def test_read_cifar100_fine_and_coarse(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine_names = [f"fine{i}".encode() for i in range(100)]
    coarse_names = [f"coarse{i}".encode() for i in range(20)]
    pickle_dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    images = random_images(30, 32, 32, 3)
    fine, coarse = np.arange(30) * 3, np.arange(30) % 20
    for name, part in (("train", slice(0, 20)), ("test", slice(20, 30))):
        batch = {b"data": cifar_rows(images[part]), b"fine_labels": fine[part].tolist()}
        pickle_dump(folder / name, batch | {b"coarse_labels": coarse[part].tolist()})
    x, y, classes = read_cifar(folder, "train")
    assert np.array_equal(x, images[:20]) and np.array_equal(y, fine[:20]) and len(classes) == 100
    _, yc, cc = read_cifar(tmp_path, "test", coarse=True)
    assert np.array_equal(yc, coarse[20:]) and cc[3] == "coarse3"
    assert load_dataset("cifar100", tmp_path, val_fraction=0).num_classes == 100
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"test.*pickle"):
        read_cifar(tmp_path, "test")


# ------------------------------------------------------------------------------------------------- STL-10


def test_read_stl10_orientation(tmp_path):
    imgs = {"train": random_images(4, 96, 96, 3, seed=1), "test": random_images(3, 96, 96, 3, seed=2)}
    imgs["train"][0] = 0
    imgs["train"][0, 10, 70] = (255, 0, 0)  # row 10, column 70, red
    labels = {"train": np.array([0, 1, 9, 1]), "test": np.array([2, 3, 4])}
    write_stl10(tmp_path, imgs, labels)
    x, y, classes = read_stl10(tmp_path, "train")
    assert x.shape == (4, 96, 96, 3) and np.array_equal(x, imgs["train"]) and np.array_equal(y, labels["train"])
    assert x[0, 10, 70, 0] == 255 and x[0, 70, 10, 0] == 0 and x[0, 10, 70, 1] == 0
    assert classes[0] == "airplane" and classes[9] == "truck"
    x, y, _ = read_stl10(tmp_path / "stl10_binary", "test")
    assert np.array_equal(x, imgs["test"]) and np.array_equal(y, labels["test"])
    b = load_dataset("stl10", tmp_path, val_fraction=0)
    assert b.image_size == (96, 96) and len(b.test) == 3
    data = (tmp_path / "stl10_binary" / "test_X.bin").read_bytes()
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(data[:-5])
    with pytest.raises(DataError, match=r"test_X\.bin"):
        read_stl10(tmp_path, "test")


# -------------------------------------------------------------------------------------------- ImageFolder


def make_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    save_image(root / "train" / "cat" / "a.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))  # first: H5 W7
    save_image(root / "train" / "cat" / "b.png", np.full((5, 7), 100, dtype=np.uint8))  # grey
    save_image(root / "train" / "cat" / "c.jpg", rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))  # resized
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_text("ignored")
    save_image(root / "train" / "dog" / "d.png", np.full((5, 7), 200, dtype=np.uint8))
    save_image(root / "test" / "dog" / "e.png", np.zeros((5, 7), dtype=np.uint8))


def test_image_folder_colour_resize_and_skip(tmp_path):
    make_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 "):
        x, y, classes = read_image_folder(tmp_path, "train")
    assert classes == ["cat", "dog"] and np.array_equal(y, [0, 0, 0, 1])
    assert x.shape == (4, 5, 7, 3) and x.dtype == np.uint8
    assert (x[1] == 100).all() and (x[3] == 200).all()  # grey -> RGB with equal channels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xt, yt, _ = read_image_folder(tmp_path, "test")
    assert xt.shape == (1, 5, 7, 3) and yt.tolist() == [1]
    with pytest.warns(UserWarning, match="skipped"):
        b = load_dataset("imagefolder", tmp_path, val_fraction=0, image_size=4)
    assert b.image_size == (4, 4) and b.in_channels == 3 and len(b.test) == 1


def test_image_folder_all_grey_keeps_one_channel(tmp_path):
    for i, cls in enumerate(["a", "b"]):
        save_image(tmp_path / "train" / cls / "x.png", np.full((4, 4), i * 50, dtype=np.uint8))
        save_image(tmp_path / "test" / cls / "y.png", np.full((6, 6), 9, dtype=np.uint8))
    x, _, _ = read_image_folder(tmp_path, "test")
    assert x.shape == (2, 4, 4, 1) and (x == 9).all()


def test_image_folder_errors(tmp_path):
    make_image_folder(tmp_path)
    (tmp_path / "test" / "bird").mkdir()
    save_image(tmp_path / "test" / "bird" / "f.png", np.zeros((5, 7), dtype=np.uint8))
    with pytest.raises(DataError, match="'bird'"):
        read_image_folder(tmp_path, "test")
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_image_folder(tmp_path, "train")
    with pytest.raises(DataError, match="train/"):
        read_image_folder(tmp_path / "test", "train")
    with pytest.raises(DataError, match="no data root"):
        resolve_root("imagefolder", None)


# ------------------------------------------------------------------------------------- registry and roots


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match="unknown dataset 'mnist'") as err:
        load_dataset("mnist")
    for name in DATASETS:
        assert name in str(err.value)
    assert set(DATASETS) == {"fashion-mnist", "digits", "cifar10", "cifar100", "stl10", "imagefolder"}


def test_missing_root(tmp_path):
    for name in ("fashion-mnist", "cifar10", "stl10", "imagefolder"):
        with pytest.raises(DataError, match="does not exist"):
            load_dataset(name, tmp_path / "nowhere")


def test_resolve_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN2GNN_DATA", str(tmp_path))
    assert resolve_root("cifar10", tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root("cifar10", None) == tmp_path
    (tmp_path / "cifar10").mkdir()
    assert resolve_root("cifar10", None) == tmp_path / "cifar10"
    monkeypatch.setattr(datasets_module, "SYSTEM_FASHION_MNIST", tmp_path / "no-system")
    assert resolve_root("fashion-mnist", None) == tmp_path
    monkeypatch.delenv("CNN2GNN_DATA")
    with pytest.raises(DataError, match="CNN2GNN_DATA"):
        resolve_root("fashion-mnist", None)
    assert resolve_root("stl10", None, download=True).name == "stl10"


# ------------------------------------------------------------------------------------------ Split, loader


def small_split(n: int = 23, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8), torch.arange(n) % 3)


def test_split_subset_and_sorted_by_class():
    s = small_split()
    sub = s.subset(torch.tensor([5, 1]))
    assert len(sub) == 2 and torch.equal(sub.images[0], s.images[5])
    srt = s.sorted_by_class()
    assert len(srt) == len(s) and (srt.labels.diff() >= 0).all()
    assert torch.equal(srt.images[:8], s.images[0::3])  # stable: original order within a class


def collect(it: BatchIterator) -> list:
    return list(it)


def test_batch_iterator_epochs():
    s = small_split()
    mean, std = (0.5,), (0.25,)
    it = BatchIterator(s, 5, mean=mean, std=std, shuffle=True, seed=1)
    assert len(it) == 5
    first = collect(it)
    order = torch.cat([b.index for b in first])
    assert sorted(order.tolist()) == list(range(23)) and [len(b.y) for b in first] == [5, 5, 5, 5, 3]
    for b in first:
        assert b.x.dtype == torch.float32 and b.x.shape[1:] == (1, 4, 4) and b.y.dtype == torch.int64
        assert torch.equal(b.y, s.labels[b.index]) and torch.allclose(b.x, normalize(s.images[b.index], mean, std))
    assert torch.equal(torch.cat([b.index for b in collect(it)]), order)  # same epoch, same order
    it.set_epoch(1)
    assert not torch.equal(torch.cat([b.index for b in collect(it)]), order)
    again = BatchIterator(s, 5, mean=mean, std=std, shuffle=True, seed=1)
    again.set_epoch(1)
    it.set_epoch(1)
    assert torch.equal(torch.cat([b.index for b in again]), torch.cat([b.index for b in it]))

    dropped = BatchIterator(s, 5, mean=mean, std=std, shuffle=True, drop_last=True)
    assert len(dropped) == 4 and [len(b.y) for b in dropped] == [5, 5, 5, 5]
    plain = BatchIterator(s, 10, mean=mean, std=std)
    assert torch.equal(torch.cat([b.index for b in plain]), torch.arange(23)) and len(plain) == 3


def test_batch_iterator_augmentation_is_seeded():
    s = small_split(40)
    kw = {"mean": (0.5,), "std": (0.25,), "shuffle": True, "seed": 2, "augment": Augment(pad=1)}
    a, b = BatchIterator(s, 8, **kw), BatchIterator(s, 8, **kw)
    a.set_epoch(3)
    b.set_epoch(3)
    assert all(torch.equal(p.x, q.x) for p, q in zip(a, b, strict=True))
    b.set_epoch(4)
    assert not all(torch.equal(p.x, q.x) for p, q in zip(a, b, strict=True))


def test_normalize_values():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    y = normalize(x, (0.5, 0.2), (0.5, 0.2))
    assert torch.allclose(y, torch.tensor([[[[-1.0, 1.0]], [[0.0, 1.0]]]]))


def test_augment_shapes_determinism_and_identity():
    x = torch.randint(0, 256, (16, 3, 6, 5), dtype=torch.uint8)
    aug = Augment(pad=2, hflip=True)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    assert torch.equal(Augment(pad=0, hflip=False)(x, torch.Generator()), x)
    xf = x.float()
    assert torch.equal(aug(xf, torch.Generator().manual_seed(0)), out.float())


def test_augment_is_a_shift_or_a_flip_of_each_sample():
    x = torch.randint(1, 256, (32, 2, 5, 6), dtype=torch.uint8)  # no zeros, so padding is visible
    shifted = Augment(pad=2, hflip=False)(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        crops = {
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 5, dx : dx + 6])
        }
        assert crops, f"sample {i} is not a crop of its padded image"
        seen |= crops
    assert len(seen) > 5
    flipped = Augment(pad=0, hflip=True)(x, torch.Generator().manual_seed(0))
    is_flip = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(f or torch.equal(flipped[i], x[i]) for i, f in enumerate(is_flip)) and 0 < sum(is_flip) < len(x)
