"""Tests of the GNN student (docs/method.md sections 3 and 5): shapes and gradients for every aggregate, the anchors
policy's independence of batch order and size, a training image never being its own anchor, the save/load round
trip of an anchor bank, tiny batches, and the whole teacher -> distill -> evaluate -> predict path on digits.
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import ONE_THREAD, run_cli
from PIL import Image

from cnn2gnn import policy
from cnn2gnn.checkpoint import load_model, save_model_dir
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.data import load_dataset, normalize
from cnn2gnn.models import GNNStudent, MLPStudent

D, C, HIDDEN, K, M = 16, 3, 8, 3, 10  # input size, classes, hidden width, neighbours, anchors


def config(aggregate="sage", *, label_messages=False, graph_space="proj", **kwargs) -> StudentModelConfig:
    kwargs = {"dropout": 0.0, **kwargs}
    return StudentModelConfig(
        hidden=HIDDEN, k=K, aggregate=aggregate, label_messages=label_messages, graph_space=graph_space, **kwargs
    )


def student(aggregate="sage", **kwargs) -> GNNStudent:
    return GNNStudent(D, C, config(aggregate, **kwargs))


def mlp(**kwargs) -> MLPStudent:
    """The same-width MLP baseline of the test's sizes (``config`` keys, ``arch="mlp"``)."""
    return MLPStudent(D, C, config(arch="mlp", **kwargs))


def mlp_of(model: GNNStudent, **kwargs) -> MLPStudent:
    """An MLP holding the GNN's own-term weights: ``lin1`` = ``conv1.lin``, ``lin2`` = ``conv2.lin``."""
    net = mlp(**kwargs)
    net.load_state_dict(
        {f"lin{i}.{p}": getattr(getattr(model, f"conv{i}").lin, p) for i in (1, 2) for p in ("weight", "bias")}
    )
    return net


def with_bank(model: GNNStudent, m: int = M, seed: int = 1) -> GNNStudent:
    g = torch.Generator().manual_seed(seed)
    model.set_bank(torch.randn(m, D, generator=g), torch.randint(0, C, (m,), generator=g), torch.arange(m) + 100)
    return model


def grads(model: torch.nn.Module, x: torch.Tensor, **forward) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    out = model(x, **forward)
    (out * torch.linspace(-1.0, 1.0, out.numel()).view_as(out)).sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------- shapes and gradients


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
@pytest.mark.parametrize("label_messages", [False, True])
@pytest.mark.parametrize("graph", ["batch", "anchors"])
@pytest.mark.parametrize("graph_space", ["proj", "head", "pixels"])
def test_shapes_and_gradient_reaches_every_used_parameter(aggregate, label_messages, graph, graph_space):
    torch.manual_seed(0)
    model = with_bank(student(aggregate, label_messages=label_messages, graph_space=graph_space)).train()
    x = torch.randn(12, 1, 4, 4)  # images are flattened
    assert model(x, graph=graph).shape == (12, C)
    g = grads(model, x, graph=graph)
    expected = {"conv1.lin.weight", "conv1.lin.bias", "conv2.lin.weight", "conv2.lin.bias"}
    if aggregate == "sage":
        expected |= {"conv1.nbr.weight", "conv2.nbr.weight"}
    if graph_space == "head":
        expected.add("graph_head.weight")  # only when the graph is used: it measures the distances
    if label_messages and graph == "anchors":
        expected.add("label_gain.weight")  # the anchors' labels exist only under the anchors policy
    reached = {name for name, grad in g.items() if grad is not None and grad.abs().sum() > 0}
    assert reached == expected
    assert all(torch.isfinite(grad).all() for grad in g.values() if grad is not None)


@pytest.mark.parametrize("label_messages", [False, True])
@pytest.mark.parametrize("graph_space", ["proj", "head", "pixels"])
def test_mlp_shapes_and_gradient_reaches_every_parameter(label_messages, graph_space):
    """The MLP baseline (``arch="mlp"``) has no graph and no bank: the graph keys of its config build nothing."""
    torch.manual_seed(0)
    model = mlp(label_messages=label_messages, graph_space=graph_space).train()
    assert policy.supported(model) == ()
    x = torch.randn(12, 1, 4, 4)  # images are flattened
    assert model(x).shape == (12, C)
    g = grads(model, x)
    expected = {"lin1.weight", "lin1.bias", "lin2.weight", "lin2.bias"}
    assert set(g) == expected
    reached = {name for name, grad in g.items() if grad is not None and grad.abs().sum() > 0}
    assert reached == expected
    assert all(torch.isfinite(grad).all() for grad in g.values() if grad is not None)


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
@pytest.mark.parametrize("graph", ["batch", "anchors"])
def test_detached_graph_passes_no_gradient_through_the_distances(aggregate, graph):
    torch.manual_seed(0)
    x = torch.randn(12, D)
    # a separate graph head only shapes the distances: with detach_graph it gets no gradient at all
    attached = with_bank(student(aggregate, graph_space="head")).train()
    detached = with_bank(student(aggregate, graph_space="head", detach_graph=True)).train()
    detached.load_state_dict(attached.state_dict())
    assert grads(attached, x, graph=graph)["graph_head.weight"] is not None
    assert grads(detached, x, graph=graph)["graph_head.weight"] is None
    torch.testing.assert_close(detached(x, graph=graph), attached(x, graph=graph))  # same graph, same logits

    # graph space = the first layer's projection: detaching equals holding the graph constant
    attached = with_bank(student(aggregate)).train()
    detached = with_bank(student(aggregate, detach_graph=True)).train()
    detached.load_state_dict(attached.state_dict())
    constant = [(g[0].detach(), g[1]) if isinstance(g, tuple) else g.detach() for g in _graphs(attached, x, graph)]
    replay = iter(constant)
    handle = attached.graph.register_forward_hook(lambda mod, inp, out: next(replay))
    with_constant_graph = grads(attached, x, graph=graph)
    handle.remove()
    learned = grads(attached, x, graph=graph)
    without = grads(detached, x, graph=graph)
    torch.testing.assert_close(without["conv1.lin.weight"], with_constant_graph["conv1.lin.weight"])
    assert not torch.allclose(learned["conv1.lin.weight"], with_constant_graph["conv1.lin.weight"])


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
@pytest.mark.parametrize("training", [False, True])
def test_anchors_forward_gathers_what_the_dense_graph_multiplies(aggregate, training):
    # the anchors policy aggregates its k neighbours by a gather of sparse edges, in the bank's own graph and in the
    # queries' graph; check both against P @ messages with the dense P, the bank's states recomputed by hand
    torch.manual_seed(0)
    model = with_bank(student(aggregate, label_messages=True)).train(training)
    conv1, conv2 = model.conv1, model.conv2
    x = torch.randn(7, D)

    def layer(own: torch.Tensor, p: torch.Tensor, messages: torch.Tensor, conv) -> torch.Tensor:
        """One layer by hand with a dense row-stochastic P: sage xW + b + P M; gcn D^-1 (P + I) = (xW + P M) / 2 + b."""
        if aggregate == "sage":
            return conv.lin(own) + p @ messages
        return 0.5 * (conv.message(own) + p @ messages) + conv.lin.bias

    # the bank: its graph among its own images (an anchor is not its own neighbour), then its messages
    xa = model.bank.images
    va = conv1.lin(xa)  # graph space "proj"
    pa = model.graph(va, va, model.bank.self_mask())  # dense (m, m), the same distances and k
    assert torch.all(pa.diagonal() == 0)
    wa, ia = model.graph(va, va, model.bank.self_mask(), sparse=True)
    torch.testing.assert_close(torch.zeros(M, M).scatter(1, ia, wa), pa)
    msg1 = conv1.message(xa)
    ha = torch.relu(layer(xa, pa, msg1, conv1))
    msg2 = conv2.message(ha) + model.label_gain(torch.nn.functional.one_hot(model.bank.labels, C).float())

    # the queries: linked to their k nearest anchors
    p = model.graph(conv1.lin(x), va)  # dense (n, m)
    weights, index = model.anchor_edges(x)
    torch.testing.assert_close(torch.gather(p, 1, index), weights)
    torch.testing.assert_close(torch.zeros(len(x), M).scatter(1, index, weights), p)
    h = torch.relu(layer(x, p, msg1, conv1))
    expected = layer(h, p, msg2, conv2)
    torch.testing.assert_close(model(x, graph="anchors"), expected)


def _dense(out, x: torch.Tensor, model: GNNStudent) -> torch.Tensor:
    """A graph as the learner returned it, dense: (weights, index) pairs (the anchors graph and the bank's own
    graph) scattered to (n, m) with m the bank's size."""
    if isinstance(out, tuple):
        weights, index = out
        return torch.zeros(len(weights), len(model.bank)).scatter(1, index, weights)
    return out


def _graphs(model: GNNStudent, x: torch.Tensor, graph: str) -> list:
    """The graphs the learner returns in one forward pass, as returned (under anchors in train mode the bank's own
    graph first; the bank's and the anchors graph as (weights, index) pairs)."""
    seen: list = []
    handle = model.graph.register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        model(x, graph=graph)
    finally:
        handle.remove()
    return seen


# ------------------------------------------------------------------------------------------- inference policies


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def normalised(bundle, split) -> torch.Tensor:
    return normalize(split.images, bundle.mean, bundle.std).flatten(1)


@pytest.mark.parametrize(("aggregate", "label_messages"), [("gcn", False), ("sage", True)])
def test_anchors_policy_ignores_batch_order_and_size(digits, aggregate, label_messages):
    torch.manual_seed(0)
    model = GNNStudent(64, 10, StudentModelConfig(hidden=32, k=5, aggregate=aggregate, label_messages=label_messages))
    bank = torch.arange(0, len(digits.train), 12)
    model.set_bank(normalised(digits, digits.train)[bank], digits.train.labels[bank], bank)
    model.eval()
    x, y = normalised(digits, digits.test), digits.test.labels

    def logits(order: torch.Tensor, batch_size: int) -> torch.Tensor:
        out = torch.empty(len(x), 10)
        with torch.no_grad():
            for chunk in order.split(batch_size):
                out[chunk] = model(x[chunk], graph="anchors")
        return out

    reference = logits(torch.arange(len(x)), len(x))
    orders = {
        "original": torch.arange(len(x)),
        "random": torch.randperm(len(x), generator=torch.Generator().manual_seed(3)),
        "sorted by class": torch.sort(y, stable=True).indices,
    }
    for name, order in orders.items():
        for batch_size in (1, 7, len(x)):
            got = logits(order, batch_size)
            assert torch.equal(got.argmax(1), reference.argmax(1)), (name, batch_size)
            torch.testing.assert_close(got, reference, rtol=0, atol=1e-5, msg=f"{name}, batch size {batch_size}")


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
def test_batch_policy_on_one_image_is_the_mlp_of_the_same_weights(aggregate):
    """A single node has no neighbours: with the (default) self loop the GNN is the MLP lin2(ReLU(lin1 x))."""
    torch.manual_seed(0)
    model = student(aggregate, dropout=0.3).eval()
    net = mlp_of(model, dropout=0.3).eval()
    x = torch.randn(5, D)
    with torch.no_grad():
        for i in range(len(x)):
            torch.testing.assert_close(model(x[i : i + 1], graph="batch"), net(x[i : i + 1]))
        assert not torch.allclose(model(x, graph="batch"), net(x))  # with batch-mates it is not the MLP


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
@pytest.mark.parametrize("n", [1, 2, 10, 11, 12])
@pytest.mark.parametrize("train", [True, False])
def test_batch_policy_on_tiny_batches(aggregate, n, train):
    torch.manual_seed(0)
    model = GNNStudent(D, C, StudentModelConfig(hidden=HIDDEN, k=10, aggregate=aggregate)).train(train)
    x = torch.randn(n, D)
    out = model(x, graph="batch")
    assert out.shape == (n, C)
    assert torch.isfinite(out).all()
    if train:
        out.square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------- own anchor


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
def test_a_training_image_is_never_its_own_anchor(aggregate):
    torch.manual_seed(0)
    m = 20
    model = student(aggregate, label_messages=True)
    bank_x = torch.randn(m, D)
    model.set_bank(bank_x, torch.randint(0, C, (m,)), torch.arange(m) + 50)  # positions 50..69 in the split
    model.train()
    rows = torch.arange(3, 9)
    x, index = bank_x[rows], rows + 50  # the batch is part of the bank

    bank_graph, query = _graphs_with_index(model, x, index)
    assert bank_graph.shape == (m, m) and torch.all(bank_graph.diagonal() == 0)  # nor is an anchor its own
    assert query.shape == (len(rows), m)
    assert torch.all(query[torch.arange(len(rows)), rows] == 0)
    torch.testing.assert_close(query.sum(1), torch.ones(len(rows)))
    assert torch.all((query > 0).sum(1) == K)

    # without the positions the image finds itself at distance 0: its own copy is its strongest neighbour
    _, leaky = _graphs_with_index(model, x, None)
    assert torch.equal(leaky.argmax(1), rows)
    assert torch.all(leaky[torch.arange(len(rows)), rows] > 0)


def _graphs_with_index(model, x, index):
    seen = []
    handle = model.graph.register_forward_hook(lambda mod, inp, out: seen.append(_dense(out, x, model).detach()))
    try:
        model(x, graph="anchors", index=index)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("m", [5, 11])
def test_an_anchor_bank_of_at_most_k_plus_1_images(m):
    torch.manual_seed(0)
    model = GNNStudent(D, C, StudentModelConfig(hidden=HIDDEN, k=10, aggregate="sage"))
    try:
        with_bank(model, m)
    except ValueError:
        return  # refusing such a bank with a clear error is fine too
    model.eval()
    assert torch.isfinite(model(torch.randn(4, D), graph="anchors")).all()
    model.train()
    assert torch.isfinite(model(model.bank.images[:2], graph="anchors", index=model.bank.index[:2])).all()


# ------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
def test_save_and_load_keeps_the_anchor_bank(tmp_path, aggregate):
    """Labels and positions of the bank are distinct tensors after loading (they once shared storage, so the loaded
    labels were overwritten by the positions); label messages make the labels visible in the logits."""
    torch.manual_seed(0)
    cfg = StudentModelConfig(
        hidden=HIDDEN,
        k=K,
        aggregate=aggregate,
        graph_space="proj",
        graph_dim=4,
        dropout=0.0,
        input_dropout=0.0,
        detach_graph=False,
        self_loop=True,
        label_messages=True,
    )
    model = GNNStudent(D, C, cfg)
    m = 12
    labels = torch.tensor([0, 1, 2] * 4)
    model.set_bank(torch.randn(m, D), labels, torch.arange(m) * 7 + 3)  # positions differ from labels
    with torch.no_grad():
        model.label_gain.weight.mul_(5.0)  # make the labels matter for the logits
    meta = {"kind": "student", "in_features": D, "num_classes": C, "student": {"model": asdict(cfg), "bank": m}}
    save_model_dir(tmp_path, model, meta)
    loaded, loaded_meta = load_model(tmp_path)
    assert loaded_meta["student"]["bank"] == m and not loaded.training
    assert loaded.bank is not None and len(loaded.bank) == m
    for name in ("images", "labels", "index"):
        assert torch.equal(getattr(loaded.bank, name), getattr(model.bank, name)), name
    assert loaded.bank.labels.untyped_storage().data_ptr() != loaded.bank.index.untyped_storage().data_ptr()
    model.eval()
    x = torch.randn(9, D)
    with torch.no_grad():
        for graph in ("anchors", "batch"):
            assert torch.equal(loaded(x, graph=graph), model(x, graph=graph)), graph


# ------------------------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A one-epoch resnet8 teacher (width 4) and a student distilled from it with 100 anchors, trained on anchors."""
    root = tmp_path_factory.mktemp("student-cli")
    teacher, stud = root / "teacher", root / "student"
    code, _, err = run_cli(
        "teacher", "--data", "digits", "--arch", "resnet8", "--epochs", 1, "--set", "model.width=4", *ONE_THREAD,
        "--out", teacher,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(
        "distill", "--data", "digits", "--teacher", teacher, "--epochs", 2, "--set", "bank.size=100",
        "--set", "distill.train_graph=anchors", *ONE_THREAD, "--out", stud,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("student GNN (sage), distilled from ") and "test anchors" in out
    return {"root": root, "teacher": teacher, "student": stud}


@pytest.mark.slow
def test_distilled_student_folder(runs):
    s = runs["student"]
    for name in ("config.yaml", "metrics.jsonl", "manifest.json", "model.safetensors", "meta.json", "summary.json"):
        assert (s / name).is_file(), name
    meta = json.loads((s / "meta.json").read_text())
    assert meta["kind"] == "student" and meta["student"]["bank"] == 100 and meta["train_graph"] == "anchors"
    rows = [json.loads(line) for line in (s / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(k in rows[0] for k in ("train_loss", "train_ce", "train_kd", "val_acc"))
    assert not any(k.startswith("test") for row in rows for k in row)  # test accuracy: once, in summary.json
    model, _ = load_model(s)
    assert model.bank is not None and len(model.bank.labels) == 100
    assert torch.bincount(model.bank.labels, minlength=10).tolist() == [10] * 10  # stratified


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["anchors", "batch"])
def test_evaluate_json(runs, graph):
    code, out, err = run_cli("evaluate", "--model", runs["student"], "--graph", graph, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["policy"] == graph and result["kind"] == "student" and result["n"] == 451
    assert len(result["accs"]) == 3 and all(0.0 <= a <= 1.0 for a in result["accs"])
    assert result["mean"] == pytest.approx(sum(result["accs"]) / 3)
    summary = json.loads((runs["student"] / "summary.json").read_text())
    if graph == "anchors":
        assert result["std"] == 0.0 and len(set(result["accs"])) == 1  # no batch-mates, so no shuffle matters
        assert result["mean"] == pytest.approx(summary["test_acc_anchors"], abs=1e-6)
        assert "class_sorted_acc" not in result
    else:
        assert result["std"] >= 0.0
        assert 0.0 <= result["class_sorted_acc"] <= 1.0
        assert result["sorted_minus_shuffled"] == pytest.approx(result["class_sorted_acc"] - result["mean"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["student", "teacher"])
def test_evaluate_speed_includes_batch_1_and_256(runs, model):
    code, out, err = run_cli("evaluate", "--model", runs[model], "--speed", "--json")
    assert code == 0, err
    speed = json.loads(out)["images_per_s"]
    assert set(speed) == {"1", "256"} and all(v > 0 for v in speed.values())


@pytest.mark.slow
def test_predict_image_files(runs, digits, tmp_path):
    paths = []
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(digits.test.images[i, 0].numpy(), "L").save(tmp_path / name)
        paths.append(tmp_path / name)
    code, out, err = run_cli("predict", "--model", runs["student"], *paths)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines, strict=True):
        file, cls, prob = line.split("\t")
        assert file == str(path) and cls in [str(c) for c in range(10)] and 0.0 <= float(prob) <= 1.0

    # the same numbers as the model on the same (losslessly stored) images under the anchors policy
    code, out, err = run_cli("predict", "--model", runs["student"], "--json", *paths)
    assert code == 0, err
    rows = json.loads(out)
    model, meta = load_model(runs["student"])
    with torch.no_grad():
        probs = torch.softmax(model(normalize(digits.test.images[:2], meta["mean"], meta["std"]), graph="anchors"), 1)
    for row, p in zip(rows, probs, strict=True):
        assert row["index"] == int(p.argmax()) and row["class"] == str(row["index"])
        assert row["probability"] == pytest.approx(float(p.max()), abs=1e-6)


@pytest.mark.slow
def test_mlp_baseline_and_cross_entropy_only(runs):
    mlp = runs["root"] / "mlp"
    code, out, err = run_cli(
        "distill", "--data", "digits", "--teacher", runs["teacher"], "--epochs", 1, "--set", "model.arch=mlp",
        "--set", "model.hidden=32", *ONE_THREAD, "--out", mlp,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("student MLP, distilled from")
    summary = json.loads((mlp / "summary.json").read_text())
    assert "test_acc_none" in summary and "test_acc_anchors" not in summary
    code, out, err = run_cli("evaluate", "--model", mlp, "--json")
    assert code == 0, err
    assert json.loads(out)["policy"] == "none"

    ce = runs["root"] / "ce"
    code, out, err = run_cli(
        "distill", "--data", "digits", "--epochs", 1, "--set", "model.hidden=32", "--set", "bank.size=50",
        *ONE_THREAD, "--out", ce,
    )  # fmt: skip
    assert code == 0, err
    assert "cross-entropy" in out
    rows = [json.loads(line) for line in (ce / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_kd"] == 0.0 and rows[0]["train_loss"] == pytest.approx(rows[0]["train_ce"])


@pytest.mark.slow
def test_teacher_trained_on_other_data(runs, tmp_path):
    fake = tmp_path / "other-teacher"
    shutil.copytree(runs["teacher"], fake)
    meta = json.loads((fake / "meta.json").read_text())
    meta["fingerprint"] = "0123456789abcdef"
    (fake / "meta.json").write_text(json.dumps(meta))
    code, out, err = run_cli(
        "distill", "--data", "digits", "--teacher", fake, "--epochs", 1, *ONE_THREAD, "--out", tmp_path / "s"
    )
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnn2gnn distill: error: "), err
    assert str(fake) in lines[0] and "0123456789abcdef" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("aggregate", ["gcn", "sage"])
def test_a_batch_split_over_processes_computes_the_global_batch_graph(aggregate):
    # two "processes" each holding part of the batch equal one process holding all of it: each gather returns what an
    # all-gather would (the other part's tensor, computed from the whole batch), told apart by its width
    from cnn2gnn.models.gnn import input_features

    torch.manual_seed(0)
    model = student(aggregate, graph_space="head").eval()
    x = torch.randn(10, D)
    parts = (slice(0, 6), slice(6, 10))
    feats = input_features(x, model.embed)
    hidden = torch.relu(model.conv1(feats, model.graph(model.space(feats))))
    whole = {t.shape[1]: t for t in (model.space(feats), model.conv1.message(feats), model.conv2.message(hidden))}
    assert len(whole) == 3  # graph space, hidden and class widths differ: the width names the tensor

    def gather_for(rows: slice):
        def gather(t: torch.Tensor) -> tuple[torch.Tensor, slice]:
            torch.testing.assert_close(t, whole[t.shape[1]][rows])  # this process's rows are its own
            return torch.cat([t if r == rows else whole[t.shape[1]][r] for r in parts]), rows

        return gather

    split = torch.cat([model(x[rows], gather=gather_for(rows)) for rows in parts])
    torch.testing.assert_close(split, model(x), rtol=1e-5, atol=1e-5)
