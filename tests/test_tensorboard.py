"""Tests of ``run.tensorboard`` (issue 13 item 6): every numeric value of each epoch's metrics line written as a
TensorBoard scalar at step = epoch into OUT/tensorboard/, nothing without the option, a one-line error without the
tensorboard package, the writer closed on errors, and a resumed run hiding the events past its checkpoint.
"""

import math
import sys
import time
from pathlib import Path

import pytest
from helpers import ONE_THREAD, metrics, run_cli

from cnn2gnn.train import tensorboard_scalars

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TEACHER = ["teacher", "--data", "digits", "--arch", "resnet8", "--set", "model.width=4", *ONE_THREAD]
ON = ["--set", "run.tensorboard=true"]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_scalars_are_the_metrics_lines(tmp_path):
    out = tmp_path / "teacher"
    code, _, err = run_cli(*TEACHER, *ON, "--epochs", 2, "--out", out)
    assert code == 0, err
    rows = metrics(out)
    keys = {k for k, v in rows[0].items() if k != "epoch" and isinstance(v, int | float)}
    assert {"train_loss", "lr", "val_acc", "train_seconds"} <= keys
    scalars = _scalars(out / "tensorboard")
    assert set(scalars) == keys
    for key in keys:  # TensorBoard stores float32
        assert scalars[key] == [(r["epoch"], pytest.approx(r[key], rel=1e-6, abs=1e-9)) for r in rows], key
    assert "tensorboard: true" in (out / "config.yaml").read_text()


def test_no_tensorboard_folder_without_the_option(tmp_path):
    out = tmp_path / "teacher"
    code, _, err = run_cli(*TEACHER, "--epochs", 1, "--out", out)
    assert code == 0, err
    assert (out / "metrics.jsonl").exists() and not (out / "tensorboard").exists()


def test_a_missing_tensorboard_package_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if it were not installed
    code, _, err = run_cli(*TEACHER, *ON, "--epochs", 1, "--out", tmp_path / "teacher")
    assert code == 2
    assert err.strip().count("\n") == 0 and "pip install 'cnn2gnn[tensorboard]'" in err, err
    assert not (tmp_path / "teacher" / "tensorboard").exists()


def test_the_writer_is_closed_on_errors(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    closed = []
    close = SummaryWriter.close
    monkeypatch.setattr(SummaryWriter, "close", lambda self: (closed.append(True), close(self)))
    with pytest.raises(RuntimeError, match="boom"), tensorboard_scalars(tmp_path, enabled=True) as log:
        log({"epoch": 0, "loss": 1.5, "flag": True, "name": "x", "nan": math.nan})
        raise RuntimeError("boom")
    assert closed == [True]
    scalars = _scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"loss", "nan"} and scalars["loss"] == [(0, 1.5)] and math.isnan(scalars["nan"][0][1])
    with tensorboard_scalars(tmp_path / "off", enabled=False) as log:
        log({"epoch": 0, "loss": 1.0})
    assert not (tmp_path / "off").exists()


def test_a_resumed_run_hides_the_events_past_its_checkpoint(tmp_path):
    # an interrupted run logged epochs 0-2 but checkpointed only epoch 0: the resumed run starts at 1 (purge_step)
    with tensorboard_scalars(tmp_path, enabled=True) as log:
        for epoch in range(3):
            log({"epoch": epoch, "loss": 1.0})
    time.sleep(1.1)  # event files are named by the second they were opened in, and read in name order
    with tensorboard_scalars(tmp_path, enabled=True, purge_step=1) as log:
        for epoch in (1, 2):
            log({"epoch": epoch, "loss": 2.0})
    assert _scalars(tmp_path / "tensorboard")["loss"] == [(0, 1.0), (1, 2.0), (2, 2.0)]
