"""cnn2gnn.native.nearest_pruned: the search with a lower bound from the bank's principal axes finds the exact k
nearest anchors, in order, ties to the lower position, on any shape, stride and thread count; it computes few
distances in full on a bank that varies along a few axes; TorchSearch keeps it only there."""

import pytest
import torch
from helpers import knn_reference

from cnn2gnn import native
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models.gnn import GNNStudent
from cnn2gnn.search import TorchSearch, topk_torch

lanes = native.library().cnn2gnn_nearest_lanes() if native.available() else 0
needs_kernel = pytest.mark.skipif(lanes < native.MIN_LANES, reason="no native search here (no compiler or narrow SIMD)")


def low_rank(m: int, d: int, rank: int, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Points that vary mostly along ``rank`` directions, as a learned graph space does."""
    return torch.randn(m, rank, generator=g) @ torch.randn(rank, d, generator=g) + noise * torch.randn(
        m, d, generator=g
    )


@needs_kernel
@pytest.mark.parametrize(
    "n, m, d, k",
    [(1, 1, 16, 1), (3, 2, 16, 2), (5, 17, 64, 11), (17, 33, 20, 16), (256, 1024, 64, 11), (9, 100, 784, 17),
     (6, 3000, 64, 40), (2, 70, 32, 70), (50, 257, 64, 128), (300, 5000, 64, 11), (40, 500, 97, 3)],
)  # fmt: skip
@pytest.mark.parametrize("shape", ["low-rank", "isotropic"])
def test_the_pruned_search_finds_the_exact_k_nearest_in_order(n, m, d, k, shape):
    g = torch.Generator().manual_seed(n * 1000 + m + d)
    if shape == "low-rank":
        bank = low_rank(m, d, 6, g)
        queries = bank[torch.randint(0, m, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    else:
        bank, queries = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g)
    pruned = native.pack_pruned(bank)
    found = native.nearest_pruned(queries, pruned, k)
    if k > 8 * lanes:  # beyond 8 vector widths of group minima (8-lane builds: k > 64): the fused search's case
        assert found is None
        return
    dist, index = found
    ref_dist, ref_index = knn_reference(queries, bank, k)
    assert dist.shape == index.shape == (n, k) and dist.dtype == torch.float32 and index.dtype == torch.int64
    assert torch.equal(index, ref_index)  # random data: no two distances within rounding of each other
    torch.testing.assert_close(dist, ref_dist, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_ties_duplicates_and_queries_that_are_not_finite():
    g = torch.Generator().manual_seed(0)
    bank = low_rank(200, 16, 3, g)
    bank[50:70] = bank[3]  # twenty copies of anchor 3
    queries = torch.stack([bank[3], torch.full((16,), float("nan")), bank[100], bank[7].clone()])
    queries[3, 5] = float("inf")
    dist, index = native.nearest_pruned(queries, native.pack_pruned(bank), 12)
    assert torch.equal(index[0], torch.tensor([3, *range(50, 61)]))  # ties in position order
    assert (dist[0] < 1e-4).all()  # the copies, at zero up to the rounding of the change of axes
    assert torch.isnan(dist[1]).all() and torch.equal(index[1], torch.arange(12))  # NaN last, ties by position
    assert index[2, 0] == 100 and dist[2, 0] < 1e-4
    assert not torch.isfinite(dist[3]).any() and torch.equal(index[3], torch.arange(12))  # inf - inf in the new axes
    levels = torch.randint(0, 3, (300, 1), generator=g).float() * torch.ones(300, 16)  # three distinct anchors
    dist, index = native.nearest_pruned(torch.zeros(4, 16), native.pack_pruned(levels), 40)
    assert torch.equal(index, torch.sort(levels[:, 0], stable=True).indices[:40].expand(4, 40))


@needs_kernel
def test_strided_queries_thread_counts_and_what_it_leaves_to_the_other_searches():
    g = torch.Generator().manual_seed(1)
    bank, wide = low_rank(500, 32, 4, g), torch.randn(300, 48, generator=g)
    pruned = native.pack_pruned(bank)
    view = wide[:, 8:40]  # rows apart by 48 floats
    assert torch.equal(
        native.nearest_pruned(view, pruned, 9)[1], native.nearest_pruned(view.contiguous(), pruned, 9)[1]
    )
    threads, results = torch.get_num_threads(), []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(native.nearest_pruned(view, pruned, 11))
    finally:
        torch.set_num_threads(threads)
    for dist, index in results[1:]:
        assert torch.equal(dist, results[0][0]) and torch.equal(index, results[0][1])  # rows computed alike
    dist, index = native.nearest_pruned(torch.empty(0, 32), pruned, 3)
    assert dist.shape == index.shape == (0, 3)
    with pytest.raises(ValueError, match="k must be in"):
        native.nearest_pruned(view, pruned, 501)
    assert native.nearest_pruned(view, pruned, 8 * lanes + 1) is None  # k beyond the groups' minima: the fused search
    assert native.nearest_pruned(view.double(), pruned, 3) is None and native.nearest_pruned(wide, pruned, 3) is None
    assert native.pack_pruned(bank.double()) is None and native.pack_pruned(bank[:, :8]) is None  # dtype, d < 16
    nan_bank = bank.clone()
    nan_bank[4, 2] = float("nan")
    assert native.pack_pruned(nan_bank) is None
    with pytest.raises(ValueError, match="head"):
        native.pack_pruned(bank, head=17)
    with pytest.raises(ValueError, match="limits"):  # the kernel checks its own limits too
        native.nearest_pruned(view, pruned._replace(P=17), 3)


@needs_kernel
def test_the_bound_rules_out_most_anchors_of_a_low_rank_bank_and_torch_search_keeps_it_only_there(monkeypatch):
    g = torch.Generator().manual_seed(2)
    assert TorchSearch(low_rank(TorchSearch.PRUNE_FROM - 1, 64, 5, g)).pruned is None  # a small bank: the fused search
    monkeypatch.setattr(TorchSearch, "PRUNE_FROM", 2000)
    flat, round_ = low_rank(2000, 64, 5, g), torch.randn(2000, 64, generator=g)
    near = flat[:256] + 0.05 * torch.randn(256, 64, generator=g)
    assert native.scanned_fraction(native.pack_pruned(flat), near, 11) < 0.03
    assert native.scanned_fraction(native.pack_pruned(round_), torch.randn(256, 64, generator=g), 11) > 0.3
    assert TorchSearch(flat).pruned is not None and TorchSearch(round_).pruned is None
    calls = []
    real = native.nearest_pruned
    monkeypatch.setattr(native, "nearest_pruned", lambda *a: calls.append(a[2]) or real(*a))
    dist, index = TorchSearch(flat)(near, 11)
    assert calls == [11] and torch.equal(index, topk_torch(near, flat, 11)[1])
    monkeypatch.setattr(TorchSearch, "CALIBRATE_ON", 700)  # calibrated on 700 anchors, packed whole
    assert TorchSearch(flat).pruned.m == 2000 and TorchSearch(round_).pruned is None
    assert torch.equal(TorchSearch(flat)(near, 8 * lanes + 1)[1], topk_torch(near, flat, 8 * lanes + 1)[1])  # fused


@needs_kernel
def test_the_anchors_policy_with_a_pruned_search_gives_the_torch_logits(monkeypatch):
    monkeypatch.setattr(TorchSearch, "PRUNE_FROM", 2000)
    torch.manual_seed(0)
    cfg = StudentModelConfig(hidden=32, graph_dim=32, k=5)
    model = GNNStudent(48, 4, cfg, bank_size=2000)
    g = torch.Generator().manual_seed(3)
    model.set_bank(low_rank(2000, 48, 3, g), torch.randint(0, 4, (2000,)), torch.arange(2000))
    model.eval()
    x = low_rank(70, 48, 3, g)
    with torch.no_grad():
        model(x, graph="anchors")
        assert model.bank._index[1].pruned is not None  # the graph space of this bank is flat enough
        fast = model(x, graph="anchors")
        with native.disabled():
            model.bank.clear()
            slow = model(x, graph="anchors")
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
