"""The GNN student's layer: a dense graph convolution (METHOD.md section 3).

``GraphConv`` computes one propagation step ``A @ (x @ W) + b`` of the two-layer student ``Z = Â ReLU(Â X W1) W2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..graph import SparseGraphLearner
from .embed import make_embedding


class GraphConv(nn.Module):
    r"""Dense graph convolution of the CNN2GNN student (https://arxiv.org/abs/2404.14822), GCN-style.

    .. math::
        \mathbf{X}' = \hat{\mathbf{A}} \left(\mathbf{X} \mathbf{W}\right) + \mathbf{b}

    :math:`\hat{\mathbf{A}}` is given (e.g. from :class:`cnn2gnn.graph.SparseGraphLearner`); the layer does not
    normalise it. The projection :math:`\mathbf{X}\mathbf{W}` is exposed as :meth:`project` (the student learns its
    graph in that space) and the propagation as :meth:`propagate`, so ``forward(x, adj)`` equals
    ``propagate(project(x), adj)``. A rectangular ``adj`` (queries x anchors) propagates anchor features to
    queries. ``W`` has Glorot-uniform init and ``b`` starts at zero, as in Kipf & Welling's GCN.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn the additive bias :math:`\mathbf{b}`.

    Shapes:
        - x: :math:`(m, F_{in})`; adj: :math:`(n, m)` (usually :math:`m = n`), dense or ``torch.sparse``
        - output: :math:`(n, F_{out})`
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {arg}={value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.in_features + self.out_features))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def project(self, x: Tensor) -> Tensor:
        """The feature transform ``x @ W``, shape (m, out_features)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: x must have shape (m, {self.in_features}), got {tuple(x.shape)}")
        return x @ self.weight

    def propagate(self, h: Tensor, adj: Tensor) -> Tensor:
        """The aggregation ``adj @ h + b`` of already projected features ``h`` (m, out_features)."""
        if adj.dim() != 2 or adj.shape[1] != h.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: adj must have shape (n, {h.shape[0]}) for {h.shape[0]} input nodes, "
                f"got {tuple(adj.shape)}"
            )
        out = adj @ h
        if self.bias is not None:
            out = out + self.bias
        return out

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return self.propagate(self.project(x), adj)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


# --------------------------------------------------------------------------------------------------------------
# The student (METHOD.md sections 3 and 5).

AGGREGATES = ("gcn", "sage", "none")
GRAPH_SPACES = ("proj", "head", "pixels")


class GNNStudent(nn.Module):
    r"""The two-layer GNN student of CNN2GNN (https://arxiv.org/abs/2404.14822) with its sparse graph head.

    Nodes are flattened images :math:`\mathbf{x}_i`; the graph :math:`\mathbf{P}` (:func:`cnn2gnn.graph.sparse_graph`,
    k neighbours, rows summing to 1) is rebuilt at every forward pass from distances in a learned space
    :math:`\mathbf{v}_i` (``graph_space``: ``proj`` = the first layer's projection, ``head`` = a separate linear
    head, ``pixels`` = the input). ``aggregate`` picks the layer:

    .. math::
        \text{gcn:}\quad \mathbf{H} = \mathrm{ReLU}(\hat{\mathbf{A}} \mathbf{X} \mathbf{W}_1), \quad
        \mathbf{Z} = \hat{\mathbf{A}} \mathbf{H} \mathbf{W}_2, \qquad
        \hat{\mathbf{A}} = \tilde{\mathbf{D}}^{-1/2}(\tfrac{1}{2}(\mathbf{P} + \mathbf{P}^\top) + \mathbf{I})
        \tilde{\mathbf{D}}^{-1/2}

        \text{sage:}\quad \mathbf{H} = \mathrm{ReLU}(\mathbf{X}\mathbf{W}_1 + \mathbf{P}\mathbf{X}\mathbf{U}_1),
        \quad \mathbf{Z} = \mathbf{H}\mathbf{W}_2 + \mathbf{P}\mathbf{H}\mathbf{U}_2
        \; [+\, \mathbf{P}\mathbf{Y}\mathbf{L}]

    and ``none`` is the same-width MLP (no graph), the baseline. With ``anchors`` (METHOD.md section 5) the
    neighbours of a node are its k nearest among a fixed bank of training images stored in the model: the bank's
    own hidden states come from the same first layer over the bank's graph, and with ``label_messages`` the bank's
    one-hot labels :math:`\mathbf{Y}` are propagated into the logits through a learned :math:`\mathbf{L}` (a
    learned-metric k-NN vote beside the GNN). Under the anchors policy predictions do not depend on batch-mates.

    Args:
        in_features: flattened image size D.
        num_classes: C.
        hidden: width h of the hidden layer.
        k: neighbours per node.
        aggregate: ``gcn`` | ``sage`` | ``none``.
        graph_space: ``proj`` | ``head`` | ``pixels``.
        graph_dim: width of the ``head`` graph space.
        dropout: dropout on the input and the hidden layer.
        detach_graph: no gradient through the graph (ablation).
        self_loop: add I before normalising (gcn).
        label_messages: propagate anchor labels into the logits (anchors only).
        zero_init: start the neighbour weights (sage) and the label gain at zero, i.e. as the same-width MLP.
        embed: ``none`` (the layers see pixels) | ``randconv`` (they see fixed random-convolution features
            :math:`\phi(\mathbf{x})`, :class:`cnn2gnn.models.embed.RandomConvEmbedding`; no trained parameters, so
            still two learned layers; the MLP baseline with the same ``embed`` sees the same features) | ``patch``
            (a learned patch embedding, :class:`cnn2gnn.models.embed.PatchEmbedding`: a third learned layer, trained
            with the rest). The graph's ``pixels`` space is then :math:`\phi(\mathbf{x})`; the anchor bank still
            stores pixels.
        embed_filters, embed_kernel, embed_pool: the random filters' number and side, and the pooling cell
            (``patch``: values per patch and patch side; no pooling).
        image_shape: (C, H, W) of the images; required when ``embed`` is not ``none``.

    Shapes:
        x: (n, D) or (n, C_in, H, W) -> logits (n, num_classes)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: int = 512,
        k: int = 10,
        aggregate: str = "sage",
        graph_space: str = "head",
        graph_dim: int = 64,
        dropout: float = 0.3,
        input_dropout: float = 0.0,
        detach_graph: bool = False,
        self_loop: bool = True,
        label_messages: bool = False,
        zero_init: bool = False,
        embed: str = "none",
        embed_filters: int = 64,
        embed_kernel: int = 5,
        embed_pool: int = 4,
        image_shape: tuple[int, int, int] | list[int] | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if aggregate not in AGGREGATES:
            raise ValueError(f"{name}: aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if graph_space not in GRAPH_SPACES:
            raise ValueError(f"{name}: graph_space must be one of {GRAPH_SPACES}, got {graph_space!r}")
        self.in_features, self.num_classes, self.hidden = in_features, num_classes, hidden
        self.aggregate, self.graph_space, self.label_messages = aggregate, graph_space, label_messages
        self.embed_name = embed
        if image_shape is not None and math.prod(image_shape) != in_features:
            raise ValueError(f"{name}: image_shape {tuple(image_shape)} does not have in_features={in_features} values")
        try:
            self.embed = make_embedding(embed, image_shape, filters=embed_filters, kernel=embed_kernel, pool=embed_pool)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        features = in_features if self.embed is None else self.embed.out_features
        self.lin1 = nn.Linear(features, hidden)
        self.lin2 = nn.Linear(hidden, num_classes)
        self.drop = nn.Dropout(dropout)
        self.in_drop = nn.Dropout(input_dropout)
        if aggregate == "sage":
            self.nbr1 = nn.Linear(features, hidden, bias=False)
            self.nbr2 = nn.Linear(hidden, num_classes, bias=False)
            if zero_init:  # the student starts as the same-width MLP and learns how much to use its neighbours
                nn.init.zeros_(self.nbr1.weight)
                nn.init.zeros_(self.nbr2.weight)
        if aggregate != "none":
            norm, sym = ("sym", True) if aggregate == "gcn" else ("none", False)
            self.graph = SparseGraphLearner(
                k, symmetric=sym, self_loop=self_loop and aggregate == "gcn", norm=norm, detach=detach_graph
            )
            if graph_space == "head":
                self.graph_head = nn.Linear(features, graph_dim, bias=False)
        if label_messages:
            self.label_gain = nn.Linear(num_classes, num_classes, bias=False)
            nn.init.zeros_(self.label_gain.weight) if zero_init else nn.init.eye_(self.label_gain.weight)
        # the anchor bank (empty until `set_anchors`): pixels, labels and positions in the training split
        self.register_buffer("anchor_x", torch.empty(0, in_features))
        self.register_buffer("anchor_y", torch.empty(0, dtype=torch.long))
        self.register_buffer("anchor_index", torch.empty(0, dtype=torch.long))
        self._cache: dict[str, Tensor] | None = None

    # -- anchors -------------------------------------------------------------------------------------------
    @property
    def has_anchors(self) -> bool:
        return self.anchor_x.shape[0] > 0

    def set_anchors(self, x: Tensor, y: Tensor, index: Tensor) -> None:
        """Store a bank of m training images (flattened or not), their labels and their positions in the split."""
        # clone: the bank must own its storage (aliased buffers would be overwritten by load_state_dict)
        self.anchor_x = x.reshape(x.shape[0], -1).to(self.lin1.weight).clone()
        self.anchor_y = y.to(self.anchor_x.device, torch.long).clone()
        self.anchor_index = index.to(self.anchor_x.device, torch.long).clone()
        self._cache = None

    def train(self, mode: bool = True) -> GNNStudent:
        self._cache = None
        return super().train(mode)

    def _features(self, x: Tensor) -> Tensor:
        """The input rows the learned layers see: flattened pixels, or their embedding (``embed``)."""
        x = x.reshape(x.shape[0], -1)
        return x if self.embed is None else self.embed(x)

    def _space(self, x: Tensor, u: Tensor) -> Tensor:
        if self.graph_space == "proj":
            return u
        if self.graph_space == "head":
            return self.graph_head(x)
        return x

    def _anchor_states(self) -> dict[str, Tensor]:
        """The bank's graph-space positions and messages; cached in eval mode (computed once, then reused)."""
        if self._cache is not None and not self.training:
            return self._cache
        xa = self.in_drop(self._features(self.anchor_x))
        ua = self.lin1(xa)
        va = self._space(xa, ua)
        if self.aggregate == "sage":
            wa = self.nbr1(xa)
            pa = self.graph(va, va, exclude=torch.eye(len(xa), dtype=torch.bool, device=xa.device))
            ha = self.drop(torch.relu(ua + pa @ wa))
            msg2 = self.nbr2(ha)
        else:  # gcn over the bipartite graph: half self, half neighbours (D^-1 (P + I) for row-stochastic P)
            wa = ua - self.lin1.bias
            pa = self.graph(va, va, exclude=torch.eye(len(xa), dtype=torch.bool, device=xa.device))
            ha = self.drop(torch.relu(0.5 * (wa + pa @ wa) + self.lin1.bias))
            msg2 = ha @ self.lin2.weight.T
        if self.label_messages:
            msg2 = msg2 + self.label_gain(nn.functional.one_hot(self.anchor_y, self.num_classes).to(msg2))
        states = {"v": va, "v_sq": va.pow(2).sum(dim=1), "w": wa, "msg2": msg2}
        if not self.training:
            self._cache = {k: t.detach() for k, t in states.items()}
        return states

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, *, graph: str = "batch", index: Tensor | None = None) -> Tensor:
        """Logits for the nodes ``x``; ``graph`` is ``batch`` (a graph among the rows of x) or ``anchors`` (each
        row linked to its k nearest anchors). ``index`` (positions of x in the training split) keeps a training
        image from being its own anchor."""
        x = self.in_drop(self._features(x))
        u = self.lin1(x)
        if self.aggregate == "none":
            return self.lin2(self.drop(torch.relu(u)))
        if graph == "anchors":
            return self._forward_anchors(x, u, index)
        if graph != "batch":
            raise ValueError(f"{type(self).__name__}: graph must be 'batch' or 'anchors', got {graph!r}")
        v = self._space(x, u)
        if self.aggregate == "sage":
            p = self.graph(v)
            h = self.drop(torch.relu(u + p @ self.nbr1(x)))
            return self.lin2(h) + p @ self.nbr2(h)
        a = self.graph(v)
        b1 = self.lin1.bias
        h = self.drop(torch.relu(a @ (u - b1) + b1))
        return a @ (h @ self.lin2.weight.T) + self.lin2.bias

    def anchor_edges(self, x: Tensor, *, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The anchors graph of the images ``x`` in sparse form: edge weights (n, k), largest first, and the
        positions of those anchors in the bank (n, k). ``index`` as in :meth:`forward`."""
        if not self.has_anchors:
            raise ValueError(f"{type(self).__name__}: graph='anchors' needs an anchor bank (set_anchors)")
        if self.aggregate == "none":
            raise ValueError(f"{type(self).__name__}: aggregate='none' (an MLP) has no graph")
        x = self._features(x)
        return self._edges(x, self.lin1(x), index, self._anchor_states())

    def _edges(self, x: Tensor, u: Tensor, index: Tensor | None, bank: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        exclude = None
        if index is not None and self.training:
            exclude = index.to(self.anchor_index.device)[:, None] == self.anchor_index[None, :]
        return self.graph(self._space(x, u), bank["v"], exclude, anchors_sq=bank["v_sq"], sparse=True)

    def _forward_anchors(self, x: Tensor, u: Tensor, index: Tensor | None) -> Tensor:
        if not self.has_anchors:
            raise ValueError(f"{type(self).__name__}: graph='anchors' needs an anchor bank (set_anchors)")
        bank = self._anchor_states()
        weight, nbr = self._edges(x, u, index, bank)

        def gather(messages: Tensor) -> Tensor:
            # sum_j p_ij m_j over the k non-zero edges: a weighted sum of k rows per image (one fused kernel that
            # does not materialise the (n, k, f) neighbours), not a dense (n, m) product
            return nn.functional.embedding_bag(nbr, messages, per_sample_weights=weight, mode="sum")

        if self.aggregate == "sage":
            h = self.drop(torch.relu(u + gather(bank["w"])))
            return self.lin2(h) + gather(bank["msg2"])
        b1 = self.lin1.bias
        h = self.drop(torch.relu(0.5 * ((u - b1) + gather(bank["w"])) + b1))
        return 0.5 * (h @ self.lin2.weight.T + gather(bank["msg2"])) + self.lin2.bias

    def extra_repr(self) -> str:
        return (
            f"aggregate={self.aggregate}, graph_space={self.graph_space}, anchors={self.anchor_x.shape[0]}, "
            f"label_messages={self.label_messages}, embed={self.embed_name}"
        )
