"""Helpers shared by the tests that run the command line and compare runs, and by the native searches' tests
(imported as ``helpers``)."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from cnn2gnn import cli

TIMING = {"train_seconds"}  # the only fields allowed to differ between two runs of the same config
ONE_THREAD = ["--set", "run.threads=1", "--quiet"]


def run_cli(*args) -> tuple[int, str, str]:
    """``cnn2gnn ARGS`` in this process: (exit code, stdout, stderr); the torch thread count is restored."""
    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def latest_epoch(out: Path) -> int:
    try:
        return json.loads((out / "ckpt" / "latest.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def kill_after_first_checkpoint(argv: list[str], out: Path) -> int:
    """Run ``cnn2gnn ARGV`` in a subprocess, SIGKILL it once ``out`` holds a checkpoint, return its return code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnn2gnn", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    try:
        deadline = time.monotonic() + 90
        while latest_epoch(out) < 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        assert latest_epoch(out) >= 0, "no epoch finished in time"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.returncode


def set_random(layer: torch.nn.Module, seed: int) -> None:
    """Every parameter of ``layer`` drawn from N(0, 1) with its own generator (no zero bias, no init scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def pyg_graphconv(conv):
    """PyG's GraphConv with a SAGELayer's weights: lin_rel(sum_j e_ji x_j) (with the bias) + lin_root(x_i)."""
    import pytest

    pyg_nn = pytest.importorskip("torch_geometric.nn")
    ref = pyg_nn.GraphConv(conv.in_features, conv.out_features, aggr="add")
    with torch.no_grad():
        ref.lin_rel.weight.copy_(conv.nbr.weight)
        ref.lin_rel.bias.copy_(conv.lin.bias)
        ref.lin_root.weight.copy_(conv.lin.weight)
    return ref


def knn_reference(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of ``bank`` for each query from float64 distances and a stable ascending sort: exact, ties in
    position order (what the native searches must return)."""
    d = torch.cdist(queries.double(), bank.double()).pow(2)
    values, index = torch.sort(d, dim=1, stable=True)
    return values[:, :k].float(), index[:, :k]
