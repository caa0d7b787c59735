"""The differentiable sparse graph head of the CNN2GNN student (docs/method.md section 2).

Pure functions (distances, the closed-form adaptive-neighbours graph, symmetrisation, normalisation) and one thin
module, :class:`SparseGraphLearner`, that chains them: every image is a node and learns its k nearest neighbours.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from . import native
from .config import StudentModelConfig
from .pyg import dense_to_edge_index, to_edge_index
from .select import nearest_k

__all__ = [
    "NORM_MODES",
    "SparseGraphLearner",
    "normalize_adj",
    "pairwise_sq_dists",
    "sparse_graph",
    "sparse_neighbours",
    "symmetrize",
]

NORM_MODES = ("sym", "row", "none")


def _check_k(owner: str, k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
        raise ValueError(f"{owner}: k must be a positive integer, got k={k!r}")
    return int(k)


def _check_matrix(owner: str, name: str, t: object) -> None:
    if not isinstance(t, Tensor) or t.dim() != 2:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{owner}: {name} must be a 2-D tensor, got {shape}")


def pairwise_sq_dists(x: Tensor, y: Tensor | None = None, *, y_sq: Tensor | None = None) -> Tensor:
    r"""Squared Euclidean distances between the rows of ``x`` and the rows of ``y``, with one matmul.

    Part of the graph head of CNN2GNN (https://arxiv.org/abs/2404.14822).

    .. math::
        d_{ij} = \max\left(0,\ \|\mathbf{x}_i\|^2 + \|\mathbf{y}_j\|^2 - 2\,\mathbf{x}_i^\top \mathbf{y}_j\right)

    The clamp removes the small negative values that cancellation produces for (near-)identical rows.
    With ``y=None`` the distances are among the rows of ``x`` and the diagonal is exactly zero.

    Args:
        x: the query points.
        y: the points to measure against; ``None`` means ``x`` itself.
        y_sq: the precomputed :math:`\|\mathbf{y}_j\|^2`, shape :math:`(m,)` (e.g. of a fixed anchor bank).

    Shapes:
        - x: :math:`(n, d)`, y: :math:`(m, d)`
        - output: :math:`(n, m)` (:math:`(n, n)` when ``y`` is ``None``)
    """
    _check_matrix("pairwise_sq_dists", "x", x)
    same = y is None
    if same:
        y = x
    else:
        _check_matrix("pairwise_sq_dists", "y", y)
        if y.shape[1] != x.shape[1]:
            raise ValueError(
                f"pairwise_sq_dists: x and y need the same feature size, got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
    x_sq = x.pow(2).sum(dim=1, keepdim=True)
    if y_sq is None or same:
        y_sq = y.pow(2).sum(dim=1)
    elif y_sq.shape != (y.shape[0],):
        raise ValueError(f"pairwise_sq_dists: y_sq must have shape ({y.shape[0]},), got {tuple(y_sq.shape)}")
    dist = torch.addmm(y_sq.unsqueeze(0), x, y.transpose(0, 1), alpha=-2.0).add_(x_sq).clamp_min_(0.0)
    if same:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        dist = dist.masked_fill(eye, 0.0)
    return dist


def candidate_sq_dists(x: Tensor, y: Tensor, y_sq: Tensor, index: Tensor) -> Tensor:
    r""":math:`\|\mathbf{x}_i - \mathbf{y}_j\|^2` for the candidates ``j = index[i, l]`` of each row (e.g. from a
    nearest-neighbour search), with gradients to both, as :func:`pairwise_sq_dists` computes them.

    Shapes:
        x :math:`(n, d)`, y :math:`(m, d)`, y_sq :math:`(m,)`, index :math:`(n, K)` -> :math:`(n, K)`
    """
    dot = torch.einsum("nd,nkd->nk", x, y[index])
    return (x.pow(2).sum(dim=1, keepdim=True) + y_sq[index] - 2.0 * dot).clamp_min(0.0)


def sparse_neighbours(
    dist: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    mask: Tensor | None = None,
    max_masked: int | None = None,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    r"""Row-stochastic sparse graph with the closed form of "adaptive neighbours" (docs/method.md section 2).

    The graph head of CNN2GNN (https://arxiv.org/abs/2404.14822). Sorting row :math:`i` of the distances
    ascending, :math:`d_{i(1)} \le d_{i(2)} \le \dots`, the weights are

    .. math::
        p_{ij} = \frac{\left(d_{i(k+1)} - d_{ij}\right)_+}{k\, d_{i(k+1)} - \sum_{l=1}^{k} d_{i(l)}},

    the exact minimiser of :math:`\sum_j p_{ij} d_{ij} + \gamma_i \|\mathbf{p}_i\|^2` over the probability simplex
    with :math:`\gamma_i` chosen so that exactly :math:`k` entries are non-zero. Each row has :math:`k` non-zeros
    (fewer only when :math:`d_{i(k)} = d_{i(k+1)}`), sums to 1, gives the nearest node the largest weight, and does
    not change when all distances are scaled by a constant. The weights are piecewise linear in ``dist`` and
    differentiable with respect to it (the ``topk`` values carry the gradient, the indices do not).

    Degenerate and small cases, with :math:`c` candidates per row (:math:`m`, less the pairs excluded by
    ``exclude_self`` and ``mask``; the row with the fewest candidates sets :math:`c` for all rows):

    - a row whose denominator is :math:`\le` ``eps`` (all :math:`k+1` nearest distances equal) gets uniform weights
      :math:`1/k` on its :math:`k` nearest candidates, with finite value and zero gradient;
    - :math:`c \ge k + 1`: as above; :math:`2 \le c \le k`: ``k`` is clamped to :math:`c - 1` (the formula needs
      one candidate beyond the last neighbour), so every row has :math:`c - 1` non-zeros;
    - :math:`c = 1`: the single candidate gets weight 1 (no gradient flows, the weight is constant);
    - :math:`c = 0`: ``ValueError``.

    Args:
        dist: non-negative (squared) distances; row ``i`` holds node ``i``'s distances to the candidates.
        k: neighbours per row, a positive integer.
        exclude_self: mask the diagonal so a node is not its own neighbour (``dist`` must be square).
        mask: bool, shape of ``dist``; ``True`` marks pairs that may not be edges (e.g. an image and its own copy
            in an anchor bank).
        max_masked: at most this many pairs of any row are ``True`` in ``mask``: then :math:`c = m - ` ``max_masked``
            (less one with ``exclude_self``) is known from the shapes, without reading the mask, so the call has no
            data-dependent host synchronisation (as ``exclude_self`` alone, or no mask, never has). Without it a
            ``mask`` is read once on the host to count the candidates.
        eps: rows with a denominator at or below ``eps`` fall back to uniform weights.

    Shapes:
        - dist: :math:`(n, m)`
        - output: ``(weights, index)``, both :math:`(n, k')` with :math:`k' = \min(k, c - 1)` (1 when :math:`c = 1`):
          row :math:`i`'s edge weights, nearest first, summing to 1, and the columns they belong to. This sparse
          form lets a node aggregate its neighbours with a gather of :math:`k'` rows instead of a dense
          :math:`(n, m)` product; :func:`sparse_graph` scatters it into the dense matrix.
    """
    return _adaptive_neighbours("sparse_neighbours", dist, k, exclude_self, mask, eps, max_masked)


def _adaptive_neighbours(
    owner: str, dist: Tensor, k: int, exclude_self: bool, mask: Tensor | None, eps: float, max_masked: int | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`sparse_neighbours`, with error messages naming ``owner`` (the public function called)."""
    _check_matrix(owner, "dist", dist)
    k = _check_k(owner, k)
    n, m = dist.shape
    if exclude_self and n != m:
        raise ValueError(f"{owner}: exclude_self=True needs a square dist, got {tuple(dist.shape)}")
    if mask is not None and mask.shape != dist.shape:
        raise ValueError(f"{owner}: mask must have the shape of dist {tuple(dist.shape)}, got {tuple(mask.shape)}")
    candidates = m - int(exclude_self)
    if mask is not None:
        dist = dist.masked_fill(mask, float("inf"))
        if max_masked is not None:  # known from the shapes: no host synchronisation
            candidates -= max_masked
        elif n:  # the row with the fewest allowed pairs bounds k (e.g. a bank holding the query's own image)
            blocked = mask | _eye(n, dist.device) if exclude_self else mask
            candidates = int((~blocked).sum(dim=1).min())
    if exclude_self:
        dist = dist.masked_fill(_eye(n, dist.device), float("inf"))
    if candidates <= 0:
        raise ValueError(f"{owner}: no candidate neighbours (dist {tuple(dist.shape)}, exclude_self={exclude_self})")
    if candidates == 1:
        nearest = dist.argmin(dim=1, keepdim=True)
        return torch.ones_like(dist[:, :1]), nearest

    k = min(k, candidates - 1)
    if not (torch.is_grad_enabled() and dist.requires_grad) and (found := native.adaptive_weights(dist, k, eps)):
        return found  # no gradient needed: the same weights in one native pass (cnn2gnn/native/weights.c)
    values, index = nearest_k(dist, k + 1)  # ascending; gradients reach the values as through topk
    d_next = values[:, k:]  # d_i(k+1), shape (n, 1)
    gaps = (d_next - values[:, :k]).clamp_min(0.0)  # (d_i(k+1) - d_i(l))_+ for l = 1..k
    denom = gaps.sum(dim=1, keepdim=True)  # = k d_i(k+1) - sum_l d_i(l)
    ok = denom > eps
    weights = torch.where(ok, gaps / torch.where(ok, denom, torch.ones_like(denom)), torch.full_like(gaps, 1.0 / k))
    return weights, index[:, :k]


def _eye(n: int, device) -> Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


def sparse_graph(
    dist: Tensor, k: int, *, exclude_self: bool = False, mask: Tensor | None = None, eps: float = 1e-12
) -> Tensor:
    r"""The dense form of :func:`sparse_neighbours`: the row-stochastic k-neighbour graph as an (n, m) matrix.

    The graph head of CNN2GNN (https://arxiv.org/abs/2404.14822), docs/method.md section 2:
    :math:`p_{ij} = (d_{i(k+1)} - d_{ij})_+ / (k\, d_{i(k+1)} - \sum_{l \le k} d_{i(l)})`. Arguments, degenerate
    cases and gradients as in :func:`sparse_neighbours`.

    Shapes:
        - dist: :math:`(n, m)`
        - output: :math:`(n, m)`, dense, with at most ``k`` non-zeros per row, each row summing to 1
    """
    weights, index = _adaptive_neighbours("sparse_graph", dist, k, exclude_self, mask, eps)
    return torch.zeros_like(dist).scatter(1, index, weights)


def symmetrize(p: Tensor) -> Tensor:
    r"""Symmetrise a square graph: :math:`\mathbf{A} = (\mathbf{P} + \mathbf{P}^\top) / 2` (docs/method.md section 2).

    Part of the graph head of CNN2GNN (https://arxiv.org/abs/2404.14822).

    .. math::
        a_{ij} = \tfrac{1}{2}\left(p_{ij} + p_{ji}\right)

    Args:
        p: a square (weighted) adjacency matrix.

    Shapes:
        - p: :math:`(n, n)`
        - output: :math:`(n, n)`, symmetric
    """
    _check_matrix("symmetrize", "p", p)
    if p.shape[0] != p.shape[1]:
        raise ValueError(f"symmetrize: p must be square, got {tuple(p.shape)}")
    return 0.5 * (p + p.transpose(0, 1))


def normalize_adj(a: Tensor, *, self_loop: bool = True, mode: str = "sym") -> Tensor:
    r"""Normalise a dense adjacency matrix for graph convolution (docs/method.md section 2).

    Part of the graph head of CNN2GNN (https://arxiv.org/abs/2404.14822). With
    :math:`\tilde{\mathbf{A}} = \mathbf{A} + \mathbf{I}` when ``self_loop`` (else :math:`\mathbf{A}`) and
    :math:`\tilde{D}_{ii} = \sum_j \tilde{a}_{ij}` (row degrees):

    .. math::
        \text{sym}: \tilde{\mathbf{D}}^{-1/2} \tilde{\mathbf{A}} \tilde{\mathbf{D}}^{-1/2}, \qquad
        \text{row}: \tilde{\mathbf{D}}^{-1} \tilde{\mathbf{A}}, \qquad
        \text{none}: \tilde{\mathbf{A}}

    Nodes of degree zero keep all-zero rows (and columns for "sym"). A rectangular ``a`` (queries x anchors, a
    bipartite graph) accepts only "row" and "none", and no self loop is added to it.

    Args:
        a: non-negative weighted adjacency; symmetric for "sym" to be the usual GCN normalisation.
        self_loop: add the identity before normalising (square ``a`` only).
        mode: ``"sym"``, ``"row"`` or ``"none"``.

    Shapes:
        - a: :math:`(n, m)`
        - output: :math:`(n, m)`
    """
    _check_matrix("normalize_adj", "a", a)
    if mode not in NORM_MODES:
        raise ValueError(f"normalize_adj: mode must be one of {NORM_MODES}, got mode={mode!r}")
    n, m = a.shape
    if n == m:
        if self_loop:
            a = a + torch.eye(n, dtype=a.dtype, device=a.device)
    elif mode == "sym":
        raise ValueError(f"normalize_adj: mode='sym' needs a square matrix, got {tuple(a.shape)}; use 'row'")
    if mode == "none":
        return a
    deg = a.sum(dim=1)
    pos = deg > 0
    safe = torch.where(pos, deg, torch.ones_like(deg))
    if mode == "row":
        inv = torch.where(pos, safe.reciprocal(), torch.zeros_like(deg))
        return inv.unsqueeze(1) * a
    inv_sqrt = torch.where(pos, safe.rsqrt(), torch.zeros_like(deg))
    return inv_sqrt.unsqueeze(1) * a * inv_sqrt.unsqueeze(0)


class SparseGraphLearner(nn.Module):
    r"""Learn a sparse k-neighbour graph among the images of a batch (docs/method.md sections 2 and 5).

    The graph head of the CNN2GNN student (https://arxiv.org/abs/2404.14822). From node features
    :math:`\mathbf{V}` it builds

    .. math::
        d_{ij} = \|\mathbf{v}_i - \mathbf{v}_j\|^2, \quad
        \mathbf{P} = \mathrm{sparse\_graph}(\mathbf{D}, k), \quad
        \mathbf{A} = \tfrac{1}{2}(\mathbf{P} + \mathbf{P}^\top), \quad
        \hat{\mathbf{A}} = \tilde{\mathbf{D}}^{-1/2} (\mathbf{A} + \mathbf{I}) \tilde{\mathbf{D}}^{-1/2}

    (symmetrisation, self loop and normalisation as configured). Given ``anchors`` it instead connects every row of
    ``v`` to its ``k`` nearest anchors and returns the row-stochastic query-to-anchor graph :math:`\mathbf{P}`
    (no symmetrisation, no self loop, ``norm`` ignored). A single node without anchors has no neighbours:
    :math:`\mathbf{P} = 0`, so the result is :math:`[1]` with a self loop (the GNN acts as an MLP) and :math:`[0]`
    without. Fewer than ``k + 2`` nodes clamp ``k`` as described in :func:`sparse_graph`.

    Args:
        k: neighbours per node (default: the config's ``model.k``, 10).
        symmetric: symmetrise :math:`\mathbf{P}` before normalising.
        self_loop: add :math:`\mathbf{I}` before normalising.
        norm: ``"sym"``, ``"row"`` or ``"none"`` (see :func:`normalize_adj`).
        detach: build the graph from ``v.detach()`` (ablation: no gradient flows through the graph).

    Shapes:
        - v: :math:`(n, d)`; anchors: :math:`(m, d)`
        - output: :math:`(n, n)` without anchors, :math:`(n, m)` with anchors
    """

    def __init__(
        self,
        k: int = StudentModelConfig.k,
        *,
        symmetric: bool = True,
        self_loop: bool = True,
        norm: str = "sym",
        detach: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.k = _check_k(name, k)
        if norm not in NORM_MODES:
            raise ValueError(f"{name}: norm must be one of {NORM_MODES}, got norm={norm!r}")
        self.symmetric = bool(symmetric)
        self.self_loop = bool(self_loop)
        self.norm = norm
        self.detach = bool(detach)

    def forward(
        self,
        v: Tensor,
        anchors: Tensor | None = None,
        exclude: Tensor | None = None,
        *,
        anchors_sq: Tensor | None = None,
        sparse: bool = False,
        max_excluded: int | None = None,
        candidates: Tensor | None = None,
        dist: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Build the graph. Anchors mode only: ``exclude`` (bool, (n, m)) marks pairs that may not be edges, e.g. a
        training image and its own copy in the anchor bank (``max_excluded``: at most that many per row, which
        spares a host synchronisation, see :func:`sparse_neighbours`); ``anchors_sq`` (m,) are the anchors'
        precomputed squared norms (a fixed bank needs them once); ``sparse=True`` returns the graph as
        ``(weights, index)``, each (n, k), from :func:`sparse_neighbours`, so that a node can gather its k anchors
        instead of multiplying by a dense (n, m) matrix. ``candidates`` (n, K): each row's neighbours are taken among
        these anchor positions only (a search's k + 1 nearest or more; ``exclude`` then (n, K), at most one a row),
        their distances recomputed with gradients, or the search's ``dist`` (n, K) used when none is needed; the
        result is ``(weights, positions)`` as ``sparse=True`` gives for exact candidates."""
        name = type(self).__name__
        _check_matrix(name, "v", v)
        if self.detach:
            v = v.detach()
            anchors = None if anchors is None else anchors.detach()
            anchors_sq = None if anchors_sq is None else anchors_sq.detach()
        if anchors is not None:
            _check_matrix(name, "anchors", anchors)
            if anchors.shape[0] == 0:
                raise ValueError(f"{name}: anchors is empty, got {tuple(anchors.shape)}")
            if candidates is not None:
                if dist is None:
                    dist = candidate_sq_dists(v, anchors, anchors_sq, candidates)
                most = None if exclude is None else 1
                weights, col = sparse_neighbours(dist, self.k, mask=exclude, max_masked=most)
                return weights, candidates.gather(1, col)
            dist = pairwise_sq_dists(v, anchors, y_sq=anchors_sq)
            if sparse:
                return sparse_neighbours(dist, self.k, mask=exclude, max_masked=max_excluded)
            return sparse_graph(dist, self.k, mask=exclude)
        if sparse:
            raise ValueError(f"{name}: sparse=True needs anchors (the batch graph is symmetrised and normalised)")
        n = v.shape[0]
        if n == 0:
            raise ValueError(f"{name}: v has no rows, got {tuple(v.shape)}")
        # a single node has no neighbours: only its self loop (if any) is left
        p = v.new_zeros(1, 1) if n == 1 else sparse_graph(pairwise_sq_dists(v), self.k, exclude_self=True)
        if self.symmetric:
            p = symmetrize(p)
        return normalize_adj(p, self_loop=self.self_loop, mode=self.norm)

    def edge_index(
        self,
        v: Tensor,
        anchors: Tensor | None = None,
        exclude: Tensor | None = None,
        *,
        anchors_sq: Tensor | None = None,
        max_excluded: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The graph of :meth:`forward` as PyTorch Geometric's ``(edge_index, edge_weight)``, edges source -> target
        (:mod:`cnn2gnn.pyg`). Without anchors: the non-zeros of the (n, n) matrix, self loops included. With
        anchors: the n k edges anchor -> query of ``sparse=True``, a bipartite graph of size (m, n) whose sources
        index ``anchors``: ``conv((x_anchors, x), edge_index, edge_weight, size=(m, n))``."""
        if anchors is None:
            return dense_to_edge_index(self(v))
        return to_edge_index(*self(v, anchors, exclude, anchors_sq=anchors_sq, sparse=True, max_excluded=max_excluded))

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, symmetric={self.symmetric}, self_loop={self.self_loop}, norm={self.norm}, "
            f"detach={self.detach}"
        )
