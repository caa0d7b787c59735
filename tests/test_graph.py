"""Tests for the sparse graph head (docs/method.md section 2): support, row sums, invariances, gradients, small n."""

import pytest
import torch

from cnn2gnn.graph import (
    SparseGraphLearner,
    normalize_adj,
    pairwise_sq_dists,
    sparse_graph,
    sparse_neighbours,
    symmetrize,
)


def _points(n: int, d: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_pairwise_sq_dists_matches_cdist():
    x, y = _points(6), _points(4, seed=1)
    torch.testing.assert_close(pairwise_sq_dists(x, y), torch.cdist(x, y).pow(2))
    d = pairwise_sq_dists(x)
    assert d.shape == (6, 6)
    assert (d >= 0).all() and (d.diagonal() == 0).all()
    torch.testing.assert_close(d, d.T)
    with pytest.raises(ValueError, match="pairwise_sq_dists"):
        pairwise_sq_dists(x, _points(4, d=3))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_exactly_k_nonzeros_and_rows_sum_to_one(k, exclude_self):
    x = _points(12, seed=k)
    p = sparse_graph(pairwise_sq_dists(x), k, exclude_self=exclude_self)
    assert p.shape == (12, 12)
    assert ((p > 0).sum(dim=1) == k).all()
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(12, dtype=p.dtype))
    if exclude_self:
        assert (p.diagonal() == 0).all()


def test_nearest_gets_largest_weight():
    d = pairwise_sq_dists(_points(10, seed=3))
    p = sparse_graph(d, 4, exclude_self=True)
    nearest = d.masked_fill(torch.eye(10, dtype=torch.bool), float("inf")).argmin(dim=1)
    assert torch.equal(p.argmax(dim=1), nearest)


def test_scale_invariance():
    d = pairwise_sq_dists(_points(9, seed=4))
    torch.testing.assert_close(sparse_graph(d * 7.3, 3, exclude_self=True), sparse_graph(d, 3, exclude_self=True))


def test_hand_computed_row():
    d = torch.tensor([[1.0, 2.0, 4.0, 10.0]])
    p = sparse_graph(d, 2)
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.4, 0.0, 0.0]]))
    # unsorted input, same distances: weights follow the columns
    p = sparse_graph(torch.tensor([[10.0, 4.0, 1.0, 2.0]]), 2)
    torch.testing.assert_close(p, torch.tensor([[0.0, 0.0, 0.6, 0.4]]))


def test_gradcheck_float64():
    # distinct distances with gaps far larger than gradcheck's finite-difference step
    d = torch.tensor(
        [[0.0, 1.0, 2.5, 4.0, 7.0], [1.3, 0.0, 3.1, 0.6, 5.2], [2.2, 4.4, 0.0, 1.7, 0.9], [6.0, 2.8, 3.9, 0.0, 1.1]],
        dtype=torch.float64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(lambda t: sparse_graph(t, 2), (d,))
    sq = d[:, :4].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sparse_graph(t, 2, exclude_self=True), (sq,))


def test_gradient_reaches_input_and_detach_blocks_it():
    v = _points(8, seed=5).requires_grad_(True)
    target = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (SparseGraphLearner(3)(v) * target).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0

    v2 = v.detach().clone().requires_grad_(True)
    a = SparseGraphLearner(3, detach=True)(v2)
    assert not a.requires_grad
    torch.testing.assert_close(a, SparseGraphLearner(3)(v.detach()))


def test_permutation_equivariance():
    x = _points(10, seed=6)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    learner = SparseGraphLearner(3)
    torch.testing.assert_close(learner(x[perm]), learner(x)[perm][:, perm])
    p = sparse_graph(pairwise_sq_dists(x), 3, exclude_self=True)
    torch.testing.assert_close(sparse_graph(pairwise_sq_dists(x[perm]), 3, exclude_self=True), p[perm][:, perm])


def test_small_n_clamps_k():
    k = 4
    # n = k + 1 with self excluded: k candidates, so k is clamped to k - 1
    p = sparse_graph(pairwise_sq_dists(_points(k + 1, seed=7)), k, exclude_self=True)
    assert ((p > 0).sum(dim=1) == k - 1).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(k + 1, dtype=p.dtype))
    # n = 2: the single other node gets weight 1
    p = sparse_graph(pairwise_sq_dists(_points(2, seed=8)), k, exclude_self=True)
    torch.testing.assert_close(p, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=p.dtype))
    # one query, one anchor
    p = SparseGraphLearner(k)(_points(1, seed=9), anchors=_points(1, seed=10))
    torch.testing.assert_close(p, torch.ones(1, 1, dtype=p.dtype))
    # a single node without anchors has no neighbours: only its self loop is left
    a = SparseGraphLearner(k)(_points(1))
    torch.testing.assert_close(a, torch.ones(1, 1, dtype=a.dtype))
    with pytest.raises(ValueError, match="sparse_graph"):
        sparse_graph(torch.zeros(1, 1), k, exclude_self=True)
    with pytest.raises(ValueError, match="sparse_graph"):
        sparse_graph(torch.zeros(3, 0), k)


@pytest.mark.parametrize("k", [0, -1])
def test_nonpositive_k_raises(k):
    with pytest.raises(ValueError, match=f"sparse_graph: k must be a positive integer, got k={k}"):
        sparse_graph(torch.rand(4, 4), k)
    with pytest.raises(ValueError, match=f"SparseGraphLearner: .*k={k}"):
        SparseGraphLearner(k)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sparse_graph: exclude_self"):
        sparse_graph(torch.rand(3, 4), 1, exclude_self=True)
    with pytest.raises(ValueError, match="SparseGraphLearner: norm.*'l2'"):
        SparseGraphLearner(norm="l2")
    with pytest.raises(ValueError, match="normalize_adj: mode.*'l2'"):
        normalize_adj(torch.rand(3, 3), mode="l2")


def test_ties_stay_finite():
    v = torch.zeros(6, 3, requires_grad=True)  # all distances equal: degenerate rows
    a = SparseGraphLearner(2)(v)
    assert torch.isfinite(a).all()
    a.sum().backward()
    assert torch.isfinite(v.grad).all()
    p = sparse_graph(torch.ones(3, 5), 2)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    assert ((p > 0).sum(dim=1) == 2).all() and torch.isfinite(p).all()
    d = torch.tensor([[1.0, 1.0, 1.0, 3.0], [2.0, 2.0, 5.0, 5.0]], requires_grad=True)  # partial ties
    p = sparse_graph(d, 2)
    # row 0: the 3 nearest tie (degenerate), uniform 1/2 on two of them (topk picks which); row 1: regular
    assert sorted(p[0, :3].tolist()) == [0.0, 0.5, 0.5] and p[0, 3] == 0
    torch.testing.assert_close(p[1], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    p.pow(2).sum().backward()
    assert torch.isfinite(d.grad).all()


def test_symmetrize():
    p = sparse_graph(pairwise_sq_dists(_points(7)), 2, exclude_self=True)
    a = symmetrize(p)
    torch.testing.assert_close(a, a.T)
    torch.testing.assert_close(a, (p + p.T) / 2)


def test_normalize_adj_modes():
    a = symmetrize(torch.rand(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    at = a + torch.eye(5, dtype=a.dtype)
    deg = at.sum(dim=1)
    expected = torch.diag(deg.pow(-0.5)) @ at @ torch.diag(deg.pow(-0.5))
    out = normalize_adj(a, mode="sym")
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, out.T)
    torch.testing.assert_close(normalize_adj(a, mode="row"), torch.diag(1 / deg) @ at)
    torch.testing.assert_close(normalize_adj(a, mode="none"), at)
    torch.testing.assert_close(normalize_adj(a, mode="none", self_loop=False), a)
    # an isolated node stays zero instead of producing inf/NaN
    z = normalize_adj(torch.zeros(3, 3), self_loop=False)
    assert torch.equal(z, torch.zeros(3, 3))


def test_normalize_adj_rectangular():
    a = torch.rand(3, 5)
    with pytest.raises(ValueError, match="normalize_adj: mode='sym' needs a square"):
        normalize_adj(a, mode="sym")
    torch.testing.assert_close(normalize_adj(a, mode="row").sum(dim=1), torch.ones(3))
    assert torch.equal(normalize_adj(a, mode="none"), a)  # no self loop on a bipartite graph


@pytest.mark.parametrize("k", [1, 3, 5])
def test_anchor_mode(k):
    queries, anchors = _points(4, seed=11), _points(9, seed=12)
    p = SparseGraphLearner(k)(queries, anchors=anchors)
    assert p.shape == (4, 9)
    assert ((p > 0).sum(dim=1) == k).all()
    torch.testing.assert_close(p.sum(dim=1), torch.ones(4, dtype=p.dtype))


def test_learner_output_and_repr():
    learner = SparseGraphLearner(3)
    assert repr(learner) == "SparseGraphLearner(k=3, symmetric=True, self_loop=True, norm=sym, detach=False)"
    a = learner(_points(9, seed=13))
    torch.testing.assert_close(a, a.T)
    assert (a.diagonal() > 0).all()
    row = SparseGraphLearner(3, symmetric=False, self_loop=False, norm="row")(_points(9, seed=13))
    assert ((row > 0).sum(dim=1) == 3).all() and (row.diagonal() == 0).all()


def test_precomputed_anchor_norms_give_the_same_distances():
    x, y = _points(5, seed=11), _points(7, seed=12)
    torch.testing.assert_close(pairwise_sq_dists(x, y, y_sq=y.pow(2).sum(1)), pairwise_sq_dists(x, y))
    with pytest.raises(ValueError, match="y_sq must have shape"):
        pairwise_sq_dists(x, y, y_sq=torch.ones(6))


@pytest.mark.parametrize("k", [1, 3, 6])
def test_sparse_neighbours_is_the_dense_graph_in_sparse_form(k):
    d = pairwise_sq_dists(_points(6, seed=13), _points(7, seed=14))
    weights, index = sparse_neighbours(d, k)
    assert weights.shape == index.shape == (6, k)
    assert torch.all(weights[:, :-1] >= weights[:, 1:])  # nearest first
    dense = sparse_graph(d, k)
    torch.testing.assert_close(torch.gather(dense, 1, index), weights)
    torch.testing.assert_close(weights.sum(1), torch.ones_like(weights[:, 0]))


def test_the_learner_returns_the_anchor_graph_sparse_or_dense():
    v, anchors = _points(5, seed=15), _points(9, seed=16)
    learner = SparseGraphLearner(3)
    weights, index = learner(v, anchors, sparse=True)
    dense = learner(v, anchors)
    torch.testing.assert_close(torch.zeros_like(dense).scatter(1, index, weights), dense)
    with pytest.raises(ValueError, match="sparse=True needs anchors"):
        learner(v, sparse=True)


def test_max_masked_gives_the_graph_of_the_mask_without_reading_it():
    # the bound replaces a host synchronisation (int(mask.sum().min())): same graph when it is the true bound
    g = torch.Generator().manual_seed(21)
    dist = torch.rand(6, 9, generator=g)
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[torch.arange(6), torch.arange(6)] = True  # one excluded pair a row (an image's own copy in a bank)
    read = sparse_neighbours(dist, 4, mask=mask)
    bound = sparse_neighbours(dist, 4, mask=mask, max_masked=1)
    torch.testing.assert_close(bound[0], read[0])
    assert torch.equal(bound[1], read[1])
    small = sparse_neighbours(dist[:, :5], 10, mask=mask[:, :5], max_masked=1)  # k clamped to c - 1 = 3
    assert small[0].shape == (6, 3)
