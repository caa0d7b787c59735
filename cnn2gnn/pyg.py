"""The graph head's graphs in PyTorch Geometric's form ``(edge_index, edge_weight)`` (docs/method.md section 2).

Plain tensors: this module does not import ``torch_geometric``. Both functions follow PyG's default
``flow="source_to_target"``: an entry :math:`p_{ij}` (node ``i`` aggregates node ``j``) is the edge ``j -> i``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dense_to_edge_index", "to_edge_index"]


def to_edge_index(weights: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    r"""The sparse graph ``(weights, index)`` of :func:`cnn2gnn.graph.sparse_neighbours` as PyG edges.

    .. math::
        \mathbf{o}_i = \sum_{l=1}^{k} w_{il}\, \mathbf{m}_{j_{il}}
        \quad\Longleftrightarrow\quad \text{edges } j_{il} \to i \text{ with weight } w_{il}

    Every row gives its ``k`` edges, zero weights included (a tie at the ``k``-th distance), so the result always
    has :math:`E = nk` edges, ordered by target (row ``i``'s edges are ``i k .. i k + k - 1``), and no host
    synchronisation. The sources index the ``m`` columns of the distances: for a query-to-anchor graph they are
    anchors and the targets queries, a bipartite graph of size :math:`(m, n)` in PyG's ``(num_src, num_dst)`` order
    (call a layer as ``conv((x_anchors, x_queries), edge_index, edge_weight, size=(m, n))``).

    Args:
        weights: row ``i``'s edge weights.
        index: the source (column) each weight belongs to.

    Shapes:
        - weights, index: :math:`(n, k)`
        - output: ``edge_index`` :math:`(2, nk)` (long; row 0 sources, row 1 targets), ``edge_weight`` :math:`(nk,)`
    """
    if weights.dim() != 2 or weights.shape != index.shape:
        raise ValueError(
            f"to_edge_index: weights and index must be 2-D of the same shape, got {tuple(weights.shape)} and "
            f"{tuple(index.shape)}"
        )
    n, k = index.shape
    target = torch.arange(n, device=index.device).repeat_interleave(k)
    return torch.stack([index.reshape(-1).long(), target]), weights.reshape(-1)


def dense_to_edge_index(a: Tensor) -> tuple[Tensor, Tensor]:
    r"""A dense graph (e.g. the batch graph's normalised :math:`\hat{\mathbf{A}}`) as PyG edges: one edge
    :math:`j \to i` of weight :math:`a_{ij}` per non-zero entry, self loops (the diagonal) included.

    ``a @ messages`` equals PyG's ``"add"`` aggregation of ``messages`` over these edges. The edges are ordered by
    target; finding the non-zeros synchronises with the host. A rectangular ``a`` :math:`(n, m)` is a bipartite
    graph of size :math:`(m, n)` (sources are its columns). Gradients flow to ``edge_weight``, not to the pattern.

    Shapes:
        - a: :math:`(n, m)`
        - output: ``edge_index`` :math:`(2, E)` (long; row 0 sources, row 1 targets), ``edge_weight`` :math:`(E,)`
    """
    if not isinstance(a, Tensor) or a.dim() != 2:
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(f"dense_to_edge_index: a must be a 2-D tensor, got {shape}")
    target, source = a.nonzero().T
    return torch.stack([source, target]), a[target, source]
