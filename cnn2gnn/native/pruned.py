r"""The exact anchor search with a lower bound from the bank's principal axes (``pruned.c``), for banks whose points
vary mostly along a few directions, as a learned graph space does.

In the bank's principal axes (an orthogonal change of basis :math:`\mathbf{U}`, which keeps distances), the part of
a squared distance along the first :math:`P` axes bounds it from below:

.. math::
    \mathrm{lb}_{ij} = \sum_{t < P} (\tilde q_{it} - \tilde a_{jt})^2 \;\le\; d_{ij} = \mathrm{lb}_{ij}
    + \sum_{t \ge P} (\tilde q_{it} - \tilde a_{jt})^2, \qquad \tilde{\mathbf{q}} = (\mathbf{q} - \boldsymbol\mu)
    \mathbf{U},\ \tilde{\mathbf{a}} = (\mathbf{a} - \boldsymbol\mu)\mathbf{U},

so an anchor whose bound exceeds the distance of some query's current k-th nearest is skipped after :math:`P`
multiply-adds instead of :math:`D`. :func:`scanned_fraction` measures how many full distances a search needed: the
caller (:class:`cnn2gnn.search.TorchSearch`) keeps this search only where it prunes.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch
from torch import Tensor

from . import MIN_LANES, _kernels_for

__all__ = ["MIN_DIM", "Pruned", "head_of", "nearest_pruned", "pack_pruned", "scanned_fraction"]

MIN_DIM = 16  # smaller spaces: the fused search of all d coordinates costs little more than the bound


def head_of(d: int) -> int:
    """P, the principal axes of the bound for a space of ``d`` dimensions: about a fifth, 4 to 16 (12 of a 64-d
    graph space, where 10 to 16 were fastest on the learned Fashion-MNIST banks of docs/anchors_cost.md)."""
    return min(16, max(4, d // 5))


MOST_VECS = 8  # pruned.c: k <= MOST_VECS * lanes


class Pruned(NamedTuple):
    """A bank laid out for :func:`nearest_pruned` by :func:`pack_pruned`: its principal ``axes`` (``(d, P + W)``,
    most variance first, zero columns past ``d``), the ``shift`` :math:`-\\boldsymbol\\mu\\mathbf{U}` that centres
    a query, the anchors' first ``P`` coordinates in blocks of the vector width, dimension-major (``head``), and the
    others, ``(m, W)`` with zero columns past ``d`` (``tail``); ``m`` anchors."""

    axes: Tensor
    shift: Tensor
    head: Tensor
    tail: Tensor
    m: int
    d: int
    P: int
    W: int


def pack_pruned(bank: Tensor, head: int | None = None) -> Pruned | None:
    """The bank ``(m, d)`` in its principal axes, packed for :func:`nearest_pruned`, once per bank, the first ``head``
    axes (default :func:`head_of`, at most 16) for the bound; ``None`` where the kernel cannot serve it (as
    :func:`cnn2gnn.native.pack`), where ``d < MIN_DIM``, or where the bank holds a value that is not finite."""
    lib = _kernels_for(bank)
    if lib is None or (lanes := lib.cnn2gnn_nearest_lanes()) < MIN_LANES:
        return None
    m, d = bank.shape
    head = head_of(d) if head is None else head
    if not 1 <= head <= 16:
        raise ValueError(f"pack_pruned: head must be in [1, 16], got {head}")
    a = bank.detach()
    if m == 0 or d < MIN_DIM or head >= d or not bool(torch.isfinite(a).all()):
        return None
    mean = a.sum(dim=0, dtype=torch.float64) / m
    centred = a - mean.float()
    _, vectors = torch.linalg.eigh((centred.T @ centred).double())  # ascending; any orthonormal axes keep distances
    width = -(-(d - head) // lanes) * lanes  # W: the tail in whole vectors (zero columns past d)
    axes = torch.zeros(d, head + width, dtype=torch.float64)
    axes[:, :d] = vectors.flip(1)  # most variance first
    rotated = centred @ axes.float()
    blocks = -(-m // lanes)
    first = torch.full((blocks * lanes, head), float("inf"))
    first[:m] = rotated[:, :head]
    packed_head = first.reshape(blocks, lanes, head).transpose(1, 2).contiguous().reshape(-1)
    shift = -(mean @ axes)
    return Pruned(axes.float(), shift.float(), packed_head, rotated[:, head:].contiguous(), m, d, head, width)


def _search(queries: Tensor, pruned: Pruned, k: int) -> tuple[Tensor, Tensor, int] | None:
    lib = _kernels_for(queries)
    n, d = queries.shape
    if not 1 <= k <= pruned.m:
        raise ValueError(f"nearest_pruned: k must be in [1, {pruned.m}], got k={k}")
    if lib is None or d != pruned.d or k > MOST_VECS * lib.cnn2gnn_nearest_lanes():
        return None
    q = torch.addmm(pruned.shift, queries.detach(), pruned.axes)  # (n, P + W) in the bank's axes, zeros past d
    dist = torch.empty(n, k, dtype=torch.float32)
    index = torch.empty(n, k, dtype=torch.int64)
    seen = ctypes.c_int64(0)
    args = (pruned.head.data_ptr(), pruned.tail.data_ptr(), n, pruned.m, pruned.P, pruned.W, k)
    threads = torch.get_num_threads()
    status = n and lib.cnn2gnn_pruned(
        q.data_ptr(), q.stride(0), *args, dist.data_ptr(), index.data_ptr(), threads, ctypes.byref(seen)
    )
    if status == 1:
        raise MemoryError(f"nearest_pruned: out of memory for a bank of {pruned.m}")
    if status:
        raise ValueError(f"nearest_pruned: k={k} or the bound's {pruned.P} axes are outside the kernel's limits")
    return dist, index, seen.value


def nearest_pruned(queries: Tensor, pruned: Pruned, k: int) -> tuple[Tensor, Tensor] | None:
    r"""Squared distances and positions of the ``k`` anchors of a :func:`pack_pruned` bank nearest to each query,
    nearest first, ties to the lower position, NaN last (a query with a coordinate that is not finite is compared
    with every anchor): the exact k-NN of distances computed in the bank's principal axes, which differ from
    :func:`cnn2gnn.graph.pairwise_sq_dists` only by rounding. ``None`` when the kernel cannot serve ``queries`` or
    ``k`` exceeds 8 vector widths (the caller takes another search). No gradient.

    Shapes:
        queries :math:`(n, d)`, :math:`1 \le k \le m` -> distances :math:`(n, k)` float32, positions
        :math:`(n, k)` int64
    """
    found = _search(queries, pruned, k)
    return None if found is None else found[:2]


def scanned_fraction(pruned: Pruned, queries: Tensor, k: int) -> float | None:
    """The share of the (query, anchor) pairs whose full distance a search of ``queries`` for their ``k`` nearest
    computed: the rest were ruled out by their bound. ``None`` where the kernel cannot serve the queries."""
    found = _search(queries, pruned, k)
    return None if found is None or not len(queries) else found[2] / (len(queries) * pruned.m)
