"""Image embeddings in front of the GNN student and its same-width MLP baseline (issue 3).

The student's two learned layers see ``phi(x)`` instead of the raw pixels when ``model.embed`` is not ``none``:

- ``randconv``: fixed random convolution features. ``phi`` has no trainable parameters, so the student stays a
  two-layer network; because the MLP baseline uses the same ``phi``, any gain of the graph over the MLP is still the
  graph's.
- ``patch``: a learned patch embedding (non-overlapping patches, one linear map each, ReLU). It *is* a third learned
  layer; the MLP baseline with the same switch learns its own, so the comparison stays like for like.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDS = ("none", "randconv", "patch")


def input_features(x: Tensor, embed: nn.Module | None) -> Tensor:
    """The rows the learned layers see: the flattened images, or their embedding."""
    x = x.reshape(x.shape[0], -1)
    return x if embed is None else embed(x)


class RandomConvEmbedding(nn.Module):
    r"""Random convolution features: a bank of fixed Gaussian filters, ReLU, average pooling, flattened.

    .. math::
        \phi(\mathbf{x}) = \mathrm{vec}\,\mathrm{AvgPool}_p\!\left(\mathrm{ReLU}(\mathbf{F} * \mathbf{x})\right),
        \qquad \mathbf{F}_c \sim \mathcal{N}(0, \mathbf{I}),\; \mathbf{F}_c \leftarrow
        (\mathbf{F}_c - \bar{\mathbf{F}}_c) / \lVert \mathbf{F}_c - \bar{\mathbf{F}}_c \rVert

    Each filter is centred (zero mean, so it responds to edges and strokes rather than brightness) and scaled to
    unit norm. The filters are drawn from their own ``seed`` (not the run's), stored as a buffer (saved with the
    model, never trained). Padding ``kernel // 2`` keeps the spatial size before pooling; pooling of ``pool`` x
    ``pool`` cells (``ceil_mode``) gives translation tolerance of about ``pool`` pixels.

    Args:
        image_shape: (C, H, W) of the input images.
        filters: number of random filters.
        kernel: filter side.
        pool: side of the average-pooling cells.
        seed: seed of the filter draw.

    Shapes:
        x: (n, C*H*W) or (n, C, H, W) -> (n, out_features), ``out_features = filters * ceil(H/pool) * ceil(W/pool)``
    """

    def __init__(self, image_shape: tuple[int, int, int], *, filters: int = 64, kernel: int = 5, pool: int = 4,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        name = type(self).__name__
        if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
            raise ValueError(f"{name}: image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
        for arg, value in (("filters", filters), ("kernel", kernel), ("pool", pool)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {arg}={value!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.kernel, self.pool = kernel, pool
        c, h, w = self.image_shape
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(filters, c, kernel, kernel, generator=g)
        weight = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
        weight = weight / weight.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        self.register_buffer("weight", weight)
        self.out_features = filters * (-(-h // pool)) * (-(-w // pool))

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        z = torch.relu(nn.functional.conv2d(x, self.weight, padding=self.kernel // 2))
        z = nn.functional.avg_pool2d(z, self.pool, ceil_mode=True)
        return z.flatten(1)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, filters={self.weight.shape[0]}, kernel={self.kernel}, pool={self.pool}"


class PatchEmbedding(nn.Module):
    r"""A learned patch embedding: each non-overlapping ``patch`` x ``patch`` cell is mapped by the same linear map
    to ``filters`` values, then ReLU, flattened.

    .. math::
        \phi(\mathbf{x}) = \mathrm{vec}\,\mathrm{ReLU}(\mathbf{E} *_{p} \mathbf{x} + \mathbf{b}),
        \qquad \mathbf{E} \in \mathbb{R}^{f \times C \times p \times p}

    (a convolution of stride p). Rows and columns that do not fill a whole patch (H mod p, W mod p) are dropped.

    Args:
        image_shape: (C, H, W) of the input images.
        filters: values per patch f.
        patch: patch side p (at most min(H, W)).

    Shapes:
        x: (n, C*H*W) or (n, C, H, W) -> (n, out_features), ``out_features = filters * (H // patch) * (W // patch)``
    """

    def __init__(self, image_shape: tuple[int, int, int], *, filters: int = 64, patch: int = 4) -> None:
        super().__init__()
        name = type(self).__name__
        if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
            raise ValueError(f"{name}: image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
        for arg, value in (("filters", filters), ("patch", patch)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {arg}={value!r}")
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        if patch > min(h, w):
            raise ValueError(f"{name}: patch={patch} is larger than the {h}x{w} images")
        self.proj = nn.Conv2d(c, filters, patch, stride=patch)
        self.out_features = filters * (h // patch) * (w // patch)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.proj(x.reshape(x.shape[0], *self.image_shape))).flatten(1)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}"


def check_image_shape(owner: str, image_shape, in_features: int) -> None:
    """A ``ValueError`` naming ``owner`` when the (C, H, W) ``image_shape`` does not hold ``in_features`` values."""
    if image_shape is not None and math.prod(image_shape) != in_features:
        raise ValueError(f"{owner}: image_shape {tuple(image_shape)} does not have in_features={in_features} values")


def make_embedding(
    embed: str, image_shape: tuple[int, int, int] | None, *, filters: int = 64, kernel: int = 5, pool: int = 4
) -> nn.Module | None:
    """The input embedding named by ``embed`` (``none`` -> None); ``image_shape`` is required for the others.
    ``kernel`` is the random filters' side for ``randconv`` and the patch side for ``patch`` (``pool`` is unused
    there)."""
    if embed not in EMBEDS:
        raise ValueError(f"embed must be one of {EMBEDS}, got {embed!r}")
    if embed == "none":
        return None
    if image_shape is None:
        raise ValueError(f"embed={embed!r} needs the image shape (C, H, W)")
    if embed == "patch":
        return PatchEmbedding(tuple(image_shape), filters=filters, patch=kernel)
    return RandomConvEmbedding(tuple(image_shape), filters=filters, kernel=kernel, pool=pool)


def student_embedding(owner: str, cfg, image_shape, in_features: int) -> tuple[nn.Module | None, int]:
    """A student's input embedding from its model config (``embed`` keys) and the number of values it gives per
    image; the image shape checked against ``in_features``. Errors are ``ValueError`` naming ``owner``."""
    check_image_shape(owner, image_shape, in_features)
    try:
        embed = make_embedding(
            cfg.embed, image_shape, filters=cfg.embed_filters, kernel=cfg.embed_kernel, pool=cfg.embed_pool
        )
    except ValueError as err:
        raise ValueError(f"{owner}: {err}") from None
    return embed, in_features if embed is None else embed.out_features
