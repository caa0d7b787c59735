"""The student's forward passes have no data-dependent host synchronisation and no Python-side graph breaks: they
compile with ``torch.compile(fullgraph=True)`` under both policies, in training (the exclusion of a training image's
own anchor included) and in evaluation (issue 15). Dynamo's capture is what fails on a break; the ``eager`` backend
checks it without spending minutes in a C++ compiler (an inductor compile is in scripts/speed.py)."""

import pytest
import torch

from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models import GNNStudent, MLPStudent


def _student(aggregate: str) -> GNNStudent:
    torch.manual_seed(0)
    model = GNNStudent(64, 10, StudentModelConfig(hidden=32, k=5, aggregate=aggregate, label_messages=True))
    model.set_bank(torch.randn(50, 64), torch.randint(0, 10, (50,)), torch.arange(50) + 7)
    return model


@pytest.mark.parametrize("aggregate", ["sage", "gcn"])
@pytest.mark.parametrize("graph", ["batch", "anchors"])
def test_the_student_compiles_as_one_graph_and_computes_the_same(aggregate, graph):
    torch._dynamo.reset()
    model = _student(aggregate)
    x = torch.randn(16, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, graph=graph), model(x, graph=graph))
    model.train()
    model.drop.p = 0.0  # the same numbers in both
    index = torch.arange(16) + 7  # training images, some of them in the bank: their own anchor is excluded
    out = compiled(x, graph=graph, index=index)
    torch.testing.assert_close(out, model(x, graph=graph, index=index))
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.conv1.parameters())


def test_the_mlp_compiles_as_one_graph():
    torch._dynamo.reset()
    model = MLPStudent(64, 10, StudentModelConfig(arch="mlp", hidden=32)).eval()
    x = torch.randn(8, 64)
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="eager")(x), model(x))


@pytest.mark.slow
def test_compile_and_bf16_runs(tmp_path, monkeypatch):
    # --compile asks torch.compile for one graph (here with the eager backend: an inductor build takes minutes on a
    # CPU); run.amp=bf16 trains under bfloat16 autocast with finite losses
    from helpers import ONE_THREAD, metrics, run_cli

    calls = []
    real = torch.compile

    def recording(model, **kwargs):
        calls.append(kwargs)
        return real(model, **{**kwargs, "backend": "eager"})

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", recording)
    args = [
        "distill",
        "--data",
        "digits",
        "--epochs",
        1,
        "--hidden",
        16,
        "--set",
        "bank.size=30",
        *ONE_THREAD,
        "--quiet",
    ]
    code, _, err = run_cli(*args, "--compile", "--out", tmp_path / "c")
    assert code == 0, err
    assert calls == [{"fullgraph": True}]
    code, _, err = run_cli(*args, "--set", "run.amp=bf16", "--out", tmp_path / "b")
    assert code == 0, err
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in metrics(tmp_path / "b"))
