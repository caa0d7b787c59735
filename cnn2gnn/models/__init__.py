"""Models: CNN teachers (``cnn.py``), the GNN student (``gnn.py``) built from graph layers (``layers.py``) and an
anchor bank (``bank.py``), the same-width MLP baseline (``mlp.py``) and input embeddings (``embed.py``).
"""

from __future__ import annotations

from torch import nn

from ..config import StudentModelConfig
from .bank import AnchorBank
from .gnn import GNNStudent
from .layers import GCNLayer, SAGELayer
from .mlp import MLPStudent

__all__ = ["AnchorBank", "GCNLayer", "GNNStudent", "MLPStudent", "SAGELayer", "create_student"]


def create_student(
    cfg: StudentModelConfig,
    in_features: int,
    num_classes: int,
    *,
    image_shape: tuple[int, int, int] | list[int] | None = None,
    bank_size: int = 0,
) -> nn.Module:
    """The student ``cfg.arch`` names: :class:`GNNStudent` (with an empty anchor bank of ``bank_size`` images when
    it is > 0) or :class:`MLPStudent` (no graph, no bank). Invalid sizes are a ``ValueError`` naming the class."""
    if cfg.arch == "mlp":
        return MLPStudent(in_features, num_classes, cfg, image_shape=image_shape)
    return GNNStudent(in_features, num_classes, cfg, image_shape=image_shape, bank_size=bank_size)
