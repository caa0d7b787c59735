"""The two-layer GNN student of CNN2GNN (docs/method.md sections 3 and 5): an input embedding, the sparse graph head,
two graph layers of one propagation rule (models/layers.py) and, for the ``anchors`` policy, an anchor bank
(models/bank.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import StudentModelConfig
from ..graph import SparseGraphLearner
from .bank import AnchorBank
from .embed import input_features, student_embedding
from .fastpath import anchors_logits
from .layers import LAYERS, Edges, SAGELayer

__all__ = ["GNNStudent", "Gather", "input_features"]

Gather = Callable[[Tensor], tuple[Tensor, slice]]  # per-process rows -> (all processes' rows, this process's slice)


class GNNStudent(nn.Module):
    r"""The two-layer GNN student of CNN2GNN (https://arxiv.org/abs/2404.14822) with its sparse graph head.

    Nodes are flattened images :math:`\mathbf{x}_i` (or their embedding :math:`\phi(\mathbf{x}_i)`, ``embed``); the
    graph :math:`\mathbf{P}` (:class:`cnn2gnn.graph.SparseGraphLearner`, k neighbours, rows summing to 1) is rebuilt
    at every forward pass from distances in a space :math:`\mathbf{v}_i` (``graph_space``: ``head`` = a separate
    linear head, ``proj`` = the first layer's affine map, ``pixels`` = the input). The two layers follow one rule
    (``aggregate``, :mod:`cnn2gnn.models.layers`):

    .. math::
        \text{gcn:}\quad \mathbf{H} = \mathrm{ReLU}(\hat{\mathbf{A}} \mathbf{X} \mathbf{W}_1 + \mathbf{b}_1), \quad
        \mathbf{Z} = \hat{\mathbf{A}} \mathbf{H} \mathbf{W}_2 + \mathbf{b}_2, \qquad
        \hat{\mathbf{A}} = \tilde{\mathbf{D}}^{-1/2}(\tfrac{1}{2}(\mathbf{P} + \mathbf{P}^\top) + \mathbf{I})
        \tilde{\mathbf{D}}^{-1/2}

        \text{sage:}\quad \mathbf{H} = \mathrm{ReLU}(\mathbf{X}\mathbf{W}_1 + \mathbf{b}_1 + \mathbf{P}\mathbf{X}
        \mathbf{U}_1), \quad \mathbf{Z} = \mathbf{H}\mathbf{W}_2 + \mathbf{b}_2 + \mathbf{P}\mathbf{H}\mathbf{U}_2
        \; [+\, \mathbf{P}\mathbf{Y}\mathbf{L}]

    Inference policies (:mod:`cnn2gnn.policy`): ``batch`` builds the graph among the rows of ``x``; ``anchors``
    links each row to its k nearest images of the anchor bank (:class:`~cnn2gnn.models.bank.AnchorBank`, present
    when the model has one), whose own hidden states come from the same first layer over the bank's graph, so a
    prediction does not depend on the other rows. With ``label_messages`` the anchors' one-hot labels
    :math:`\mathbf{Y}` enter the logits through a learned :math:`\mathbf{L}` (a learned-metric k-NN vote). The
    same-width MLP baseline is :class:`cnn2gnn.models.mlp.MLPStudent`.

    Args:
        in_features: flattened image size D.
        num_classes: C.
        cfg: the model section of the student config (its keys and defaults are documented there).
        image_shape: (C, H, W) of the images; required when ``cfg.embed`` is not ``none``.
        bank_size: m > 0 gives the student an anchor bank of m images (filled by :meth:`set_bank` or by loading
            weights); 0 = no bank, ``batch`` policy only.

    Shapes:
        x: (n, D) or (n, C_in, H, W) -> logits (n, num_classes)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        cfg: StudentModelConfig,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        bank_size: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if cfg.aggregate not in LAYERS:
            raise ValueError(f"{name}: aggregate must be one of {tuple(LAYERS)}, got {cfg.aggregate!r}")
        self.in_features, self.num_classes, self.cfg = in_features, num_classes, cfg
        self.embed, features = student_embedding(name, cfg, image_shape, in_features)
        gcn = cfg.aggregate == "gcn"
        self.graph = SparseGraphLearner(
            cfg.k,
            symmetric=gcn,
            self_loop=cfg.self_loop and gcn,
            norm="sym" if gcn else "none",
            detach=cfg.detach_graph,
        )
        # the layers' own initialisation is replaced by reset_parameters (which keeps the order of cnn2gnn 0.1)
        with torch.random.fork_rng(devices=[]):
            layer = LAYERS[cfg.aggregate]
            self.conv1 = layer(features, cfg.hidden)
            self.conv2 = layer(cfg.hidden, num_classes)
            self.graph_head = nn.Linear(features, cfg.graph_dim, bias=False) if cfg.graph_space == "head" else None
            self.label_gain = nn.Linear(num_classes, num_classes, bias=False) if cfg.label_messages else None
        self.drop = nn.Dropout(cfg.dropout)
        self.in_drop = nn.Dropout(cfg.input_dropout)
        self.bank = AnchorBank(bank_size, in_features) if bank_size else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the weights, drawing in the order of cnn2gnn 0.1 (first layer, second layer, neighbour weights,
        graph head), so that a seeded run gives the weights it always gave."""
        self.conv1.lin.reset_parameters()
        self.conv2.lin.reset_parameters()
        for conv in (self.conv1, self.conv2):
            if isinstance(conv, SAGELayer):
                conv.nbr.reset_parameters()
                if self.cfg.zero_init:  # the student starts as the same-width MLP
                    nn.init.zeros_(conv.nbr.weight)
        if self.graph_head is not None:
            self.graph_head.reset_parameters()
        if self.label_gain is not None:
            (nn.init.zeros_ if self.cfg.zero_init else nn.init.eye_)(self.label_gain.weight)

    @property
    def policies(self) -> tuple[str, ...]:
        """The inference policies this student supports (see :mod:`cnn2gnn.policy`)."""
        return ("batch", "anchors") if self.bank is not None else ("batch",)

    def set_bank(self, images: Tensor, labels: Tensor, index: Tensor) -> None:
        """Give the student an anchor bank of ``len(images)`` training images (replacing any it had)."""
        weight = self.conv1.lin.weight
        if self.bank is None or len(self.bank) != len(images):
            self.bank = AnchorBank(len(images), self.in_features).to(weight.device)
        self.bank.set(images.to(weight), labels, index)

    def space(self, x: Tensor) -> Tensor:
        """The graph space :math:`\\mathbf{v}` of the input rows ``x`` (after the embedding)."""
        if self.graph_head is not None:
            return self.graph_head(x)
        return self.conv1.project(x) if self.cfg.graph_space == "proj" else x

    # -- forward -------------------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, *, graph: str = "batch", index: Tensor | None = None, gather: Gather | None = None
    ) -> Tensor:
        """Logits for the images ``x`` under the inference policy ``graph`` (``batch`` | ``anchors``). ``index``
        (positions of ``x`` in the training split) keeps a training image from being its own anchor.

        ``gather`` (batch policy, several processes): ``gather(t) -> (t_global, rows)`` concatenates a per-process
        tensor over all processes, carrying gradients, and says which rows are this process's. The graph is then
        built over the global batch, each process computing its own rows, so the batch graph means the same at any
        number of processes (the anchors policy needs nothing: every process holds the same bank)."""
        if graph == "anchors" and (fast := anchors_logits(self, x)) is not None:
            return fast  # eval mode, no gradient: the same logits with fewer Python steps (models/fastpath.py)
        x = self.in_drop(input_features(x, self.embed))
        if graph == "anchors":
            bank = self._bank_states()
            edges = self._edges(x, index, bank)
            h = self.drop(torch.relu(self.conv1(x, edges, bank["msg1"])))
            return self.conv2(h, edges, bank["msg2"])
        if graph != "batch":
            raise ValueError(f"{type(self).__name__}: graph must be one of {self.policies}, got {graph!r}")
        if gather is None:
            a = self.graph(self.space(x))  # sage: P, row-stochastic; gcn: the normalised, symmetrised A-hat
            h = self.drop(torch.relu(self.conv1(x, a)))
            return self.conv2(h, a)
        v, rows = gather(self.space(x))
        a = self.graph(v)[rows]  # this process's rows of the global batch's graph
        h = self.drop(torch.relu(self.conv1(x, a, gather(self.conv1.message(x))[0])))
        return self.conv2(h, a, gather(self.conv2.message(h))[0])

    def anchor_edges(self, x: Tensor, *, index: Tensor | None = None) -> Edges:
        """The anchors graph of the images ``x``: edge weights (n, k), largest first, and the positions of those
        anchors in the bank (n, k). ``index`` as in :meth:`forward`."""
        x = input_features(x, self.embed)
        return self._edges(x, index, self._bank_states())

    def _edges(self, x: Tensor, index: Tensor | None, bank: dict[str, Tensor]) -> Edges:
        v = self.space(x)
        excluding = index is not None and self.training  # a training image is never its own anchor
        # the k + 1 nearest anchors (one more when the image's own copy may be among them: at most one, positions
        # in the bank being distinct), then the closed-form weights over their distances
        dist, positions = self.bank.nearest(v.detach(), self.graph.k + 1 + excluding, bank["v"], bank["v_sq"])
        exclude = self.bank.exclusion(index, positions) if excluding else None
        grad = torch.is_grad_enabled() and (v.requires_grad or bank["v"].requires_grad)
        return self.graph(
            v, bank["v"], exclude, anchors_sq=bank["v_sq"], candidates=positions, dist=None if grad else dist
        )

    def _bank_states(self) -> dict[str, Tensor]:
        """The bank's graph-space positions and the messages it sends at each layer (cached in eval mode)."""
        if self.bank is None:
            raise ValueError(f"{type(self).__name__}: graph='anchors' needs an anchor bank (set_bank)")

        def compute() -> dict[str, Tensor]:
            xa = self.in_drop(input_features(self.bank.images, self.embed))
            va = self.space(xa)
            # the bank's own graph, an anchor not its own neighbour (it is among its own k + 2 nearest)
            va_sq = va.pow(2).sum(dim=1)
            _, positions = self.bank.nearest(va.detach(), self.graph.k + 2, va.detach(), va_sq.detach())
            own = positions == torch.arange(len(va), device=va.device)[:, None]
            edges = self.graph(va, va, own, anchors_sq=va_sq, candidates=positions)
            msg1 = self.conv1.message(xa)
            ha = self.drop(torch.relu(self.conv1(xa, edges, msg1)))
            msg2 = self.conv2.message(ha)
            if self.label_gain is not None:
                known = self.bank.labels >= 0  # an unlabelled anchor (few-label regime) sends no label
                onehot = nn.functional.one_hot(self.bank.labels.clamp_min(0), self.num_classes) * known[:, None]
                onehot = onehot.to(msg2)
                msg2 = msg2 + self.label_gain(onehot)
            return {"v": va, "msg1": msg1, "msg2": msg2}

        return self.bank.states(compute)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"aggregate={c.aggregate}, graph_space={c.graph_space}, embed={c.embed}, label_messages={c.label_messages}"
        )
