"""Behaviour pinned before the architecture redesign of issue 11 (cnn2gnn 0.1, commit f9d2336): the logits of seeded
students and the MLP under each inference policy, read from model folders written by that version
(tests/fixtures/make_v1_models.py), and the metrics of a seeded one-epoch teacher + distill run on digits. These
tests must pass unchanged through any refactoring: a change of behaviour is a change of these numbers.
"""

import json
from pathlib import Path

import pytest
import torch
from helpers import metrics, run_cli
from safetensors.torch import load_file

from cnn2gnn.checkpoint import load_model

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "v1"
PINNED_LOGITS = sorted(k for k in load_file(str(V1 / "logits.safetensors")) if k != "x")


@pytest.mark.parametrize("key", PINNED_LOGITS)
def test_v1_model_folder_gives_pinned_logits(key):
    name, policy = key.split("/")
    pinned = load_file(str(V1 / "logits.safetensors"))
    model, meta = load_model(V1 / name)
    with torch.no_grad():
        logits = model(pinned["x"]) if name == "mlp" else model(pinned["x"], graph=policy)
    torch.testing.assert_close(logits, pinned[key], rtol=1e-5, atol=1e-5)
    assert meta["kind"] == "student" and meta["num_classes"] == 10


@pytest.mark.slow
def test_one_epoch_teacher_and_distill_on_digits_give_pinned_metrics(tmp_path):
    pinned = json.loads((FIXTURES / "pinned_metrics.json").read_text())
    common = ["--data", "digits", "--epochs", "1", "--seed", "0", "--quiet", "--set", "run.threads=1"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    code, _, err = run_cli("teacher", *common, "--arch", "resnet8", "--set", "model.width=4", "--out", teacher)
    assert code == 0, err
    code, _, err = run_cli("distill", *common, "--teacher", teacher, "--hidden", "64", "--out", student)
    assert code == 0, err
    got = {}
    for name, folder in (("teacher", teacher), ("student", student)):
        row = metrics(folder)[0]
        summary = json.loads((folder / "summary.json").read_text())
        got[name] = {
            "metrics": {k: row[k] for k in pinned[name]["metrics"]},
            "summary": {k: summary[k] for k in pinned[name]["summary"]},
        }
    _assert_close(got, pinned)


def _assert_close(got: dict, pinned: dict) -> None:
    """Accuracies exactly, losses to 1e-6 relative (a sum of float32 terms)."""
    for name, parts in pinned.items():
        for part, values in parts.items():
            for key, value in values.items():
                assert got[name][part][key] == pytest.approx(value, rel=1e-6, abs=1e-9), f"{name} {part} {key}"
