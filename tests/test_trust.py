"""Tests of issue 12, "no silently wrong results, no lost work, honest model selection": teacher logits cached under a
hash of the teacher, run folders never overwritten unasked, the saved model chosen on validation (test measured once),
paths that work from any folder, and devices that are not there as one-line user errors. (Untrusted CIFAR pickles and
predict's unreadable files: tests/test_untrusted_inputs.py.)
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ONE_THREAD, metrics, run_cli
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from cnn2gnn.checkpoint import load_model, save_model_dir, weights_sha256
from cnn2gnn.data import load_dataset
from cnn2gnn.models.cnn import FrozenTeacher
from cnn2gnn.run import make_batches
from cnn2gnn.student import teacher_logits
from cnn2gnn.train import FitResult, fit, make_optimizer, make_scheduler, predict_logits

TEACHER = ["teacher", "--data", "digits", "--arch", "resnet8", "--set", "model.width=4", *ONE_THREAD]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "teacher"
    code, _, err = run_cli(*TEACHER, "--epochs", 2, "--out", out)
    assert code == 0, err
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("model.safetensors", "meta.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- 1. stale teacher logits


def test_a_teacher_retrained_into_its_folder_is_never_served_its_old_logits(teacher, tmp_path):
    # before the fix the cache key held only the data: the second call returned the first teacher's logits
    folder = _copy(teacher, tmp_path / "t")
    bundle = load_dataset("digits")
    first = teacher_logits(FrozenTeacher(load_model(folder)[0]), str(folder), bundle, 256, torch.device("cpu"))
    model, meta = load_model(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    save_model_dir(folder, model, {k: v for k, v in meta.items() if k != "format_version"})  # "retrained"
    new = FrozenTeacher(load_model(folder)[0])
    cached = teacher_logits(new, str(folder), bundle, 256, torch.device("cpu"))
    live = predict_logits(new, make_batches(bundle, bundle.train, 256, "cpu", train=False, seed=0))
    assert not torch.allclose(first, live)
    torch.testing.assert_close(cached, live)
    assert len(list((folder / "cache").iterdir())) == 2  # one entry per teacher


@pytest.mark.slow
def test_a_student_records_the_hash_of_its_teacher(teacher, tmp_path):
    out = tmp_path / "s"
    code, _, err = run_cli("distill", "--data", "digits", "--teacher", teacher, "--epochs", 1, "--hidden", 16,
                           "--set", "bank.size=50", *ONE_THREAD, "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert manifest["teacher"]["sha256"] == weights_sha256(teacher) == meta["distill"]["teacher_sha256"]


# ------------------------------------------------------------------------------------------- 2. overwritten runs


@pytest.mark.slow
@pytest.mark.parametrize("command", ["teacher", "distill"])
def test_a_folder_holding_a_run_is_refused_untouched_unless_resume_or_overwrite(teacher, tmp_path, command):
    # before the fix `distill --out TEACHER` turned a teacher folder into a student folder without a word
    folder = _copy(teacher, tmp_path / "t")
    (folder / "summary.json").write_text("{}")
    before = _snapshot(folder)
    args = [*TEACHER, "--epochs", 1] if command == "teacher" else ["distill", "--data", "digits", *ONE_THREAD]
    code, out, err = run_cli(*args, "--quiet", "--out", folder)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(folder) == before
    code, _, err = run_cli(*args, "--quiet", "--resume", "--overwrite", "--out", folder)
    assert code == 2 and "exclude each other" in err and _snapshot(folder) == before
    (folder / "notes.txt").write_text("mine")
    code, _, err = run_cli(*args, "--epochs", 1, "--quiet", "--overwrite", "--out", folder)
    assert code == 0, err
    assert json.loads((folder / "meta.json").read_text())["kind"] == command.replace("distill", "student")
    assert (folder / "notes.txt").read_text() == "mine"  # --overwrite removes the run's files, nothing else


# ------------------------------------------------------------------------------------------- 3. model selection


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


def _fit(tmp_path: Path, keep: str, val: list[float]) -> tuple[FitResult, list[dict], nn.Module]:
    """Three epochs of a tiny model whose 'validation accuracy' follows ``val``; the weights of each epoch recorded."""
    from types import SimpleNamespace

    from cnn2gnn.config import OptimConfig
    from cnn2gnn.data import Split

    torch.manual_seed(0)
    model = _Net()
    split = Split(torch.randint(0, 255, (32, 1, 2, 2), dtype=torch.uint8), torch.randint(0, 2, (32,)))
    batches = make_batches(SimpleNamespace(mean=(0.5,), std=(0.25,)), split, 8, "cpu", train=True, seed=0)
    weights: list[dict] = []

    def step(batch):
        return {"loss": nn.functional.cross_entropy(model(batch.x.flatten(1)), batch.y)}

    def evaluate():
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_acc": val[len(weights) - 1]}

    optim = OptimConfig(optimizer="sgd", lr=0.5, epochs=3)
    optimizer = make_optimizer(model.parameters(), optim)
    result = fit(model, step, batches, evaluate, optimizer, make_scheduler(optimizer, optim, 3 * len(batches)),
                 epochs=3, run_dir=tmp_path, progress=False, keep=keep)  # fmt: skip
    return result, weights, model


@pytest.mark.parametrize(("keep", "saved"), [("best", 0), ("last", 2)])
def test_the_saved_weights_are_those_of_the_best_validation_epoch(tmp_path, keep, saved):
    # before the fix the model held the last epoch's weights whatever the validation said
    result, weights, model = _fit(tmp_path, keep, [0.9, 0.5, 0.7])
    assert (result.best_epoch, result.saved_epoch) == (0, saved)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[saved][key]), key
    assert not torch.equal(weights[0]["lin.weight"], weights[2]["lin.weight"])


@pytest.mark.slow
def test_logs_validation_only_tests_the_saved_model_once_and_cleans_up(teacher, tmp_path):
    rows = metrics(teacher)
    assert rows and all("val_acc" in r and not any(k.startswith("test") for k in r) for r in rows)
    summary = json.loads((teacher / "summary.json").read_text())
    best = max(rows, key=lambda r: r["val_acc"])
    assert summary["saved_epoch"] == summary["best_epoch"] == best["epoch"] and summary["keep"] == "best"
    assert summary["val_acc"] == best["val_acc"] and 0 <= summary["test_acc"] <= 1
    assert not (teacher / "ckpt").exists()
    # evaluate --split val on the saved model gives the validation accuracy logged for that epoch
    code, out, err = run_cli("evaluate", "--model", teacher, "--split", "val", "--seeds", 1, "--json")
    assert code == 0, err
    assert json.loads(out)["mean"] == best["val_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("train_graph", ["batch", "anchors"])
def test_evaluate_val_repeats_the_logged_validation_of_a_student(teacher, tmp_path, train_graph):
    out = tmp_path / "s"
    code, _, err = run_cli("distill", "--data", "digits", "--teacher", teacher, "--epochs", 3, "--hidden", 16,
                           "--set", "bank.size=60", "--set", f"distill.train_graph={train_graph}", *ONE_THREAD,
                           "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    logged = next(r for r in metrics(out) if r["epoch"] == summary["saved_epoch"])
    how = summary["val_logged"]
    code, text, err = run_cli("evaluate", "--model", out, "--split", "val", "--graph", how["policy"], "--batch-size",
                              how["batch_size"], "--seed", how["shuffle_seed"], "--seeds", 1, "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(text)["mean"] == logged["val_acc"] == summary[f"val_acc_{train_graph}"]


# ------------------------------------------------------------------------------------------- 4. paths


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(("circle", "square")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (8, 8), dtype=np.uint8) + 120 * c
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")


@pytest.mark.slow
def test_a_run_folder_works_from_any_working_directory(tmp_path, monkeypatch):
    # before the fix config.yaml held the relative data root: --config from elsewhere failed, as did evaluate
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    _image_folder(work / "data")
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    args = ["--data", "imagefolder", "--data-root", "data", "--arch", "resnet8", "--set", "model.width=4"]
    code, _, err = run_cli("teacher", *args, "--epochs", 1, *ONE_THREAD, "--quiet", "--out", "runs/t")
    assert code == 0, err
    config = (work / "runs/t/config.yaml").read_text()
    assert f"root: {work / 'data'}" in config
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli("teacher", "--config", work / "runs/t/config.yaml", "--quiet", "--out", "t2")
    assert code == 0, err
    code, out, err = run_cli("evaluate", "--model", work / "runs/t", "--json")  # no --data-root: the model's own
    assert code == 0, err
    assert json.loads(out)["n"] == 8
    code, _, err = run_cli("distill", "--data", "imagefolder", "--data-root", work / "data", "--teacher",
                           work / "runs/t", "--epochs", 1, "--hidden", 8, "--set", "bank.size=8", *ONE_THREAD,
                           "--quiet", "--out", "s")  # fmt: skip
    assert code == 0, err
    assert json.loads((elsewhere / "s/meta.json").read_text())["distill"]["teacher"] == str(work / "runs/t")
    assert os.path.isabs(json.loads((elsewhere / "s/meta.json").read_text())["data_root"])


# ------------------------------------------------------------------------------------------- 7. devices


@pytest.mark.parametrize("command", ["teacher", "evaluate"])
def test_a_device_that_is_not_here_is_a_one_line_user_error(teacher, tmp_path, command):
    # before the fix: "internal error: RuntimeError" and exit 1
    device = "cuda:7" if torch.cuda.device_count() < 8 else "mps"
    for name in ("mps", device):
        if name == "mps" and torch.backends.mps.is_available():
            continue
        args = [*TEACHER, "--out", tmp_path / "t"] if command == "teacher" else ["evaluate", "--model", teacher]
        code, out, err = run_cli(*args, "--device", name)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert f"device '{name}' is not available here (available: cpu" in err
    assert not (tmp_path / "t").exists()


def test_the_teacher_hash_changes_with_the_weights(teacher, tmp_path):
    folder = _copy(teacher, tmp_path / "t")
    before = weights_sha256(folder)
    state = load_file(str(folder / "model.safetensors"))
    assert before == weights_sha256(teacher) and len(before) == 16 and state
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-1] + b"\0")
    assert weights_sha256(folder) != before


def test_bench_rerun_without_data_root_reads_the_root_it_used_before(tmp_path):
    from cnn2gnn.bench.core import previous_root

    assert previous_root(tmp_path, "imagefolder") is None
    (tmp_path / "results.json").write_text(json.dumps({"data": {"name": "imagefolder", "root": "/data/pets"}}))
    assert previous_root(tmp_path, "imagefolder") == "/data/pets"
    assert previous_root(tmp_path, "cifar10") is None  # another dataset: its own default
