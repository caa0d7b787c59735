"""Exact selection of the ``k`` nearest of each row of distances (docs/method.md section 5; issue 15): what the anchor
search needs, faster on the CPU than one wide ``topk``.

On a CPU ``torch.topk`` costs several nanoseconds an entry on a row of thousands (it copies and partially sorts every
row, comparing floats with NaN checks). :func:`nearest_k` runs the native kernel :func:`cnn2gnn.native.select_k`
where it could be built (block minima, a bound, a few dozen candidates; one C call); elsewhere it compares 32-bit
integer keys, which order as non-negative floats do, narrows each row down with block minima in torch (a cheap
vectorised reduction) and calls ``topk`` only on the few dozen entries left. Both are exact.
``scripts/anchors_cost.py`` measures them against ``topk`` by bank size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import native

__all__ = ["nearest_k"]

# Rows narrower than WIDE (WIDE_ONE_THREAD when torch runs on one thread), or fewer than ROWS of them, go to topk as
# they are. Measured on a 2-core VM (docs/anchors_cost.md, docs/ablations.md s.11): on one thread narrowing pays from
# a few hundred entries; on two, topk spreads its rows over the threads and narrowing pays only from ~16,384.
WIDE_ONE_THREAD = 256
WIDE = 16384
ROWS = 64
NARROW = 64  # the narrowing steps stop at rows of at most this many entries
BLOCKS = 64  # the fewest blocks a narrowing step makes


def _block_size(width: int, k: int) -> int:
    """Entries per block for a row of ``width``: about :math:`\\sqrt{w / k}` (at least ``BLOCKS`` blocks), which
    balances the blocks' minima against the candidates kept; a divisor of ``width`` when one is near (else the row is
    padded)."""
    least = -(-width // max(BLOCKS, math.isqrt(width * k)))
    return next((s for s in range(least, min(2 * least, width) + 1) if width % s == 0), least)


def _narrow(keys: Tensor, k: int, size: int) -> tuple[Tensor, Tensor, int]:
    """One step: block ``j`` of a row holds its entries ``j, j + b, j + 2b, ...`` (``b`` blocks of ``size``, the row
    padded with the largest key); the ``k`` blocks of smallest minimum, as ``(n, size * k)`` (entry ``t`` of kept
    block ``l`` at ``t * k + l``), which blocks they are ``(n, k)``, and ``b``."""
    n, width = keys.shape
    blocks = -(-width // size)
    if blocks * size != width:
        keys = torch.nn.functional.pad(keys, (0, blocks * size - width), value=torch.iinfo(torch.int32).max)
    grid = keys.view(n, size, blocks)
    _, keep = grid.amin(dim=1).topk(k, dim=1, largest=False, sorted=False)  # a strided minimum: vectorised
    return grid.gather(2, keep.unsqueeze(1).expand(n, size, k)).view(n, size * k), keep, blocks


def nearest_k(dist: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""The ``k`` smallest entries of each row of the non-negative ``dist`` (distances), ascending, and their columns:
    the values of ``torch.topk(dist, k, dim=1, largest=False)`` exactly, the same columns unless values tie.

    On the CPU with float32 and the native kernels available (:mod:`cnn2gnn.native`), one call of
    :func:`cnn2gnn.native.select_k` (any width; ties to the lower column). Otherwise, in torch: the comparisons are
    on the float32 bit patterns as int32, which order as non-negative floats do (a negative
    entry would sort first among them in reverse; NaN sorts last, as in ``topk``). Each step splits a row's
    :math:`w` candidates into :math:`b = \max(64, \sqrt{w k})` blocks of :math:`s \approx w / b` entries and keeps
    the :math:`k` blocks of smallest minimum, :math:`k s` candidates (54,000 -> 792 -> 99 -> 33 for k = 11). No
    entry outside them can be among the row's :math:`k` smallest: if one were, its block's minimum :math:`\mu` would
    be at least each kept block's, so the :math:`k` kept minima would be :math:`k` entries :math:`\le \mu \le` it.
    A last ``topk`` orders what is left; the values are gathered from ``dist`` at the end, so gradients reach the
    selected entries as through ``topk``. Shapes are static (no host synchronisation). For rows under ``WIDE``
    entries (``WIDE_ONE_THREAD`` on one thread), fewer than ``ROWS`` rows, off the CPU, for other dtypes and when
    compiled or exported this is ``topk`` itself (cheaper there, or one node of the traced graph).

    Shapes:
        dist :math:`(n, m)` -> values :math:`(n, \min(k, m))` (dtype of ``dist``), index :math:`(n, \min(k, m))`
        (int64)
    """
    n, m = dist.shape
    k = min(k, m)
    if k and (found := native.select_k(dist, k)) is not None:  # None off the CPU, for other dtypes, when traced
        values, index = found
        return (dist.gather(1, index) if dist.requires_grad else values), index
    traced = torch.compiler.is_exporting() or torch.compiler.is_compiling()  # the traced graph keeps one topk
    cpu = dist.device.type == "cpu" and dist.dtype == torch.float32 and not traced
    if not cpu or m < (WIDE_ONE_THREAD if torch.get_num_threads() == 1 else WIDE) or n < ROWS:
        return dist.topk(k, dim=1, largest=False)
    with torch.no_grad():
        keys, steps = dist.detach().contiguous().view(torch.int32), []
        while keys.shape[1] > NARROW and k * (size := _block_size(keys.shape[1], k)) < keys.shape[1]:
            keys, keep, blocks = _narrow(keys, k, size)
            steps.append((keep, blocks))
        _, index = keys.topk(k, dim=1, largest=False)
        for keep, blocks in reversed(steps):  # a step's candidate t * k + l is entry t of kept block keep[l]
            index = keep.gather(1, index % k) + (index // k) * blocks
    return dist.gather(1, index), index
