r"""The anchors fast path's product and two kernels, prepared once per bank (models/fastpath.py): the stacked
first-layer and graph-head product (packed once, models/product.py), then in one native call (native/anchors.c) the
fused search of a :func:`~cnn2gnn.native.pack`-ed bank and the pass of :func:`~cnn2gnn.native.propagate` with its
own term, ReLU and second layer, with pointers and sizes checked when the bank's tables were cached rather than at
every call.

Each call of the checking wrappers costs a few microseconds of Python, and several times more inside a forward than
alone; the prepared call made the forward faster at batch 256 and much faster at batch 1 (docs/ablations.md s.16 and
s.17 have the figures). From the same product, the results are those of the two wrappers, bit for bit: the same
kernels on the same arguments (tests/test_fastpath.py checks it).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor

from . import EPS, Packed, _kernels_for

__all__ = ["AnchorsPass", "prepare_anchors_pass"]


class _Fixed(ctypes.Structure):
    """``cnn2gnn_anchors_t`` (native/anchors.c): the arguments of the two kernels that stay fixed for a bank."""

    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("packed", "psq")),
        *((name, ctypes.c_int64) for name in ("m", "d", "big", "k")),
        ("eps", ctypes.c_double),
        *((name, ctypes.c_void_p) for name in ("messages", "bias", "head")),
        *((name, ctypes.c_int64) for name in ("width", "nh", "offset")),
    ]


class AnchorsPass:
    r"""``run(x) -> logits`` for the input features ``x`` (n, D), float32 on the CPU: one product (``product``)
    ``both`` :math:`= \mathbf{X}\,[\mathbf{W}_1; \mathbf{W}_g]^\top` (n, h + d) gives the first layer's own term and the
    graph space; then, in one native call (native/anchors.c), the :math:`K = \min(k + 1, m)` nearest anchors of the
    graph-space part and :math:`\mathbf{Z} = \mathrm{ReLU}(\mathbf{O}_{:, :h})\,\mathbf{W}_2^\top + \mathbf{O}_{:, h:}`,
    where :math:`\mathbf{O}` is the bias plus the weighted sum of the neighbours' ``messages`` (m, h + c), the own term
    added to its first h columns, and ``head`` is :math:`\mathbf{W}_2` (c, h). Built by :func:`prepare_anchors_pass`,
    which checks the tables; it holds them, so the pointers it passes stay valid. ``k``: the k it was prepared for."""

    def __init__(
        self,
        lib,
        product: Callable[[Tensor], Tensor],
        packed: Packed,
        k: int,
        messages: Tensor,
        bias: Tensor,
        head: Tensor,
    ) -> None:
        self.lib, self.product, self.k, self.tables = lib, product, k, (packed, messages, bias, head)
        self.m, width = messages.shape
        self.c, self.h = head.shape
        big = min(k + 1, packed.m)  # K candidates, as TorchSearch clamps them, and k neighbours among them
        self.fixed = _Fixed(
            packed=packed.data.data_ptr(), psq=packed.sq.data_ptr(), m=packed.m, d=packed.d, big=big, k=min(k, big - 1),
            eps=EPS, messages=messages.data_ptr(), bias=bias.data_ptr(), head=head.data_ptr(), width=width,
            nh=self.h, offset=self.h,  # the own term's width (the ReLU's, the head's); the graph space after it
        )  # fmt: skip
        self.call, self.ref = lib.cnn2gnn_anchors, ctypes.byref(self.fixed)

    def __call__(self, x: Tensor) -> Tensor:
        return self._finish(self.product(x))  # float32 (n, h + d): torch's product checked x against the weight

    def finish(self, both: Tensor) -> Tensor:
        """The logits from the product ``both`` (n, h + d), float32 on the CPU: the search and the pass in one native
        call (``run(x)`` is ``run.finish(run.product(x))``)."""
        width = self.h + self.tables[0].d
        if both.dim() != 2 or both.shape[1] != width or both.dtype != torch.float32 or both.device.type != "cpu":
            raise ValueError(f"AnchorsPass.finish: expected float32 (n, {width}) on the CPU, got {both.dtype} "
                             f"{tuple(both.shape)} on {both.device}")  # fmt: skip
        return self._finish(both)

    def _finish(self, both: Tensor) -> Tensor:
        if not both.is_contiguous():  # the kernels read rows of stride 1
            both = both.contiguous()
        n, threads = both.shape[0], torch.get_num_threads()
        out = torch.empty(n, self.c, dtype=torch.float32)
        bad = self.call(self.ref, both.data_ptr(), both.stride(0), n, out.data_ptr(), threads)
        if bad < 0:
            raise MemoryError(f"AnchorsPass: out of memory for a batch of {n}")
        if bad:
            raise IndexError(f"AnchorsPass: positions must lie in [0, {self.m})")
        return out


def prepare_anchors_pass(
    product: Callable[[Tensor], Tensor], packed: Packed, k: int, messages: Tensor, bias: Tensor, head: Tensor
) -> AnchorsPass | None:
    """The :class:`AnchorsPass` of the stacked first-layer and graph-head ``product`` (``x -> x W^T`` with ``W`` its
    ``weight``, (h + d, D), as :class:`cnn2gnn.models.product.PackedProduct`), a packed bank and its tables, or
    ``None`` where the kernels cannot serve them (the caller keeps its checked path): tables not float32, not on the
    CPU or not contiguous, sizes that disagree, fewer than 2 or more than 64 candidates."""
    lib = _kernels_for(messages)
    big = min(k + 1, packed.m)
    if lib is None or not 2 <= big <= 64 or head.dim() != 2 or bias.dim() != 1 or messages.dim() != 2:
        return None
    if any(t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() for t in (messages, bias, head)):
        return None
    m, w = messages.shape
    if m != packed.m or sum(head.shape) != w or bias.shape[0] != w:
        return None
    if product.weight.shape[0] != head.shape[1] + packed.d:  # the own term and the graph space
        return None
    return AnchorsPass(lib, product, packed, k, messages, bias, head)
