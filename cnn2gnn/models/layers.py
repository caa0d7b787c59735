"""Graph convolution layers of the CNN2GNN student (docs/method.md section 3): one module per propagation rule.

Each layer takes its graph in either of two forms: a dense matrix ``(n, m)`` (the batch graph, or a bank's graph
of its own images), multiplied as ``P @ messages``; or *edges* ``(weight, index)``, each ``(n, k)``, from
:func:`cnn2gnn.graph.sparse_neighbours` (the anchors graph), gathered as a weighted sum of ``k`` rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LAYERS", "Edges", "GCNLayer", "Graph", "SAGELayer", "gather", "propagate"]

Edges = tuple[Tensor, Tensor]  # (weight, index), each (n, k): row i's edge weights and the source rows they point to
Graph = Tensor | Edges


def gather(edges: Edges, messages: Tensor) -> Tensor:
    r"""Aggregate ``messages`` along sparse edges: :math:`\mathbf{o}_i = \sum_{l=1}^{k} w_{il}\, \mathbf{m}_{j_{il}}`.

    One fused kernel (``embedding_bag``) that does not materialise the ``(n, k, f)`` neighbour rows, the sparse
    equivalent of ``P @ messages`` for the row-sparse ``P`` that ``edges`` describe.

    Shapes:
        - edges: weight :math:`(n, k)`, index :math:`(n, k)` (integer, into the rows of ``messages``)
        - messages: :math:`(m, f)`
        - output: :math:`(n, f)`
    """
    weight, index = edges
    weight = weight.to(messages.dtype)  # under autocast the weights may come in another precision
    if torch.compiler.is_exporting():  # ONNX has no embedding_bag: k gathered rows and a weighted sum export anywhere
        return (messages[index] * weight.unsqueeze(-1)).sum(dim=1)
    return F.embedding_bag(index, messages, per_sample_weights=weight, mode="sum")


def propagate(graph: Graph, messages: Tensor) -> Tensor:
    """``graph @ messages`` for a dense graph, :func:`gather` for edges ``(weight, index)``."""
    return gather(graph, messages) if isinstance(graph, tuple) else graph @ messages


def _check_sizes(owner: str, in_features: int, out_features: int) -> None:
    for arg, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}: {arg} must be a positive integer, got {arg}={value!r}")


class GCNLayer(nn.Module):
    r"""The paper's propagation rule (Kipf & Welling's GCN), as the CNN2GNN student uses it
    (https://arxiv.org/abs/2404.14822, docs/method.md section 3).

    .. math::
        \text{dense:}\quad \mathbf{X}' = \hat{\mathbf{A}}\, \mathbf{M} + \mathbf{b}, \qquad
        \text{edges:}\quad \mathbf{x}'_i = \tfrac{1}{2}\Big(\mathbf{x}_i \mathbf{W}
            + \sum_{l} p_{il}\, \mathbf{m}_{j_{il}}\Big) + \mathbf{b}, \qquad \mathbf{M} = \mathbf{X}_{src} \mathbf{W}

    The dense path takes the graph already normalised (e.g. :math:`\tilde{\mathbf{D}}^{-1/2}(\mathbf{A} +
    \mathbf{I})\tilde{\mathbf{D}}^{-1/2}` from :class:`cnn2gnn.graph.SparseGraphLearner`). The edges path is the
    row-normalised graph with a self loop, :math:`\tilde{\mathbf{D}}^{-1}(\mathbf{P} + \mathbf{I})`, for a
    row-stochastic :math:`\mathbf{P}` (rows summing to 1, as :func:`~cnn2gnn.graph.sparse_neighbours` gives): half
    the node itself, half its neighbours. The messages :math:`\mathbf{M}` of the source nodes are computed from
    ``x`` (a square graph) or passed in (precomputed, e.g. an anchor bank's). ``W`` and ``b`` are initialised as
    ``nn.Linear`` initialises them.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.

    Shapes:
        - x: :math:`(n, F_{in})`; graph: :math:`(n, m)` dense or edges :math:`(n, k)`; messages: :math:`(m, F_{out})`
        - output: :math:`(n, F_{out})`
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.lin = nn.Linear(in_features, out_features)

    def project(self, x: Tensor) -> Tensor:
        """:math:`\\mathbf{x}\\mathbf{W} + \\mathbf{b}`, the layer's affine map (its graph space ``proj``)."""
        return self.lin(x)

    def message(self, x: Tensor) -> Tensor:
        """What a node sends its neighbours: :math:`\\mathbf{x}\\mathbf{W}` (the bias is added once, after)."""
        return F.linear(x, self.lin.weight)

    def forward(self, x: Tensor, graph: Graph, messages: Tensor | None = None) -> Tensor:
        if isinstance(graph, tuple):
            own = self.message(x)
            return 0.5 * (own + gather(graph, own if messages is None else messages)) + self.lin.bias
        if messages is None:
            messages = self.message(x)
        if graph.dim() != 2 or graph.shape[1] != messages.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: graph must have shape (n, {messages.shape[0]}) for {messages.shape[0]} "
                f"source nodes, got {tuple(graph.shape)}"
            )
        return graph @ messages + self.lin.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


class SAGELayer(nn.Module):
    r"""The SAGE-style rule of the CNN2GNN student: own and neighbour terms with separate weights (docs/method.md
    section 3; GraphSAGE, Hamilton et al. 2017, with the graph's edge weights; PyG's ``GraphConv`` computes the same).

    .. math::
        \mathbf{x}'_i = \mathbf{x}_i \mathbf{W} + \mathbf{b} + \sum_j p_{ij}\, \mathbf{m}_j, \qquad
        \mathbf{m}_j = \mathbf{x}_j \mathbf{U}

    with :math:`p_{ij}` a dense graph's entries or the edges' weights. With ``zero_init`` the neighbour weights
    :math:`\mathbf{U}` start at zero, so the layer starts as a plain linear layer (the MLP) and learns how much to use
    its neighbours. The messages of the source nodes are computed from ``x`` (a square graph) or passed in.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        zero_init: start :math:`\mathbf{U}` at zero.

    Shapes:
        - x: :math:`(n, F_{in})`; graph: :math:`(n, m)` dense or edges :math:`(n, k)`; messages: :math:`(m, F_{out})`
        - output: :math:`(n, F_{out})`
    """

    def __init__(self, in_features: int, out_features: int, *, zero_init: bool = False) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.lin = nn.Linear(in_features, out_features)  # W, b: the node's own term
        self.nbr = nn.Linear(in_features, out_features, bias=False)  # U: the neighbours' term
        if zero_init:
            nn.init.zeros_(self.nbr.weight)

    def project(self, x: Tensor) -> Tensor:
        """:math:`\\mathbf{x}\\mathbf{W} + \\mathbf{b}`, the node's own term (its graph space ``proj``)."""
        return self.lin(x)

    def message(self, x: Tensor) -> Tensor:
        """What a node sends its neighbours: :math:`\\mathbf{x}\\mathbf{U}`."""
        return self.nbr(x)

    def forward(self, x: Tensor, graph: Graph, messages: Tensor | None = None) -> Tensor:
        if messages is None:
            messages = self.message(x)
        if not isinstance(graph, tuple) and (graph.dim() != 2 or graph.shape[1] != messages.shape[0]):
            raise ValueError(
                f"{type(self).__name__}: graph must have shape (n, {messages.shape[0]}) for {messages.shape[0]} "
                f"source nodes, got {tuple(graph.shape)}"
            )
        return self.lin(x) + propagate(graph, messages)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


LAYERS: dict[str, type[nn.Module]] = {"gcn": GCNLayer, "sage": SAGELayer}
