"""The anchor bank of a graph student (docs/method.md section 5): a fixed set of training images that serves as the
neighbour pool of the ``anchors`` inference policy, with the states the student derives from it cached once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..search import SEARCHES, make_search, topk_torch

__all__ = ["AnchorBank"]


class AnchorBank(nn.Module):
    r"""A bank of :math:`m` training images stored in a graph student (as in the authors' AnchorGAE).

    Under the ``anchors`` policy a query image links to its :math:`k` nearest anchors, so its prediction does not
    depend on the other images passed with it. The bank keeps, as buffers saved with the model:

    - ``images`` :math:`(m, D)`: the anchors' normalised, flattened pixels;
    - ``labels`` :math:`(m,)`: their classes (for label messages and pictures);
    - ``index`` :math:`(m,)`: their positions in the training split, so that a training image is never its own anchor
      (:meth:`exclusion`) and an anchor is never its own neighbour in the bank's graph (:meth:`self_mask`).

    What the student computes from the bank (graph-space positions :math:`\mathbf{v}_a`, their squared norms
    :math:`\|\mathbf{v}_a\|^2`, each layer's messages) goes through :meth:`states`: in eval mode it is computed once and
    cached (detached); switching to training mode, :meth:`set` and loading weights clear the cache.

    The nearest anchors of a query come from :meth:`nearest`: an exact torch top-k in training (the bank's states
    change at every step), the configured ``search`` (:mod:`cnn2gnn.search`: ``torch``, ``faiss``, ``faiss-ivf``)
    in eval mode, built once over the cached states.

    Args:
        size: :math:`m` (the buffers start as zeros, to be filled by :meth:`set` or by loading weights).
        in_features: :math:`D`, the flattened image size.
        search, nlist, nprobe: the eval-mode search and its approximate index's cells and cells probed.

    Shapes:
        images :math:`(m, D)`, labels and index :math:`(m,)`; ``exclusion(index)`` :math:`(n, m)`
    """

    def __init__(
        self, size: int, in_features: int, *, search: str = "torch", nlist: int | None = None, nprobe: int = 16
    ) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"{type(self).__name__}: size must be a positive integer, got size={size!r}")
        self.register_buffer("images", torch.zeros(size, in_features))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))
        self.register_buffer("index", torch.zeros(size, dtype=torch.long))
        self._cache: dict[str, Tensor] | None = None
        self.search, self.nlist, self.nprobe = search, nlist, nprobe
        self._index = None  # the eval-mode search over the cached states
        self.register_load_state_dict_post_hook(lambda module, _: module.clear())

    def __len__(self) -> int:
        return self.images.shape[0]

    def set(self, images: Tensor, labels: Tensor, index: Tensor) -> None:
        """Store ``len(images)`` images (flattened or not), their labels and their positions in the training split."""
        m = images.shape[0]
        if labels.shape != (m,) or index.shape != (m,):
            raise ValueError(
                f"{type(self).__name__}: labels and index must have shape ({m},), got {tuple(labels.shape)} and "
                f"{tuple(index.shape)}"
            )
        # clone: the bank owns its storage (aliased buffers would be overwritten by load_state_dict)
        self.images = images.reshape(m, -1).to(self.images).clone()
        self.labels = labels.to(self.images.device, torch.long).clone()
        self.index = index.to(self.images.device, torch.long).clone()
        self.clear()

    def use_search(self, search: str, *, nlist: int | None = None, nprobe: int = 16) -> AnchorBank:
        """Search the bank with ``search`` (``torch`` | ``faiss`` | ``faiss-ivf``) in eval mode from now on."""
        if search not in SEARCHES:
            raise ValueError(f"{type(self).__name__}: search must be one of {SEARCHES}, got {search!r}")
        self.search, self.nlist, self.nprobe = search, nlist, nprobe
        self.clear()  # what was cached with the states for the previous search (models/fastpath.py) goes too
        return self

    def clear(self) -> None:
        """Forget the cached states and search (they are rebuilt from the current weights when next needed)."""
        self._cache = self._index = None

    def nearest(self, queries: Tensor, k: int, bank: Tensor, bank_sq: Tensor) -> tuple[Tensor, Tensor]:
        """Squared distances and positions, each (n, min(k, m)), of the ``k`` rows of ``bank`` (the bank's
        graph-space positions) nearest to each query: exact in training (torch, the states change at every step); the
        configured search in eval mode, built once per cache (``torch``: the native kernel where it serves the bank)."""
        traced = torch.compiler.is_compiling() or torch.compiler.is_exporting()  # a traced graph keeps the torch ops
        if self.training or (traced and self.search == "torch"):
            return topk_torch(queries, bank, k, bank_sq=bank_sq)
        return self.index_for(bank, bank_sq)(queries, k)

    def index_for(self, bank: Tensor, bank_sq: Tensor):
        """The eval-mode search over ``bank`` (the cached states' graph-space positions), built once per states."""
        key = (bank.data_ptr(), tuple(bank.shape))  # the same states (a detached view shares the storage)
        if self._index is None or self._index[0] != key:
            self._index = (key, make_search(self.search, bank, bank_sq, nlist=self.nlist, nprobe=self.nprobe))
        return self._index[1]

    def describe_search(self) -> str | None:
        """The eval-mode search in words once it is built (after a call under the anchors policy), else ``None``."""
        return None if self._index is None else self._index[1].describe()

    def train(self, mode: bool = True) -> AnchorBank:
        self.clear()
        return super().train(mode)

    def cached(self) -> dict[str, Tensor] | None:
        """The states :meth:`states` cached in eval mode, or ``None`` (training mode, or none computed yet)."""
        return None if self.training else self._cache

    def states(self, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """``compute()`` (a dict holding at least ``v``, the anchors' graph-space positions) plus ``v_sq``, the
        squared norms of ``v``; cached in eval mode, recomputed (with gradients) at every call in training mode."""
        if (cached := self.cached()) is not None:
            return cached
        states = dict(compute())
        states["v_sq"] = states["v"].pow(2).sum(dim=1)
        if not self.training:  # the cached dict itself: what a caller adds to it (models/fastpath.py) is kept
            self._cache = states = {key: t.detach() for key, t in states.items()}
        return states

    def self_mask(self) -> Tensor:
        """``True`` on the diagonal, shape (m, m): an anchor is not its own neighbour in the bank's graph."""
        return torch.eye(len(self), dtype=torch.bool, device=self.images.device)

    def exclusion(self, index: Tensor, positions: Tensor | None = None) -> Tensor:
        """``True`` where a query at training-split position ``index[i]`` is the anchor itself: over the whole bank,
        shape (n, m), or over the candidate anchors ``positions`` (n, K)."""
        index = index.to(self.index.device)[:, None]
        return index == (self.index[None, :] if positions is None else self.index[positions])

    def extra_repr(self) -> str:
        return f"size={len(self)}, in_features={self.images.shape[1]}, search={self.search}"
