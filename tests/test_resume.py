"""Tests of resumable training: a teacher run killed mid-training and continued with ``--resume`` ends with exactly
the weights and metrics of an uninterrupted run, and the same seed gives the same numbers twice.

The runs are small (resnet8 of width 4 on digits, batch size 8, one CPU thread) so that an epoch takes about half
a second: long enough to kill a run in the middle of one, short enough for the whole file to take seconds.
"""

import json
import signal
from pathlib import Path

import pytest
from helpers import assert_same_weights, kill_after_first_checkpoint, latest_epoch, metrics, without_timing

import cnn2gnn.checkpoint
import cnn2gnn.train
from cnn2gnn import cli

EPOCHS = 3


def teacher_args(out: Path) -> list[str]:
    return [
        "teacher",
        "--data",
        "digits",
        "--arch",
        "resnet8",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--set",
        "model.width=4",
        "--set",
        "run.threads=1",
        "--quiet",
        "--out",
        str(out),
    ]


def run(out: Path, *extra: str) -> int:
    return cli.main([*teacher_args(out), *extra])


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """Run A: three epochs without interruption."""
    out = tmp_path_factory.mktemp("resume") / "straight"
    assert run(out) == 0
    return out


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(straight, tmp_path):
    out = tmp_path / "killed"
    assert kill_after_first_checkpoint(teacher_args(out), out) == -signal.SIGKILL
    done = latest_epoch(out)
    assert 0 <= done < EPOCHS - 1, f"killed after epoch {done}: nothing left to resume"
    assert not (out / "model.safetensors").exists()

    assert run(out, "--resume") == 0
    assert_same_weights(straight, out)
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    assert without_timing(rows) == without_timing(metrics(straight))
    assert not (out / "ckpt").exists()  # a finished run keeps its model folder, not its training state


@pytest.mark.slow
def test_interrupted_right_after_a_checkpoint(straight, tmp_path, monkeypatch):
    """Stopped just after the checkpoint of epoch 1 is written: the resumed run still has one metrics row a epoch."""
    out = tmp_path / "interrupted"
    real = cnn2gnn.train.save_training_state

    def save_then_stop(run_dir, epoch, *args, **kwargs):
        real(run_dir, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(cnn2gnn.train, "save_training_state", save_then_stop)
    assert run(out) == 130
    monkeypatch.setattr(cnn2gnn.train, "save_training_state", real)
    assert run(out, "--resume") == 0
    assert [r["epoch"] for r in metrics(out)] == list(range(EPOCHS))
    assert without_timing(metrics(out)) == without_timing(metrics(straight))
    assert_same_weights(straight, out)


@pytest.mark.slow
def test_interrupted_while_writing_a_checkpoint(straight, tmp_path, monkeypatch):
    """Stopped after the weights of epoch 1 but before ``latest.json`` points at them: resume from epoch 0."""
    out = tmp_path / "half-written"
    real = cnn2gnn.checkpoint.atomic_write_json

    def stop_at_second_pointer(path, obj):
        if Path(path).name == "latest.json" and obj.get("epoch") == 1:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(cnn2gnn.checkpoint, "atomic_write_json", stop_at_second_pointer)
    assert run(out) == 130
    assert latest_epoch(out) == 0
    monkeypatch.setattr(cnn2gnn.checkpoint, "atomic_write_json", real)
    assert run(out, "--resume") == 0
    assert [r["epoch"] for r in metrics(out)] == list(range(EPOCHS))
    assert_same_weights(straight, out)


def _copy(src: Path, out: Path) -> dict[str, bytes]:
    out.mkdir()
    for path in src.rglob("*"):
        if path.is_file():
            target = out / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resume_of_a_finished_run_is_refused_and_changes_nothing(straight, tmp_path, capsys):
    out = tmp_path / "copy"
    before = _copy(straight, out)
    assert run(out, "--resume") == 2
    err = capsys.readouterr().err
    assert "finished run" in err and "--overwrite" in err
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_resume_of_a_finished_run_with_kept_checkpoints_changes_nothing(tmp_path):
    kept = tmp_path / "kept"
    assert run(kept, "--keep-checkpoints") == 0
    assert (kept / "ckpt" / "latest.json").is_file()
    out = tmp_path / "copy"
    _copy(kept, out)
    assert run(out, "--resume", "--keep-checkpoints") == 0
    assert_same_weights(kept, out)
    assert metrics(out) == metrics(kept)


@pytest.mark.slow
def test_resume_without_a_checkpoint_starts_afresh(straight, tmp_path):
    out = tmp_path / "fresh"
    assert run(out, "--resume") == 0
    assert without_timing(metrics(out)) == without_timing(metrics(straight))


@pytest.mark.slow
def test_same_seed_same_numbers(straight, tmp_path):
    out = tmp_path / "again"
    assert run(out) == 0
    assert without_timing(metrics(out)) == without_timing(metrics(straight))
    assert_same_weights(straight, out)
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (out, straight)]
    assert summaries[0]["train_acc"] == summaries[1]["train_acc"]
