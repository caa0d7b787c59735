r"""The anchors policy's inference fast path (issue 15, item 4): the forward of a SAGE student over its anchor bank in
eval mode without gradients, as a dozen tensor operations and no module calls.

The general path (models/gnn.py: the graph learner, the layers, their checks) spends part of its time in Python
between the kernels; scripts/anchors_cost.py times both paths (docs/anchors_cost.md). Like torch's own inference fast
paths (``nn.MultiheadAttention``), this one applies only where nothing needs the general path, and returns ``None``
otherwise: in training, with gradients, under autocast, when traced (compile, export), for the GCN rule. It computes

.. math::
    \mathbf{H} = \mathrm{ReLU}\big(\mathbf{X}\mathbf{W}_1^\top + (\mathbf{b}_1 + \mathbf{P}\mathbf{M}_1)\big), \qquad
    \mathbf{Z} = \mathbf{H}\mathbf{W}_2^\top + (\mathbf{b}_2 + \mathbf{P}\mathbf{M}_2)

with the bank's cached messages :math:`\mathbf{M}_l` and :math:`\mathbf{P}` from the same search and closed-form
weights as the general path, so the logits are the same to float rounding (tests/test_fastpath.py checks every
configuration). Both layers' neighbour sums come from one pass of the native ``propagate`` kernel over the two message
tables side by side (cached with the bank's states), which also adds the first layer's own term, applies the ReLU and
computes the second layer :math:`\mathbf{H}\mathbf{W}_2^\top` from the activations while they are in cache (they are
never written) where that term is known before the search: with ``graph_space=head`` one product gives
:math:`[\mathbf{X}\mathbf{W}_1^\top \mid \mathbf{X}\mathbf{W}_g^\top]` (the own term and the graph space), with
``graph_space=proj`` the graph space is the own term. With ``pixels`` the sums enter the first layer's product as its
added term. With ``graph_space=head`` and the fused native search, the product, the search and the pass are one call
prepared with the tables (:class:`cnn2gnn.native.prepared.AnchorsPass`): the checking wrappers' Python between the
kernels cost more inside the forward than their own time (docs/ablations.md s.16).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import native
from ..graph import sparse_neighbours
from ..native.prepared import prepare_anchors_pass
from ..search import TorchSearch
from .embed import input_features
from .product import PackedProduct

__all__ = ["anchors_logits", "applies", "checked", "disabled", "gather_sum"]

_state = {"on": True, "prepared": True}


@contextlib.contextmanager
def _off(switch: str):
    saved, _state[switch] = _state[switch], False
    try:
        yield
    finally:
        _state[switch] = saved


def disabled():
    """Within the block the general path serves every call (to compare the two, as scripts/anchors_cost.py does)."""
    return _off("on")


def checked():
    """Within the block the fast path calls its kernels through their checking wrappers, not the prepared call (to
    time the parts one by one, as scripts/anchors_cost.py does)."""
    return _off("prepared")


def gather_sum(index: Tensor, messages: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
    r"""Row ``i`` of the result: :math:`\sum_l w_{il}\, \mathbf{m}_{j_{il}}` over the flat ``index``/``weights`` of
    bag ``i`` (``offsets``: where each bag starts), one ``embedding_bag``."""
    return F.embedding_bag(index, messages, offsets, mode="sum", per_sample_weights=weights)


def applies(model: nn.Module, x: Tensor) -> bool:
    """Whether :func:`anchors_logits` serves ``model`` on ``x`` (else the general path runs)."""
    return not (
        model.training
        or torch.is_grad_enabled()
        or not _state["on"]
        or model.cfg.aggregate != "sage"
        or model.bank is None
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.is_autocast_enabled("cpu" if x.is_cpu else x.device.type)
    )


def _tables(model: nn.Module, bank: dict[str, Tensor]) -> None:
    r"""Cache with the bank's states what every call reuses: both layers' messages side by side (one gather brings
    each anchor's row once), their biases, and with ``graph_space=head`` the product with the first layer's weight and
    the graph head's stacked, :math:`[\mathbf{W}_1; \mathbf{W}_g]`, packed once (``product``, models/product.py), so
    that one product gives the first layer's own term and the graph space; where the fused native search serves the
    bank, that product and the two kernels prepared as one call (``run``)."""
    lin1, lin2 = model.conv1.lin, model.conv2.lin
    bank["msg12"] = torch.cat((bank["msg1"], bank["msg2"]), dim=1)
    b1 = torch.zeros_like(lin1.bias) if model.cfg.graph_space == "proj" else lin1.bias  # proj: b1 is in v
    bank["bias12"] = torch.cat((b1, lin2.bias)).detach()
    if model.graph_head is not None:
        bank["product"] = product = PackedProduct(torch.cat((lin1.weight, model.graph_head.weight)))
        # the fused native search and the pass with the second layer, prepared once (native/prepared.py)
        search = model.bank.index_for(bank["v"], bank["v_sq"])
        if isinstance(search, TorchSearch) and search.pruned is None and search.packed is not None:
            head = lin2.weight.detach().contiguous()
            run = prepare_anchors_pass(product, search.packed, model.graph.k, bank["msg12"], bank["bias12"], head)
            bank["run"] = run


def anchors_logits(model: nn.Module, x: Tensor) -> Tensor | None:
    """Logits of a :class:`~cnn2gnn.models.gnn.GNNStudent` under the anchors policy, or ``None`` where the fast path
    does not apply (see the module's docstring). Shapes: x (n, D) or (n, C, H, W) -> (n, num_classes)."""
    if not applies(model, x):
        return None
    # every line here runs between the last call's kernels and this one's, with the interpreter's objects out of
    # cache, and costs several times its time alone (docs/ablations.md s.17): the prepared call is reached first
    bank = model.bank.cached() or model._bank_states()
    if "msg12" not in bank:
        _tables(model, bank)  # once per bank
    x = input_features(x, model.embed)  # the input dropout is the identity in eval mode
    run = bank.get("run")
    if run is not None and run.k == model.graph.k and _state["prepared"] and run.lib is native.library():
        return run(x)  # the product, the search and the pass, prepared with the tables (native/prepared.py)
    lin1, lin2 = model.conv1.lin, model.conv2.lin
    hidden = lin1.weight.shape[0]
    if "product" in bank:  # head: [x W1^T | x Wg^T] from one product
        both = bank["product"](x)
        own, v = both[:, :hidden], both[:, hidden:]
    else:  # proj: v = x W1^T + b1 is the first layer's own term; pixels: v = x, the own term comes later
        v = model.space(x)
        own = v if model.cfg.graph_space == "proj" else None
    dist, positions = model.bank.nearest(v, model.graph.k + 1, bank["v"], bank["v_sq"])
    msg, bias = bank["msg12"], bank["bias12"]
    if own is not None:  # the second layer from the first's activations in the same pass, never written
        logits = native.propagate(dist, positions, model.graph.k, msg, bias, base=own, relu=hidden, head=lin2.weight)
        if logits is not None:
            return logits
    # with the own term the call above refused only where this one would too (the same tensors, one more of them)
    summed = native.propagate(dist, positions, model.graph.k, msg, bias) if own is None else None
    if summed is None:  # no kernels: the same sums from torch's operators
        weights, col = sparse_neighbours(dist, model.graph.k)
        index = positions.gather(1, col)
        n, k = index.shape
        index, weights = index.reshape(-1), weights.reshape(-1).to(msg.dtype)
        offsets = torch.arange(0, n * k, k, device=index.device)
        summed = gather_sum(index, msg, offsets, weights).add_(bias)
    # the own term enters the first layer's sums now (pixels: through the product), then the ReLU and the second layer
    h = (
        summed[:, :hidden].add_(own).relu_()
        if own is not None
        else torch.addmm(summed[:, :hidden], x, lin1.weight.t()).relu_()
    )
    return torch.addmm(summed[:, hidden:], h, lin2.weight.t())
