"""Tests of the command line: help, a one-epoch teacher run on digits and the folder it writes, re-running from the
written config.yaml, and user mistakes as exit code 2 with one line on stderr (a traceback only with --debug).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cnn2gnn import cli
from cnn2gnn.checkpoint import load_model
from cnn2gnn.errors import ConfigError, DataError, UserError

ONE_THREAD = ["--set", "run.threads=1"]
TEACHER_ARGS = ["teacher", "--data", "digits", "--arch", "resnet8", "--epochs", "1", "--quiet", *ONE_THREAD]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_module(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnn2gnn", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120
    )


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnn2gnn teacher: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


# ------------------------------------------------------------------------------------------- help


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("teacher", "distill", "evaluate", "predict"):
        assert command in out


def test_teacher_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["teacher", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--arch", "--epochs", "--out", "--resume", "--config", "--set", "--debug"):
        assert flag in out
    assert "resnet152" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "teacher" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("cnn2gnn ")


@pytest.mark.slow
def test_help_as_a_subprocess():
    for args in (["--help"], ["teacher", "--help"]):
        proc = run_module(*args)
        assert proc.returncode == 0, proc.stderr
        assert "usage: cnn2gnn" in proc.stdout


# ------------------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """One epoch of resnet8 on digits, run as ``python -m cnn2gnn`` in a subprocess."""
    out = tmp_path_factory.mktemp("cli") / "teacher"
    proc = run_module(*TEACHER_ARGS, "--out", str(out))
    return out, proc


@pytest.mark.slow
def test_teacher_run_exits_0_and_prints_accuracy(teacher_run):
    out, proc = teacher_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    match = re.search(r"test (\d\.\d{4})", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) == pytest.approx(summary["test_acc"], abs=5e-5)
    assert proc.stdout.startswith("teacher resnet8 on digits:")
    assert str(out) in proc.stdout


@pytest.mark.slow
def test_teacher_run_folder(teacher_run):
    out, proc = teacher_run
    assert proc.returncode == 0, proc.stderr
    for name in ("config.yaml", "metrics.jsonl", "manifest.json", "model.safetensors", "meta.json"):
        assert (out / name).is_file(), name

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["epoch"] == 0
    for key in ("val_acc", "train_loss", "lr"):
        assert key in rows[0]
    assert "test_acc" not in rows[0]  # the test split is for the saved model, once (summary.json)
    assert 0.0 <= rows[0]["val_acc"] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["saved_epoch"] == 0 and summary["keep"] == "best"
    assert not (out / "ckpt").exists()  # removed when the run finished

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0
    for key in ("cnn2gnn", "torch", "torchvision", "numpy", "python"):
        assert isinstance(manifest[key], str) and manifest[key], key
    assert manifest["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["data"]["fingerprint"])
    assert manifest["data"]["name"] == "digits"

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"]["name"] == "digits" and config["model"]["arch"] == "resnet8"
    assert config["optim"]["epochs"] == 1 and config["run"]["threads"] == 1

    meta = json.loads((out / "meta.json").read_text())
    assert meta["fingerprint"] == manifest["data"]["fingerprint"]
    model, meta = load_model(out)
    assert meta["kind"] == "teacher" and meta["num_classes"] == 10
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_rerun_from_written_config(teacher_run, tmp_path, capsys):
    out, proc = teacher_run
    assert proc.returncode == 0, proc.stderr
    again = tmp_path / "again"
    code, stdout, err = run_main(capsys, "teacher", "--config", str(out / "config.yaml"), "--out", str(again))
    assert code == 0, err
    assert "teacher resnet8 on digits:" in stdout and "test " in stdout
    assert (again / "config.yaml").read_text() == (out / "config.yaml").read_text()
    # same config, same seed, same thread count: the same numbers, in-process or not
    first = json.loads((out / "metrics.jsonl").read_text())
    second = json.loads((again / "metrics.jsonl").read_text())
    for key in ("train_loss", "val_acc"):
        assert first[key] == second[key], key
    first, second = (json.loads((d / "summary.json").read_text()) for d in (out, again))
    assert first["test_acc"] == second["test_acc"]


# ------------------------------------------------------------------------------------------- user errors


@pytest.fixture
def empty_dir(tmp_path):
    path = tmp_path / "empty"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "nope"], "nope"),
        (["--data", "digits", "--arch", "resnet999"], "resnet999"),
        (["--data", "imagefolder", "--data-root", "{empty}"], "train"),
        (["--data", "fashion-mnist", "--data-root", "{empty}"], "{empty}"),
        (["--data", "digits", "--set", "nope.key=1"], "nope"),
        (["--data", "digits", "--set", "optim.epochs=abc"], "optim.epochs"),
        (["--data", "digits", "--set", "optim.lr"], "key=value"),
        (["--data", "digits", "--device", "tpu"], "tpu"),
        (["--data", "digits", "--set", "optim.optimizer=lbfgs", "--epochs", "1"], "lbfgs"),
        (["--data", "digits", "--limit-train", "0"], "limit_train"),
    ],
)
def test_user_errors(capsys, tmp_path, empty_dir, args, fragment):
    args = [a.format(empty=empty_dir) for a in args]
    code, out, err = run_main(capsys, "teacher", *args, "--out", str(tmp_path / "out"), "--quiet", *ONE_THREAD)
    assert_user_error(code, out, err, fragment.format(empty=empty_dir))


def test_missing_config_file(capsys, tmp_path):
    code, out, err = run_main(capsys, "teacher", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path))
    assert_user_error(code, out, err, "none.yaml")


def test_binary_config_file(capsys, tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(bytes(range(256)))
    code, out, err = run_main(capsys, "teacher", "--config", str(path), "--out", str(tmp_path / "out"))
    assert_user_error(code, out, err, "model.yaml")


def test_flag_values_are_not_reinterpreted(capsys, tmp_path, monkeypatch):
    # a folder called 2024 stays a path (not the integer 2024), --lr 1e-5 is a float: the error is the data's
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").mkdir()
    args = ["teacher", "--data", "imagefolder", "--data-root", "2024", "--lr", "1e-5", "--out", "out"]
    code, out, err = run_main(capsys, *args)
    assert_user_error(code, out, err, "2024", "train/")


def test_debug_raises_the_error(tmp_path):
    with pytest.raises(DataError, match="nope"):
        cli.main(["teacher", "--data", "nope", "--out", str(tmp_path), "--debug"])
    with pytest.raises(ConfigError, match="optim.epochs"):
        cli.main(["teacher", "--data", "digits", "--set", "optim.epochs=abc", "--out", str(tmp_path), "--debug"])


def test_internal_error_exits_1(capsys, tmp_path, monkeypatch):
    import cnn2gnn.teacher

    def boom(*args, **kwargs):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(cnn2gnn.teacher, "train_teacher", boom)
    code, out, err = run_main(capsys, "teacher", "--data", "digits", "--out", str(tmp_path))
    assert code == 1
    assert err.splitlines() == [
        "cnn2gnn teacher: internal error: RuntimeError: something broke (run with --debug for the traceback and "
        "report it)"
    ]
    with pytest.raises(RuntimeError):
        cli.main(["teacher", "--data", "digits", "--out", str(tmp_path), "--debug"])


def test_interrupt_exits_130(capsys, tmp_path, monkeypatch):
    import cnn2gnn.teacher

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnn2gnn.teacher, "train_teacher", interrupted)
    code, _, err = run_main(capsys, "teacher", "--data", "digits", "--out", str(tmp_path))
    assert code == 130 and "--resume" in err


@pytest.mark.slow
def test_user_error_and_debug_as_a_subprocess(tmp_path, empty_dir):
    args = ["teacher", "--data", "imagefolder", "--data-root", str(empty_dir), "--out", str(tmp_path / "o")]
    proc = run_module(*args)
    assert_user_error(proc.returncode, proc.stdout, proc.stderr, str(empty_dir))
    proc = run_module(*args, "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr


def test_user_error_class_hierarchy():
    assert issubclass(DataError, UserError) and issubclass(ConfigError, UserError)
