"""Inputs we do not control: a CIFAR pickle in a data root must not run code (only arrays, lists, strings and numbers
are unpickled, for every pickle protocol), and ``predict`` over many files skips the unreadable ones with a warning
instead of predicting nothing.
"""

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import ONE_THREAD, run_cli
from PIL import Image

from cnn2gnn.data import load_dataset, read_cifar
from cnn2gnn.errors import DataError

# ---------------------------------------------------------------------------------------------- CIFAR pickles

PROTOCOLS = [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL]  # 2: the real files (Python 2 cPickle)
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar10(parent: Path, protocol: int, replace: dict[str, object] | None = None) -> Path:
    """A CIFAR-10 python folder (4 images a batch) whose files are pickles of ``protocol``; ``replace`` swaps the
    content of named files for other objects."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    contents: dict[str, object] = {
        # a numpy scalar and a numpy array of names, as a re-saved meta file might hold
        "batches.meta": {b"label_names": np.array([f"c{i}".encode() for i in range(10)]), b"num_vis": np.int64(3072)},
    }
    for i, name in enumerate(CIFAR10_FILES):
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        contents[name] = {b"data": data, b"labels": [i, i + 1, i + 2, i + 3], b"batch_label": f"batch {i}".encode()}
    contents.update(replace or {})
    for name, obj in contents.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_real_cifar_pickles_load_for_every_protocol(tmp_path, protocol):
    write_cifar10(tmp_path, protocol)
    x, y, classes = read_cifar(tmp_path, "train")
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == [i + j for i in range(5) for j in range(4)]
    assert classes == [f"c{i}" for i in range(10)]
    assert load_dataset("cifar10", tmp_path, val_fraction=0).num_classes == 10


def test_cifar_pickles_naming_numpy_1_modules_load(tmp_path):
    """The real files were written by numpy 1, which names ``numpy.core.multiarray._reconstruct``."""
    folder = write_cifar10(tmp_path, 2)
    for path in folder.iterdir():  # protocol 2 names globals as "module\nname\n" text, so the edit is safe
        data = path.read_bytes()
        path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
        assert b"numpy._core" in data and b"numpy._core" not in path.read_bytes()
    x, y, _ = read_cifar(tmp_path, "test")
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [5, 6, 7, 8]


class Payload:
    """Unpickling this calls ``fn(*args)``: what a booby-trapped file in a data root would do."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(target: Path) -> dict[str, Payload]:
    return {
        "open": Payload(open, str(target), "w"),
        "path-touch": Payload(Path.touch, target),
        "os-system": Payload(os.system, f"touch {target}"),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["open", "path-touch", "os-system"])
@pytest.mark.parametrize("where", ["batches.meta", "data_batch_3"])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, protocol, kind, where):
    target = tmp_path / "pwned"
    payload = payloads(target)[kind]
    obj = {b"label_names": payload} if where == "batches.meta" else {b"data": payload, b"labels": [0]}
    folder = write_cifar10(tmp_path / "data", protocol, replace={where: obj})
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked once we know no code ran
        load_dataset("cifar10", tmp_path / "data")
    assert not target.exists(), f"unpickling {where} ran code (then: {info.value!r})"
    message = str(info.value)
    assert isinstance(info.value, DataError), repr(info.value)
    assert message.startswith(f"{folder / where}: refused to load '") and len(message.splitlines()) == 1, message
    assert "a CIFAR file holds only arrays, lists and strings" in message


def test_cifar_pickle_refuses_globals_even_inside_arrays(tmp_path):
    """An object array may hold anything; its elements go through the same filter."""
    target = tmp_path / "pwned"
    evil = np.array([Payload(open, str(target), "w")], dtype=object)
    write_cifar10(tmp_path / "data", 2, replace={"test_batch": {b"data": evil, b"labels": [0]}})
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked once we know no code ran
        read_cifar(tmp_path / "data", "test")
    assert not target.exists(), f"unpickling an object array ran code (then: {info.value!r})"
    assert isinstance(info.value, DataError), repr(info.value)
    assert re.search(r"test_batch: refused to load '(io|builtins)\.open'", str(info.value)), info.value


# ---------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A resnet8 of width 4 trained one epoch on digits (a few seconds)."""
    out = tmp_path_factory.mktemp("untrusted") / "teacher"
    code, _, err = run_cli(
        "teacher", "--data", "digits", "--arch", "resnet8", "--epochs", 1, "--set", "model.width=4", *ONE_THREAD,
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    digits = load_dataset("digits", limit_test=20).test.images
    paths = {name: tmp_path / name for name in ("a.png", "broken.png", "c.png", "missing.png", "truncated.png")}
    Image.fromarray(digits[0, 0].numpy(), "L").save(paths["a.png"])
    Image.fromarray(digits[1, 0].numpy(), "L").save(paths["c.png"])
    paths["broken.png"].write_text("not an image\n")
    paths["truncated.png"].write_bytes(paths["a.png"].read_bytes()[:20])
    return paths


@pytest.mark.slow
def test_predict_skips_unreadable_files_and_predicts_the_rest(teacher, images):
    files = [images[n] for n in ("a.png", "broken.png", "c.png", "missing.png", "truncated.png")]
    code, out, err = run_cli("predict", "--model", teacher, *files)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == [str(images["a.png"]), str(images["c.png"])]
    assert all(r[1] in [str(c) for c in range(10)] and 0.0 <= float(r[2]) <= 1.0 for r in rows)
    warnings = err.splitlines()
    assert len(warnings) == 3, err
    assert warnings[0].startswith(f"cnn2gnn predict: warning: {images['broken.png']}: not a readable image (")
    assert warnings[1] == f"cnn2gnn predict: warning: {images['missing.png']}: no such image file"
    assert warnings[2].startswith(f"cnn2gnn predict: warning: {images['truncated.png']}: not a readable image (")
    assert run_cli("predict", "--model", teacher, images["a.png"], images["c.png"]) == (0, out, "")  # as if alone

    code, out, err = run_cli("predict", "--model", teacher, "--json", *files)
    assert code == 0, err
    assert [r["path"] for r in json.loads(out)] == [str(images["a.png"]), str(images["c.png"])]
    assert len(err.splitlines()) == 3


@pytest.mark.slow
def test_predict_with_no_readable_file_is_one_error_line(teacher, images):
    code, out, err = run_cli("predict", "--model", teacher, images["broken.png"], images["missing.png"])
    assert code == 2 and out == "", err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnn2gnn predict: error: "), err
    assert str(images["broken.png"]) in lines[0] and "warning" not in err
