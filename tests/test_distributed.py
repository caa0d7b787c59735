"""Training in several processes (cnn2gnn/distributed.py): two gloo processes on the CPU, each with half of every
global batch, train what one process trains on the whole batch, with the batch graph (gathered over the processes)
and with the anchors graph; a teacher trains in two processes; a two-process run resumes.

Equal to float tolerance, not bit for bit: the gradient is each process's mean over its 16 rows, averaged by
DistributedDataParallel ((g0 + g1) / 2), where one process sums 32 rows at once; the logged losses are sums over the
processes (float64) of each one's mean; and a matmul over 16 rows need not round as the same rows of a 32-row
matmul. These differ in the last bits (measured: losses up to 6e-7 relative, weights up to 8e-8 absolute).
"""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from helpers import ONE_THREAD, latest_epoch, metrics, run_cli
from safetensors.torch import load_file

from cnn2gnn import cli
from cnn2gnn.checkpoint import load_model
from cnn2gnn.data import Augment, BatchIterator
from cnn2gnn.data.datasets import Split
from cnn2gnn.distributed import SINGLE, World
from cnn2gnn.errors import UserError

COMMON = ["--data", "digits", "--limit-train", "256", "--batch-size", "32", "--seed", "0", *ONE_THREAD]
# SGD: AdamW divides each gradient element by its own running RMS, so an element that is zero in exact arithmetic (the
# graph head's columns for pixels constant within a batch: distances cancel them) is rounding noise whose sign makes a
# step of +-lr, in one process as in two (measured under AdamW: those columns differ by up to 8e-4, the rest by 1e-6)
SGD = ["--set", "optim.optimizer=sgd", "--lr", "0.2"]
STUDENT = ["distill", *COMMON, "--hidden", "16", "--set", "model.dropout=0.0", *SGD]
GRAPHS = {
    "batch": ["--set", "distill.train_graph=batch"],
    "anchors": ["--set", "bank.size=40", "--set", "distill.train_graph=anchors"],
}
STOP_AT = 1  # the interrupted two-process run stops as epoch STOP_AT begins (after the checkpoint of the one before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, jobs: list[tuple[list[str], int, int, bool]]) -> None:
    """One of two processes, as torchrun would start it: each job is ``cnn2gnn ARGV``, its rendezvous port, its
    expected exit code, and whether to interrupt it (KeyboardInterrupt in every process as epoch STOP_AT begins)."""
    import cnn2gnn.data.loader

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    set_epoch = cnn2gnn.data.loader.BatchIterator.set_epoch

    def stop(self, epoch: int) -> None:
        if epoch == STOP_AT:
            raise KeyboardInterrupt
        set_epoch(self, epoch)

    for argv, port, expected, interrupt in jobs:
        os.environ["MASTER_PORT"] = str(port)
        cnn2gnn.data.loader.BatchIterator.set_epoch = stop if interrupt else set_epoch
        code = cli.main(argv)
        assert code == expected, f"rank {rank}: cnn2gnn {' '.join(argv)} exited {code}, not {expected}"
        if interrupt:  # stopped after the checkpoint of the epoch before, with no model folder yet
            out = Path(argv[argv.index("--out") + 1])
            assert latest_epoch(out) == STOP_AT - 1 and not (out / "model.safetensors").exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two-process runs (in two spawned processes, one after the other): a teacher, a student per training graph
    distilled from it, and a two-epoch student interrupted after its first epoch and resumed; then the same students
    in this process."""
    root = tmp_path_factory.mktemp("distributed")
    out = {name: root / name for name in ("teacher", "batch", "anchors", "resumed", "batch1", "anchors1", "straight1")}
    teacher = ["teacher", *COMMON, "--epochs", "1", "--arch", "resnet8", "--set", "model.width=4"]
    student = [*STUDENT, "--teacher", str(out["teacher"])]
    two_epochs = [*student, "--epochs", "2", *GRAPHS["batch"], "--out", str(out["resumed"])]
    jobs = [
        ([*teacher, "--out", str(out["teacher"])], 0, False),
        *(([*student, "--epochs", "1", *GRAPHS[g], "--out", str(out[g])], 0, False) for g in GRAPHS),
        (two_epochs, 130, True),
        ([*two_epochs, "--resume"], 0, False),
    ]
    jobs = [(argv, free_port(), code, stop) for argv, code, stop in jobs]
    torch.multiprocessing.spawn(_worker, args=(jobs,), nprocs=2, join=True)
    for g in GRAPHS:
        code, _, err = run_cli(*student, "--epochs", "1", *GRAPHS[g], "--out", out[f"{g}1"])
        assert code == 0, err
    code, _, err = run_cli(*student, "--epochs", "2", *GRAPHS["batch"], "--out", out["straight1"])
    assert code == 0, err
    return out


def assert_same_run(one: Path, two: Path) -> None:
    """The logged training losses and the saved weights of two runs, to float tolerance; validation equal."""
    rows_one, rows_two = metrics(one), metrics(two)
    assert [r["epoch"] for r in rows_one] == [r["epoch"] for r in rows_two]
    for a, b in zip(rows_one, rows_two, strict=True):
        losses = [k for k in a if k.startswith("train_") and k != "train_seconds"]
        assert set(losses) == {"train_loss", "train_ce", "train_kd"}
        for key in losses:
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        assert b["val_acc"] == a["val_acc"] and b["lr"] == pytest.approx(a["lr"], rel=1e-9, abs=1e-12)
    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_two_processes_train_what_one_trains_on_the_global_batch(runs, graph):
    assert_same_run(runs[f"{graph}1"], runs[graph])


@pytest.mark.slow
def test_a_two_process_run_writes_one_run_folder(runs):
    for name in ("teacher", "batch", "anchors"):
        folder = runs[name]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["processes"] == 2 and manifest["backend"] == "gloo"
        assert len(metrics(folder)) == 1 and (folder / "summary.json").exists()
        assert not (folder / "ckpt").exists()
    model, meta = load_model(runs["teacher"])
    assert meta["kind"] == "teacher"
    summary = json.loads((runs["teacher"] / "summary.json").read_text())
    assert 0.0 <= summary["val_acc"] <= 1.0 and summary["epochs"] == 1


@pytest.mark.slow
def test_a_two_process_run_resumes_to_what_one_process_trains(runs):
    assert_same_run(runs["straight1"], runs["resumed"])


# -- without processes -------------------------------------------------------------------------------------


def test_each_process_gets_its_rows_of_the_global_batch_and_their_augmentation():
    torch.manual_seed(0)
    split = Split(torch.randint(0, 256, (50, 1, 6, 6), dtype=torch.uint8), torch.arange(50))
    kw = {"mean": (0.5,), "std": (0.25,), "shuffle": True, "seed": 3, "drop_last": True, "augment": Augment(1)}
    whole = BatchIterator(split, 8, **kw)
    parts = [BatchIterator(split, 8, rank=r, world=4, **kw) for r in range(4)]
    for it in (whole, *parts):
        it.set_epoch(2)
    assert [len(p) for p in parts] == [len(whole)] * 4 == [6] * 4
    for batch, shares in zip(whole, zip(*parts, strict=True), strict=True):
        assert [len(s.y) for s in shares] == [2] * 4
        torch.testing.assert_close(torch.cat([s.x for s in shares]), batch.x, rtol=0, atol=0)
        assert torch.equal(torch.cat([s.index for s in shares]), batch.index)


def test_batch_iterator_refuses_a_batch_the_processes_cannot_share():
    split = Split(torch.zeros(20, 1, 4, 4, dtype=torch.uint8), torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="3 processes"):
        BatchIterator(split, 8, mean=(0.5,), std=(0.25,), drop_last=True, rank=0, world=3)
    with pytest.raises(ValueError, match="drop_last"):
        BatchIterator(split, 8, mean=(0.5,), std=(0.25,), rank=0, world=2)


def test_world_from_torchrun_variables():
    assert World.from_env({}) is SINGLE and World.from_env({"WORLD_SIZE": "1", "RANK": "0"}) is SINGLE
    env = {"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert World.from_env(env) == World(size=4, rank=5, local_rank=1)
    with pytest.raises(UserError, match="MASTER_ADDR, MASTER_PORT: launch with torchrun"):
        World.from_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(UserError, match="must be integers"):
        World.from_env({**env, "RANK": "x"})
    assert SINGLE.sum(torch.ones(2)).tolist() == [1.0, 1.0] and SINGLE.share("x") == "x"


def test_a_batch_size_the_processes_cannot_share_is_one_line(tmp_path, monkeypatch):
    env = {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli(*STUDENT, "--epochs", "1", "--out", tmp_path / "s")
    assert code == 2 and out == "" and "optim.batch_size=32 must divide among the 3 processes" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "s").exists()
