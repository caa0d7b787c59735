"""Tests of the anchor search (issue 15): the blocked exact top-k equals one full top-k, faiss's exact index gives
the same neighbours and the same student logits, the approximate index has high recall on a clustered bank, the
candidate path of the graph head equals the dense one, and a bank of the whole training split works end to end with
evaluate and predict under both backends."""

import json

import numpy as np
import pytest
import torch
from helpers import ONE_THREAD, run_cli
from PIL import Image

from cnn2gnn import native
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.graph import SparseGraphLearner, pairwise_sq_dists
from cnn2gnn.models import GNNStudent
from cnn2gnn.search import TorchSearch, make_search, topk_torch


def _points(n: int, d: int, seed: int, clusters: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if not clusters:
        return torch.randn(n, d, generator=g)
    centres = 4 * torch.randn(clusters, d, generator=g)
    return centres[torch.randint(0, clusters, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_blocked_topk_equals_one_topk():
    q, bank = _points(37, 8, 0), _points(501, 8, 1)
    full = pairwise_sq_dists(q, bank).topk(6, dim=1, largest=False).indices
    for block in (1 << 20, 600, 64, 7):  # one pass; rows of queries; blocks of the bank merged
        assert torch.equal(topk_torch(q, bank, 6, block=block)[1], full), block
    assert topk_torch(q, bank[:4], 6)[1].shape == (37, 4)  # k clamped to the bank


def test_faiss_exact_finds_the_torch_neighbours():
    pytest.importorskip("faiss")
    q, bank = _points(50, 16, 2), _points(2000, 16, 3)
    exact = topk_torch(q, bank, 11)[1]
    found = make_search("faiss", bank)(q, 11)[1]
    assert (found == exact).float().mean() > 0.99  # ties in float32 aside
    d = pairwise_sq_dists(q, bank)
    torch.testing.assert_close(d.gather(1, found), d.gather(1, exact), rtol=1e-4, atol=1e-4)


def test_faiss_ivf_recall_on_a_clustered_bank():
    pytest.importorskip("faiss")
    q, bank = _points(200, 16, 4, clusters=20), _points(5000, 16, 5, clusters=20)
    exact = topk_torch(q, bank, 10)[1]
    approx = make_search("faiss-ivf", bank, nlist=32, nprobe=8)(q, 10)[1]
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.9


def test_candidates_give_the_dense_anchors_graph():
    learner = SparseGraphLearner(4)
    v, bank = _points(9, 5, 6).requires_grad_(), _points(30, 5, 7).requires_grad_()
    bank_sq = bank.pow(2).sum(dim=1)
    weights, index = learner(v, bank, sparse=True, anchors_sq=bank_sq)
    w2, i2 = learner(v, bank, anchors_sq=bank_sq, candidates=topk_torch(v, bank, 5)[1])
    torch.testing.assert_close(w2, weights)
    assert torch.equal(i2, index)
    (w2 * torch.arange(4.0)).sum().backward()
    assert v.grad.abs().sum() > 0 and bank.grad.abs().sum() > 0


@pytest.mark.parametrize("search", ["faiss", "faiss-ivf"])
def test_a_student_gives_the_same_logits_with_faiss(search):
    pytest.importorskip("faiss")
    torch.manual_seed(0)
    model = GNNStudent(16, 3, StudentModelConfig(hidden=8, k=3), bank_size=0)
    bank = _points(300, 16, 8, clusters=6)
    model.set_bank(bank, torch.randint(0, 3, (300,)), torch.arange(300))
    model.eval()
    x = _points(20, 16, 9, clusters=6)
    with torch.no_grad():
        exact = model(x, graph="anchors")
        model.bank.use_search(search, nlist=8, nprobe=8)
        found = model(x, graph="anchors")
    agree = (found.argmax(1) == exact.argmax(1)).float().mean()
    assert agree == 1.0 if search == "faiss" else agree >= 0.9
    if search == "faiss":
        torch.testing.assert_close(found, exact, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_bank_of_the_whole_training_split_with_evaluate_and_predict(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    out = tmp_path / "s"
    code, _, err = run_cli("distill", "--data", "digits", "--epochs", 1, "--hidden", 32, "--set", "bank.size=all",
                           *ONE_THREAD, "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["student"]["bank"] == meta["student"]["search"]["size"] == 1210  # the digits training split
    accs, said = {}, {}
    for search in ("torch", "faiss", "faiss-ivf"):
        code, text, err = run_cli("evaluate", "--model", out, "--graph", "anchors", "--search", search, "--json")
        assert code == 0, err
        accs[search], said[search] = json.loads(text)["mean"], json.loads(text)["search"]
    assert said["faiss"] == "exact, faiss IndexFlatL2, bank of 1,210" and said["faiss-ivf"].startswith("approximate")
    assert said["torch"] in ("exact, native fused search, bank of 1,210", "exact, torch top-k, bank of 1,210")
    assert accs["faiss"] == pytest.approx(accs["torch"], abs=1e-6)
    assert abs(accs["faiss-ivf"] - accs["torch"]) < 0.05
    pruned, real = [], native.nearest_pruned  # the pruned native search, forced on this small bank
    monkeypatch.setattr(TorchSearch, "PRUNE_FROM", 0)
    monkeypatch.setattr(TorchSearch, "PRUNE_BELOW", 1.0)
    monkeypatch.setattr(native, "nearest_pruned", lambda *a: pruned.append(len(a[0])) or real(*a))
    code, text, err = run_cli("evaluate", "--model", out, "--graph", "anchors", "--search", "torch")
    assert code == 0, err
    assert f"accuracy {accs['torch']:.4f}" in text
    assert "anchor search: exact, native pruned search" in text or not pruned  # what served the bank, printed
    assert pruned or native.pack_pruned(torch.randn(32, 64)) is None  # used wherever the build can run it
    images = tmp_path / "images"
    images.mkdir()
    from cnn2gnn.data import load_dataset

    for i, pixels in enumerate(load_dataset("digits").test.images[:5, 0].numpy()):
        Image.fromarray(pixels).save(images / f"{i}.png")
    outputs = {}
    for search in ("torch", "faiss"):
        code, text, err = run_cli("predict", "--model", out, images, "--search", search, "--quiet")
        assert code == 0, err
        outputs[search] = [line.split("\t")[1] for line in text.splitlines()]
    assert outputs["torch"] == outputs["faiss"] and len(outputs["torch"]) == 5  # torch: the pruned search, forced
