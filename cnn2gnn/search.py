"""Nearest anchors behind one interface (docs/method.md section 5; issue 15): an exact search (the native kernels
:func:`cnn2gnn.native.nearest` and its pruned form :func:`cnn2gnn.native.nearest_pruned` on CPUs with 256-bit vectors
or wider, else a top-k in torch, blocked so that banks up to the whole training split fit in memory), and faiss
(exact ``IndexFlatL2``, approximate ``IndexIVFFlat``) for large banks. A search returns squared distances and
positions; in training the student recomputes the distances of the anchors it selected, with gradients, so every
backend gives the same graph head (exactly, for the exact ones).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import native
from .errors import UserError
from .graph import pairwise_sq_dists
from .select import nearest_k

SEARCHES = ("torch", "faiss", "faiss-ivf")
BLOCK = 1 << 24  # distances held at once by the torch search (64 MiB of float32)


@torch.no_grad()
def topk_torch(
    queries: Tensor, bank: Tensor, k: int, *, bank_sq: Tensor | None = None, block: int = BLOCK
) -> tuple[Tensor, Tensor]:
    r"""Squared distances and positions of the ``k`` nearest rows of ``bank`` for each query, nearest first: exact.

    With :math:`n m \le` ``block`` one product and one selection (:func:`cnn2gnn.select.nearest_k`), no loop and no
    host synchronisation (the path a compiled or exported model takes); otherwise blocks of queries against blocks
    of the bank, each block's top-k merged into a running top-k, so memory stays at ``block`` distances whatever the
    bank's size.

    Shapes:
        queries :math:`(n, d)`, bank :math:`(m, d)` -> both :math:`(n, \min(k, m))`, float and int64
    """
    n, m = queries.shape[0], bank.shape[0]
    k = min(k, m)
    if bank_sq is None:
        bank_sq = bank.pow(2).sum(dim=1)
    if torch.compiler.is_exporting() or n * m <= block:  # an exported graph takes any batch size: one pass
        return nearest_k(pairwise_sq_dists(queries, bank, y_sq=bank_sq), k)
    rows = max(1, block // m) if m <= block else 1024
    cols = m if m <= block else max(k, block // rows)
    dists, out = [], []
    for q in queries.split(rows):
        best_d = best_i = None
        for start in range(0, m, cols):
            d = pairwise_sq_dists(q, bank[start : start + cols], y_sq=bank_sq[start : start + cols])
            d, i = nearest_k(d, k)
            i = i + start
            if best_d is not None:
                d, j = torch.cat([best_d, d], dim=1).topk(k, dim=1, largest=False)
                i = torch.cat([best_i, i], dim=1).gather(1, j)
            best_d, best_i = d, i
        dists.append(best_d)
        out.append(best_i)
    return torch.cat(dists), torch.cat(out)


class TorchSearch:
    """Exact search of a fixed bank (the default search of the anchors policy in eval mode). On a float32 CPU bank
    with a build of 256-bit vectors or wider, a native kernel (no gradient):

    - :func:`cnn2gnn.native.nearest_pruned` where the bank varies mostly along a few axes, as a learned graph space
      does: a lower bound from its first principal axes rules most anchors out after a fraction of their distance.
      It is kept for banks of at least ``PRUNE_FROM`` anchors where, for queries between pairs of anchors (of at
      most ``CALIBRATE_ON`` of them), it computes at most ``PRUNE_BELOW`` of the distances (docs/pruned_search.md,
      docs/anchors_cost.md: with fewer anchors, or more distances, the fused kernel was as fast or faster within the
      student's forward);
    - else :func:`cnn2gnn.native.nearest`: distances and selection in one pass, the bank packed once;

    and :func:`topk_torch` on the bank's device otherwise. All are exact; their distances differ only by rounding. The
    bank is read at construction: build a new search after changing it."""

    kind = "torch"
    PRUNE_FROM = 4096  # the bank size from which the pruned kernel may be used
    PRUNE_BELOW = 0.03  # the share of full distances under which it is used
    SAMPLE = 256  # calibration queries
    CALIBRATE_ON = 16384  # at most this many anchors in the calibration (its cost stays bounded)

    def __init__(self, bank: Tensor, bank_sq: Tensor | None = None) -> None:
        if bank_sq is None:
            bank_sq = bank.detach().pow(2).sum(dim=1)
        self.bank, self.bank_sq = bank, bank_sq
        self.pruned = self._pruned_if_it_pays(bank.detach()) if len(bank) >= max(2, self.PRUNE_FROM) else None
        # the fused kernel's packing: now, unless the pruned kernel serves the bank (then when a k is beyond its reach)
        self._packed: native.Packed | None | bool = False if self.pruned is not None else native.pack(bank, bank_sq)

    def _pruned_if_it_pays(self, bank: Tensor) -> native.Pruned | None:
        """The pruned kernel's packing of ``bank`` if, on evenly spaced anchors (at most ``CALIBRATE_ON``: a sparser
        bank prunes less, so the estimate errs on the safe side), ``SAMPLE`` queries between pairs of them needed at
        most ``PRUNE_BELOW`` of their distances; else ``None``."""
        sample = bank
        if len(bank) > self.CALIBRATE_ON:
            sample = bank[torch.linspace(0, len(bank) - 1, self.CALIBRATE_ON, device=bank.device).long()]
        trial = native.pack_pruned(sample)
        if trial is None:
            return None
        rows = torch.linspace(0, len(sample) - 2, min(self.SAMPLE, len(sample) - 1), device=bank.device).long()
        between = (sample[rows] + sample[rows + 1]) / 2  # near the bank, none of them an anchor
        share = native.scanned_fraction(trial, between, min(11, len(sample)))
        if share is None or share > self.PRUNE_BELOW:
            return None
        return trial if sample is bank else native.pack_pruned(bank)

    @property
    def packed(self) -> native.Packed | None:
        """The bank packed for the fused kernel (``None`` where it cannot serve it)."""
        if self._packed is False:
            self._packed = native.pack(self.bank, self.bank_sq)
        return self._packed  # type: ignore[return-value]

    def describe(self) -> str:
        """Which search serves the bank, in words (``evaluate`` prints it)."""
        if self.pruned is not None:
            p = self.pruned
            return f"exact, native pruned search (a bound from {p.P} of {p.d} principal axes)"
        if self._packed is not False and self._packed is not None:
            return "exact, native fused search"
        return "exact, torch top-k"

    def __call__(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, len(self.bank))
        if self.pruned is not None and (found := native.nearest_pruned(queries, self.pruned, k)):
            return found
        if self.packed is not None and (found := native.nearest(queries, self.packed, k)):
            return found
        return topk_torch(queries, self.bank, k, bank_sq=self.bank_sq)


class FaissSearch:
    """faiss on the CPU: ``IndexFlatL2`` (exact) or ``IndexIVFFlat`` with ``nlist`` cells, ``nprobe`` searched per
    query (approximate; trained on the bank itself). Built once per bank; positions come back as torch int64."""

    def __init__(self, bank: Tensor, *, approximate: bool = False, nlist: int | None = None, nprobe: int = 16) -> None:
        try:
            import faiss
        except ImportError:
            raise UserError("bank.search=faiss needs faiss: pip install 'cnn2gnn[faiss]'") from None
        data = bank.detach().float().cpu().contiguous().numpy()
        m, d = data.shape
        if approximate:
            nlist = max(1, min(m // 39, nlist or int(4 * math.sqrt(m))))  # faiss wants >= 39 points a cell to train
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            self.index.train(data)
            self.index.nprobe = min(nprobe, nlist)
        else:
            self.index = faiss.IndexFlatL2(d)
        self.index.add(data)
        self.kind = "faiss-ivf" if approximate else "faiss"
        self.device = bank.device

    def describe(self) -> str:
        """Which search serves the bank, in words (``evaluate`` prints it)."""
        if self.kind == "faiss":
            return "exact, faiss IndexFlatL2"
        return f"approximate, faiss IndexIVFFlat ({self.index.nlist} cells, {self.index.nprobe} searched a query)"

    def __call__(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        dist, index = self.index.search(queries.detach().float().cpu().contiguous().numpy(), min(k, self.index.ntotal))
        dist, index = torch.from_numpy(dist).to(self.device), torch.from_numpy(index).to(self.device)
        # an approximate search can come back short (-1): repeat the row's nearest found anchor
        short = index < 0
        return torch.where(short, dist[:, :1], dist), torch.where(short, index[:, :1], index)


def make_search(kind: str, bank: Tensor, bank_sq: Tensor | None = None, *, nlist: int | None = None, nprobe: int = 16):
    """The search ``kind`` (``torch`` | ``faiss`` | ``faiss-ivf``) over the rows of ``bank``."""
    if kind == "torch":
        return TorchSearch(bank, bank_sq)
    if kind in ("faiss", "faiss-ivf"):
        return FaissSearch(bank, approximate=kind == "faiss-ivf", nlist=nlist, nprobe=nprobe)
    raise UserError(f"unknown anchor search '{kind}' (known: {', '.join(SEARCHES)})")
