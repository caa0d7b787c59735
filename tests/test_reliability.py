"""Reliability of the student's command line: a killed ``distill`` resumes to the weights of an uninterrupted run,
runs and evaluations repeat exactly, user mistakes are one line and exit code 2 (a traceback only with --debug),
a diverging loss stops with advice instead of a crash, and ``predict`` converts images of another size or mode.

Runs are tiny (digits, a resnet8 teacher of width 4, a student of width 64, one CPU thread).
"""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    ENV,
    ONE_THREAD,
    assert_same_weights,
    kill_after_first_checkpoint,
    latest_epoch,
    metrics,
    run_cli,
    without_timing,
)
from PIL import Image

import cnn2gnn.student
from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import load_dataset, normalize
from cnn2gnn.errors import TrainingDivergedError, UserError
from cnn2gnn.predict import load_images

EPOCHS = 3


def distill_args(teacher: Path, out: Path) -> list[str]:
    """Three epochs of anchors training at batch size 8: about 0.3 s an epoch, long enough to be killed in one."""
    return [
        "distill", "--data", "digits", "--teacher", str(teacher), "--epochs", str(EPOCHS), "--batch-size", "8",
        "--set", "model.hidden=64", "--set", "bank.size=100", "--set", "distill.train_graph=anchors",
        *ONE_THREAD, "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A teacher, the uninterrupted student run (with an anchor bank) and a student without a bank."""
    root = tmp_path_factory.mktemp("reliability")
    teacher = root / "teacher"
    code, _, err = run_cli(
        "teacher", "--data", "digits", "--arch", "resnet8", "--epochs", 1, "--set", "model.width=4", *ONE_THREAD,
        "--out", teacher,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(*distill_args(teacher, root / "straight"))
    assert code == 0, err
    code, _, err = run_cli(
        "distill", "--data", "digits", "--epochs", 1, "--set", "model.hidden=32", "--set", "bank.size=0",
        *ONE_THREAD, "--out", root / "no-bank",
    )  # fmt: skip
    assert code == 0, err
    return {"root": root, "teacher": teacher, "student": root / "straight", "no_bank": root / "no-bank"}


# ------------------------------------------------------------------------------------------- resume and repeat


@pytest.mark.slow
def test_killed_distill_resumes_to_the_same_weights(runs, tmp_path):
    out = tmp_path / "killed"
    assert kill_after_first_checkpoint(distill_args(runs["teacher"], out), out) == -signal.SIGKILL
    done = latest_epoch(out)
    assert 0 <= done < EPOCHS - 1, f"killed after epoch {done}: nothing left to resume"
    assert not (out / "model.safetensors").exists()

    code, _, err = run_cli(*distill_args(runs["teacher"], out), "--resume")
    assert code == 0, err
    assert_same_weights(runs["student"], out)
    assert [r["epoch"] for r in metrics(out)] == list(range(EPOCHS))
    assert without_timing(metrics(out)) == without_timing(metrics(runs["student"]))
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (out, runs["student"]))
    assert {k: v for k, v in summary.items() if "_acc" in k} == {k: v for k, v in expected.items() if "_acc" in k}


@pytest.mark.slow
def test_same_distill_command_twice_gives_the_same_run(runs, tmp_path):
    out = tmp_path / "again"
    code, _, err = run_cli(*distill_args(runs["teacher"], out))
    assert code == 0, err
    assert without_timing(metrics(out)) == without_timing(metrics(runs["student"]))
    assert_same_weights(runs["student"], out)


@pytest.mark.slow
def test_evaluate_anchors_repeats_and_ignores_the_batch_size(runs):
    results = []
    for batch_size in (64, 64, 1):
        code, out, err = run_cli(
            "evaluate", "--model", runs["student"], "--graph", "anchors", "--batch-size", batch_size, "--json"
        )
        assert code == 0, err
        results.append(json.loads(out))
    assert results[0]["accs"] == results[1]["accs"] == results[2]["accs"]
    assert results[0]["std"] == 0.0 and results[0]["mean"] > 0.5


# ------------------------------------------------------------------------------------------- user errors


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """An ImageFolder of two classes of 5x5 RGB images: not what a digits model was trained on."""
    root = tmp_path_factory.mktemp("imagefolder")
    for split, n in (("train", 2), ("test", 1)):
        for c, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (5, 5), colour).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    (root / "notanimage.txt").write_text("hello\n")
    return {"text": root / "notanimage.txt", "missing": root / "missing.png", "nothing": root / "no-such-folder"}


USER_ERRORS = [
    # (args, fragments of the one-line message); {name} is filled from the fixtures
    (["distill", "--data", "digits", "--set", "model.k=0", "--out", "{tmp}"], ["k=0"]),
    (["distill", "--data", "digits", "--set", "model.aggregate=bogus", "--out", "{tmp}"], ["bogus", "aggregate"]),
    (["distill", "--data", "digits", "--teacher", "{nothing}", "--out", "{tmp}"], ["{nothing}", "no such"]),
    (["evaluate", "--model", "{nothing}"], ["{nothing}", "no such"]),
    (
        ["evaluate", "--model", "{teacher}", "--data", "imagefolder", "--data-root", "{other}"],
        ["10 classes", "2 classes"],
    ),
    (["predict", "--model", "{student}", "{text}"], ["{text}", "not a readable image"]),
    (["predict", "--model", "{student}", "{missing}"], ["{missing}", "no such image"]),
    (["evaluate", "--model", "{no_bank}", "--graph", "anchors"], ["no anchor bank", "--graph batch"]),
]


def _fill(items, runs, other_data, files, tmp_path):
    names = {**{k: str(v) for k, v in runs.items()}, **{k: str(v) for k, v in files.items()}}
    names.update(other=str(other_data), tmp=str(tmp_path / "out"))
    return [item.format(**names) for item in items]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragments"),
    USER_ERRORS,
    ids=["k=0", "bogus-aggregate", "no-teacher", "no-model", "other-data", "not-an-image", "no-image", "no-bank"],
)
def test_user_errors_are_one_line_and_exit_2(runs, other_data, files, tmp_path, args, fragments):
    args = _fill(args, runs, other_data, files, tmp_path)
    fragments = _fill(fragments, runs, other_data, files, tmp_path)
    if args[0] == "distill":
        args += ["--epochs", "1", *ONE_THREAD]
    code, out, err = run_cli(*args)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnn2gnn {args[0]}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err

    with pytest.raises(UserError):  # --debug lets the exception (and its traceback) through
        run_cli(*args, "--debug")


@pytest.mark.slow
def test_broken_and_oversized_images_are_user_errors(runs, tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (20, 20), (9, 9, 9)).save(big)
    truncated = tmp_path / "truncated.png"
    Image.effect_noise((32, 32), 64).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # big.png (400 pixels) now looks like a decompression bomb
    for path in (big, truncated):
        code, out, err = run_cli("predict", "--model", runs["student"], path)
        assert code == 2 and out == "", err
        assert err.startswith(f"cnn2gnn predict: error: {path}: not a readable image") and len(err.splitlines()) == 1


@pytest.mark.slow
def test_debug_shows_the_traceback_as_a_subprocess(runs, files):
    args = ["predict", "--model", str(runs["student"]), str(files["missing"])]
    proc = subprocess.run([sys.executable, "-m", "cnn2gnn", *args, "--debug"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr and str(files["missing"]) in proc.stderr


# ------------------------------------------------------------------------------------------- divergence


def assert_diverged(code: int, out: str, err: str, command: str, epoch: str = r"\d+") -> None:
    assert code == 2, err
    assert out == "" and "Traceback" not in err and "Warning" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnn2gnn {command}: error: training diverged"), err
    assert re.search(rf"at epoch {epoch}/", lines[0]), err
    assert "lower the learning rate" in lines[0], err


@pytest.mark.slow
def test_a_learning_rate_far_too_high_stops_with_advice(tmp_path):
    code, out, err = run_cli(
        "distill", "--data", "digits", "--lr", "1e12", "--epochs", 2, "--set", "model.hidden=32",
        "--set", "bank.size=0", *ONE_THREAD, "--out", tmp_path / "s",
    )  # fmt: skip
    assert_diverged(code, out, err, "distill")
    code, out, err = run_cli(
        "teacher", "--data", "digits", "--arch", "resnet8", "--lr", "1e12", "--epochs", 2, "--limit-train", 300,
        "--set", "model.width=4", *ONE_THREAD, "--out", tmp_path / "t",
    )  # fmt: skip
    assert_diverged(code, out, err, "teacher")


@pytest.mark.slow
def test_a_nan_in_the_second_epoch_names_it_and_keeps_the_first(tmp_path, monkeypatch):
    real = cnn2gnn.student.distillation_loss
    calls = []

    def nan_from_the_second_epoch(logits, *args, **kwargs):
        calls.append(1)
        terms = real(logits, *args, **kwargs)
        if len(calls) > 4:  # 4 steps an epoch: 300 images, 30 held out, batch size 64, ragged batch dropped
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(cnn2gnn.student, "distillation_loss", nan_from_the_second_epoch)
    args = [
        "distill", "--data", "digits", "--limit-train", 300, "--batch-size", 64, "--epochs", 3,
        "--set", "model.hidden=32", "--set", "bank.size=0", *ONE_THREAD, "--out", tmp_path / "s",
    ]  # fmt: skip
    code, out, err = run_cli(*args)
    assert_diverged(code, out, err, "distill", epoch="2")
    assert latest_epoch(tmp_path / "s") == 0  # the finished epoch is kept
    assert [r["epoch"] for r in metrics(tmp_path / "s")] == [0]
    with pytest.raises(TrainingDivergedError):
        run_cli(*args, "--overwrite", "--debug")
    assert issubclass(TrainingDivergedError, UserError)


@pytest.mark.slow
@pytest.mark.parametrize("train_graph", ["batch", "anchors"])
def test_a_bank_smaller_than_k_plus_2(tmp_path, train_graph):
    code, out, err = run_cli(
        "distill", "--data", "digits", "--epochs", 2, "--set", "model.hidden=32", "--set", "bank.size=5",
        "--set", f"distill.train_graph={train_graph}", *ONE_THREAD, "--out", tmp_path / "s",
    )  # fmt: skip
    if code == 2:  # refusing the bank is fine, as long as the message names it
        assert "bank.size" in err and "learning rate" not in err, err
        return
    assert code == 0, err
    model, meta = load_model(tmp_path / "s")
    bundle = load_dataset("digits", limit_test=50)
    with torch.no_grad():
        logits = model(normalize(bundle.test.images, meta["mean"], meta["std"]), graph="anchors")
    assert torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------- image conversion


@pytest.mark.slow
def test_predict_converts_colour_mode_and_size(runs, tmp_path):
    digit = load_dataset("digits").test.images[0, 0].numpy()  # grey 8x8, what the model was trained on
    grey = Image.fromarray(digit, "L")
    paths = {
        "grey.png": grey,
        "rgb.png": grey.convert("RGB"),  # same size, three equal channels: converts back exactly
        "rgba.png": grey.convert("RGBA"),
        "palette.png": grey.convert("P"),
        "big-rgb.png": grey.resize((20, 20), Image.Resampling.BILINEAR).convert("RGB"),
        "wide.jpg": grey.resize((24, 12)).convert("RGB"),
    }
    for name, img in paths.items():
        img.save(tmp_path / name)
    files = [tmp_path / name for name in paths]
    meta = json.loads((runs["student"] / "meta.json").read_text())
    x = load_images(files, meta)
    assert x.shape == (len(files), 1, 8, 8) and torch.isfinite(x).all()
    torch.testing.assert_close(x[1], x[0], rtol=0, atol=0)

    code, out, err = run_cli("predict", "--model", runs["student"], *files)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(files)
    rows = [line.split("\t") for line in lines]
    for path, (file, cls, prob) in zip(files, rows, strict=True):
        assert file == str(path) and cls in meta["classes"] and 0.0 <= float(prob) <= 1.0
    assert rows[0][1:] == rows[1][1:] == rows[2][1:]  # grey, RGB and RGBA copies of one image agree exactly
