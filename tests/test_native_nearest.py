"""cnn2gnn.native.nearest: the fused search of a packed bank (distances and selection in one pass) finds the exact k
nearest anchors, in order, ties to the lower position, on any shape, stride and thread count; TorchSearch and the
anchors policy use it in eval mode and fall back to the torch path where it cannot serve."""

import pytest
import torch
from helpers import knn_reference

from cnn2gnn import native
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models.gnn import GNNStudent
from cnn2gnn.native.prepared import AnchorsPass
from cnn2gnn.search import TorchSearch, topk_torch

lanes = native.library().cnn2gnn_nearest_lanes() if native.available() else 0
needs_kernel = pytest.mark.skipif(lanes < native.MIN_LANES, reason="no native search here (no compiler or narrow SIMD)")


def search(queries, bank, k):
    packed = native.pack(bank, bank.pow(2).sum(dim=1))
    return native.nearest(queries, packed, k)


@needs_kernel
@pytest.mark.parametrize(
    "n, m, d, k",
    [(1, 1, 1, 1), (3, 2, 4, 2), (4, 31, 3, 5), (5, 32, 64, 11), (17, 33, 7, 16), (256, 1024, 64, 11),
     (9, 100, 784, 17), (6, 3000, 64, 40), (2, 70, 5, 70), (50, 257, 64, 130), (300, 5000, 64, 11),
     (70, 3000, 784, 11)],
)  # fmt: skip
def test_nearest_finds_the_exact_k_nearest_in_order(n, m, d, k):
    g = torch.Generator().manual_seed(n * 1000 + m + d)
    bank, queries = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g)
    dist, index = search(queries, bank, k)
    ref_dist, ref_index = knn_reference(queries, bank, k)
    assert dist.shape == index.shape == (n, k) and dist.dtype == torch.float32 and index.dtype == torch.int64
    assert torch.equal(index, ref_index)  # random data: no two distances within rounding of each other (several
    # of these banks are read in chunks, and several of these batches in groups of tiles: the bounds carry over)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-4, atol=1e-4)
    torch_dist, torch_index = topk_torch(queries, bank, k)  # the torch path: the same neighbours, the same distances
    assert torch.equal(index, torch_index)
    torch.testing.assert_close(dist, torch_dist, rtol=1e-5, atol=1e-4)


@needs_kernel
def test_ties_duplicates_nan_and_zero_distances():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(200, 8, generator=g)
    bank[50:70] = bank[3]  # twenty copies of anchor 3
    queries = torch.stack([bank[3], torch.full((8,), float("nan")), bank[100]])
    dist, index = search(queries, bank, 12)
    assert torch.equal(index[0], torch.tensor([3, *range(50, 61)]))  # ties in position order
    assert (dist[0] == 0).all()  # an anchor's own distance: clamped at zero, never negative
    assert torch.isnan(dist[1]).all() and torch.equal(index[1], torch.arange(12))  # NaN last, ties by position
    assert index[2, 0] == 100 and dist[2, 0] == 0
    levels = torch.randint(0, 3, (300, 1), generator=g).float()  # three distinct anchors, each many times
    dist, index = search(torch.zeros(4, 1), levels, 40)
    assert torch.equal(index, torch.sort(levels.squeeze(1).pow(2), stable=True).indices[:40].expand(4, 40))


@needs_kernel
def test_strided_queries_thread_counts_and_errors():
    g = torch.Generator().manual_seed(1)
    bank, wide = torch.randn(500, 16, generator=g), torch.randn(40, 48, generator=g)
    view = wide[:, 8:24]  # rows apart by 48 floats
    assert torch.equal(search(view, bank, 9)[1], search(view.contiguous(), bank, 9)[1])
    assert torch.equal(search(wide[:, 8:24].t().contiguous().t(), bank, 9)[1], search(view, bank, 9)[1])
    threads, results = torch.get_num_threads(), []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(search(torch.randn(300, 16, generator=torch.Generator().manual_seed(2)), bank, 11))
    finally:
        torch.set_num_threads(threads)
    for dist, index in results[1:]:
        assert torch.equal(dist, results[0][0]) and torch.equal(index, results[0][1])  # rows computed alike
    dist, index = search(torch.empty(0, 16), bank, 3)
    assert dist.shape == index.shape == (0, 3)
    with pytest.raises(ValueError, match="k must be in"):
        search(view, bank, 501)
    packed = native.pack(bank, bank.pow(2).sum(dim=1))
    assert native.nearest(view.double(), packed, 3) is None and native.nearest(wide, packed, 3) is None  # dtype, d
    assert native.pack(bank.double(), bank.double().pow(2).sum(dim=1)) is None


@needs_kernel
def test_torch_search_uses_the_kernel_and_falls_back_to_topk(monkeypatch):
    g = torch.Generator().manual_seed(3)
    bank, queries = torch.randn(700, 32, generator=g), torch.randn(64, 32, generator=g)
    found = TorchSearch(bank)(queries, 11)
    calls = []
    real = native.nearest
    monkeypatch.setattr(native, "nearest", lambda *a: calls.append(a[2]) or real(*a))
    assert torch.equal(TorchSearch(bank)(queries, 11)[1], found[1]) and calls == [11]
    with native.disabled():
        dist, index = TorchSearch(bank)(queries, 11)
    assert torch.equal(index, found[1])
    torch.testing.assert_close(dist, found[0], rtol=1e-5, atol=1e-4)
    assert torch.equal(TorchSearch(bank)(queries, 5000)[1], topk_torch(queries, bank, 700)[1])  # k past the bank


@needs_kernel
def test_the_anchors_policy_runs_the_kernel_in_eval_mode_and_gives_the_torch_logits(monkeypatch):
    torch.manual_seed(0)
    cfg = StudentModelConfig(hidden=32, graph_dim=8, k=5)
    model = GNNStudent(48, 4, cfg, bank_size=300)
    model.set_bank(torch.randn(300, 48), torch.randint(0, 4, (300,)), torch.arange(300))
    model.eval()
    x = torch.randn(70, 48)
    calls = []
    real, prepared = native.nearest, AnchorsPass.__call__
    monkeypatch.setattr(native, "nearest", lambda *a: calls.append(len(a[0])) or real(*a))
    monkeypatch.setattr(AnchorsPass, "__call__", lambda self, x: calls.append(len(x)) or prepared(self, x))
    with torch.no_grad():
        fast = model(x, graph="anchors")
        with native.disabled():
            model.bank.clear()
            slow = model(x, graph="anchors")
    assert calls == [300, 70]  # the bank's own graph, then the queries (the fast path's prepared search and pass)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
