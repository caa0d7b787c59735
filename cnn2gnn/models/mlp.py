"""The same-width MLP baseline of the CNN2GNN student (docs/method.md section 6): the student's two layers without a
graph, trained with the same loss, data and budget, so a gain of the student over it is the graph's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import StudentModelConfig
from .embed import student_embedding
from .gnn import input_features

__all__ = ["MLPStudent"]


class MLPStudent(nn.Module):
    r"""Two linear layers of the student's width: :math:`\mathbf{Z} = \mathrm{ReLU}(\mathbf{X}\mathbf{W}_1 +
    \mathbf{b}_1)\mathbf{W}_2 + \mathbf{b}_2`, with the student's dropout and input embedding.

    It has no graph, so it supports no inference policy (``policies = ()``) and every image is classified on its own.

    Args:
        in_features: flattened image size D.
        num_classes: C.
        cfg: the model section of the student config; the MLP reads ``hidden``, ``dropout``, ``input_dropout`` and
            the ``embed`` keys.
        image_shape: (C, H, W) of the images; required when ``cfg.embed`` is not ``none``.

    Shapes:
        x: (n, D) or (n, C_in, H, W) -> logits (n, num_classes)
    """

    policies: tuple[str, ...] = ()

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        cfg: StudentModelConfig,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
    ) -> None:
        super().__init__()
        self.embed, features = student_embedding(type(self).__name__, cfg, image_shape, in_features)
        self.in_features, self.num_classes, self.cfg = in_features, num_classes, cfg
        self.lin1 = nn.Linear(features, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, num_classes)
        self.drop = nn.Dropout(cfg.dropout)
        self.in_drop = nn.Dropout(cfg.input_dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lin1(self.in_drop(input_features(x, self.embed)))
        return self.lin2(self.drop(torch.relu(h)))

    def extra_repr(self) -> str:
        return f"hidden={self.cfg.hidden}, embed={self.cfg.embed}"
