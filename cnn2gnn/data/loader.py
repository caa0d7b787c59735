"""In-memory batching of a :class:`Split` without DataLoader or workers: seeded per-epoch shuffling, vectorised
random translation + horizontal flip on uint8 images, then normalisation with the train mean/std. The order and
augmentation of an epoch depend only on ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnn2gnn.data.datasets import Split

__all__ = ["Augment", "Batch", "BatchIterator", "normalize"]


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    r"""Scale images to [0, 1] and standardise each channel.

    .. math::
        \hat x_c = (x_c / 255 - \mu_c) / \sigma_c

    Args:
        x_uint8: images with values in 0..255 (uint8, or float holding the same values).
        mean: per-channel mean :math:`\mu` of images scaled to [0, 1].
        std: per-channel std :math:`\sigma` of images scaled to [0, 1].

    Shapes:
        x_uint8: ``(B, C, H, W)``; returns float32 ``(B, C, H, W)``.
    """
    if len(mean) != x_uint8.shape[1] or len(std) != x_uint8.shape[1]:
        raise ValueError(f"normalize: {x_uint8.shape[1]} channels but mean/std of length {len(mean)}/{len(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
    return (x_uint8.to(torch.float32) / 255.0 - m) / s


@dataclass
class Augment:
    """Random translation by up to ``pad`` pixels (zero padding, then a random crop of the original size) and a
    random horizontal flip, drawn per sample and applied to the whole batch at once (one ``gather`` per axis).

    Args:
        pad: largest shift in pixels along each axis; 0 disables translation.
        hflip: flip each sample horizontally with probability 0.5.

    Shapes:
        x: ``(B, C, H, W)``, uint8 or float; returns the same shape and dtype.
    """

    pad: int = 2  # random translation by up to `pad` pixels
    hflip: bool = True  # random horizontal flip with p = 0.5

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"Augment: pad must be >= 0, got {self.pad}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """Augment ``x``; with ``part=(r, w)`` ``x`` is the ``r``-th of ``w`` equal parts of a batch, and the draws are
        made for the whole batch (a process's rows get what one process would draw for them)."""
        if x.dim() != 4:
            raise ValueError(f"Augment: expected (B, C, H, W) images, got shape {tuple(x.shape)}")
        if self.pad == 0 and not self.hflip:
            return x
        b, c, h, w = x.shape
        p = self.pad
        r, parts = part
        n = b * parts  # draws for the whole batch, this part's rows taken
        mine = slice(r * b, (r + 1) * b)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device)[mine].to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device)[mine].to(x.device)
        flip = torch.rand(n, generator=generator, device=generator.device)[mine].to(x.device) < 0.5
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H) rows of the padded image
        cols = torch.arange(w, device=x.device).expand(b, w)
        if self.hflip:
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        cols = dx[:, None] + cols  # (B, W) columns of the padded image, reversed for flipped samples
        xp = F.pad(x, (p, p, p, p)) if p else x  # zeros = black for uint8 input
        xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
        return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


@dataclass
class Batch:
    """One batch, on the iterator's device.

    Shapes:
        x: float32 ``(B, C, H, W)``, normalised; y: int64 ``(B,)``; index: int64 ``(B,)`` positions in the split
        (e.g. to look up cached teacher logits).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class BatchIterator:
    """Batches of a :class:`Split` held in memory (moved to ``device`` once).

    Iterating yields one epoch. With ``shuffle`` the permutation, and with ``augment`` the augmentation, are drawn
    from generators seeded by ``(seed, epoch)`` only: call :meth:`set_epoch` before each epoch (iterating twice
    without it repeats the same epoch).

    With ``world > 1`` processes (:class:`cnn2gnn.distributed.World`), ``batch_size`` is the global batch: every
    process draws the same permutation and augmentation and yields its own contiguous ``batch_size / world`` rows
    of each global batch (process ``rank``); a ragged last batch is always dropped, so all get equal batches.

    Args:
        split: the samples.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        mean: per-channel mean for :func:`normalize`.
        std: per-channel std for :func:`normalize`.
        shuffle: visit samples in a seeded random order.
        seed: seed of the order and the augmentation.
        drop_last: skip the last, incomplete batch.
        augment: applied to uint8 images before normalisation, or None.
        device: where batches are produced.
        rank: this process's number, of ``world`` processes.
        world: processes that share each batch (``batch_size`` must divide among them).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        augment: Augment | None = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"BatchIterator: batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"BatchIterator: rank must be in 0..{world - 1}, got rank={rank}")
        if world > 1 and (batch_size % world or not drop_last):
            raise ValueError(
                f"BatchIterator: {world} processes need drop_last and a batch_size they divide, got {batch_size}"
            )
        channels = split.images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"BatchIterator: {channels} channels but mean/std of length {len(mean)}/{len(std)}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle, self.seed, self.drop_last, self.augment = shuffle, seed, drop_last, augment
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = self.labels.shape[0]
        if self.shuffle:
            order = torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch, 0))
        else:
            order = torch.arange(n)
        order = order.to(self.device)
        aug_gen = _epoch_generator(self.seed, self.epoch, 1) if self.augment is not None else None
        part = self.batch_size // self.world  # rows of a global batch per process
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world > 1:
                index = index[self.rank * part : (self.rank + 1) * part]
            x = self.images[index]
            if self.augment is not None:
                x = self.augment(x, aug_gen, (self.rank, self.world))
            yield Batch(normalize(x, self.mean, self.std), self.labels[index], index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.labels.shape[0]}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, augment={self.augment}, device={self.device}"
            + (f", rank={self.rank}, world={self.world})" if self.world > 1 else ")")
        )
