r"""A fixed weight's product on MKL's packed-weight GEMM: :math:`\mathbf{X}\mathbf{W}^\top` for an inference fast path
(models/fastpath.py) whose weight does not change between calls.

``torch.mm`` packs the weight into MKL's blocked layout at every call; here it is packed once per batch size, with the
ops torch.compile's CPU weight freezing uses (``mkl::_mkl_reorder_linear_weight``, ``mkl::_mkl_linear``):
docs/anchors_cost.md times the anchors student with and without it. Where torch has no MKL the product is
``torch.mm``. The packed product sums in another order than ``torch.mm``: the results agree to float
rounding, not bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["PACK_FROM", "PackedProduct", "unpacked"]

PACK_FROM = 16  # rows: below, the product runs on torch.mm (at batch 1 packing was slower)
MOST_SIZES = 2  # batch sizes packed per weight (each about 6x the weight: docs/anchors_cost.md), e.g. full and last


def _mkl_ops():
    """(reorder, linear): torch's packed-weight ops, or ``None`` where this build of torch lacks them."""
    try:
        if torch.backends.mkl.is_available():
            return torch.ops.mkl._mkl_reorder_linear_weight, torch.ops.mkl._mkl_linear
    except (AttributeError, RuntimeError):
        pass
    return None


_OPS = _mkl_ops()
_state = {"on": True}


@contextlib.contextmanager
def unpacked():
    """Within the block every :class:`PackedProduct` runs on ``torch.mm`` (to compare the two, as
    scripts/anchors_cost.py does); packings made before are kept."""
    saved, _state["on"] = _state["on"], False
    try:
        yield
    finally:
        _state["on"] = saved


class PackedProduct:
    r"""``product(x) -> x @ weight.T`` for ``x`` (n, in) and the fixed ``weight`` (out, in), float32 on the CPU,
    without gradients. The weight is packed on the first call with each batch size of at least :data:`PACK_FROM` rows,
    for up to :data:`MOST_SIZES` sizes; other sizes run on ``torch.mm``. ``weight`` is detached and held (a copy where
    it is not contiguous), so it must not change while the product is used: a fast path builds a new one with its
    cached tables."""

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight.detach().contiguous()
        self.t = self.weight.t()
        self.packs: dict[int, Tensor] = {}
        self.packable = _OPS is not None and self.weight.dtype == torch.float32 and self.weight.device.type == "cpu"

    def __call__(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        pack = self.packs.get(n) if _state["on"] else None
        if pack is None and (pack := self._pack(n)) is None:
            return torch.mm(x, self.t)
        return _OPS[1](x, pack, self.weight, None, n)

    def _pack(self, n: int) -> Tensor | None:
        """The weight packed for ``n`` rows, made and kept now, or ``None`` where the product runs on ``torch.mm``."""
        if not self.packable or n < PACK_FROM or len(self.packs) >= MOST_SIZES or not _state["on"]:
            return None
        pack = self.packs[n] = _OPS[0](self.weight, n)
        return pack
