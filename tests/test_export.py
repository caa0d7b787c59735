"""Tests of `cnn2gnn export` (issue 13): the demo-sized student (hidden 512, a bank of 1024 anchors) exported to
ONNX and to a torch.export program gives the model's classes and logits on real images for batch sizes 1 and 64,
with the input normalisation and the anchor bank inside; what cannot be exported says why in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ONE_THREAD, run_cli

from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """The default student (hidden 512, 1024 anchors, k 10) after one epoch of CE on digits."""
    out = tmp_path_factory.mktemp("export") / "student"
    code, _, err = run_cli("distill", "--data", "digits", "--epochs", 1, *ONE_THREAD, "--quiet", "--out", out)
    assert code == 0, err
    return out


def _images(n: int) -> np.ndarray:
    """n real digits test images as float pixels in [0, 1], shape (n, 1, 8, 8)."""
    return (load_dataset("digits").test.images[:n].float() / 255.0).numpy()


def _reference(folder: Path, x: np.ndarray) -> np.ndarray:
    """The model folder's logits under its default (anchors) policy, normalised as it was trained."""
    model, meta = load_model(folder)
    mean, std = torch.tensor(meta["mean"]).view(1, -1, 1, 1), torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((torch.from_numpy(x) - mean) / std, graph="anchors").numpy()


@pytest.mark.slow
def test_onnx_runtime_gives_the_models_classes_and_logits(student, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "student.onnx"
    code, text, err = run_cli("export", "--model", student, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert str(out) in text
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["classes"] == [str(c) for c in range(10)] and info["policy"] == "anchors"
    assert info["input"]["shape"] == ["N", 1, 8, 8] and info["input"]["range"] == [0.0, 1.0]
    session = ort.InferenceSession(str(out))
    for n in (1, 64):
        x = _images(n)
        logits = session.run(None, {"images": x})[0]
        expected = _reference(student, x)
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
        assert (logits.argmax(1) == expected.argmax(1)).all()


@pytest.mark.slow
def test_torch_export_program_gives_the_same_logits_for_any_batch(student, tmp_path):
    out = tmp_path / "student.pt2"
    code, _, err = run_cli("export", "--model", student, "--format", "torch-export", "--out", out)
    assert code == 0, err
    program = torch.export.load(str(out)).module()
    for n in (1, 64, 5):
        x = _images(n)
        with torch.no_grad():
            logits = program(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, _reference(student, x), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_student_without_a_bank_cannot_be_exported(tmp_path):
    out = tmp_path / "s"
    code, _, err = run_cli("distill", "--data", "digits", "--epochs", 1, "--hidden", 16, "--set", "bank.size=0",
                           *ONE_THREAD, "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    code, text, err = run_cli("export", "--model", out, "--out", tmp_path / "s.onnx")
    assert code == 2 and text == "" and len(err.splitlines()) == 1, err
    assert "depend on the other images of a batch" in err and not (tmp_path / "s.onnx").exists()
