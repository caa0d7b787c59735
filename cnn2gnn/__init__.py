"""cnn2gnn: distil a CNN teacher into a two-layer GNN student with a learned sparse graph head.

Reference implementation of Jiao, Zhang, Li, "CNN2GNN: How to Bridge CNN with GNN" (arXiv 2404.14822). The public
names below load on first use (PEP 562), so ``import cnn2gnn`` (and ``cnn2gnn --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # the graph head (graph.py) and its graphs in PyTorch Geometric's form (pyg.py)
    "SparseGraphLearner", "normalize_adj", "pairwise_sq_dists", "sparse_graph", "sparse_neighbours", "symmetrize",
    "dense_to_edge_index", "to_edge_index",
    # graph layers and students (models/)
    "GCNLayer", "SAGELayer", "AnchorBank", "GNNStudent", "MLPStudent", "create_student",
    # the loss, the config, model folders, the training recipes
    "DistillationLoss", "distillation_loss",
    "StudentConfig", "StudentModelConfig", "TeacherConfig", "build_config",
    "load_model", "save_model_dir",
    "train_student", "train_teacher",
]  # fmt: skip

_LAZY = {  # the module that defines each public name (tests/test_library.py checks them against __all__)
    ".graph": ("SparseGraphLearner", "normalize_adj", "pairwise_sq_dists", "sparse_graph", "sparse_neighbours",
               "symmetrize"),
    ".pyg": ("dense_to_edge_index", "to_edge_index"),
    ".models.layers": ("GCNLayer", "SAGELayer"),
    ".models": ("AnchorBank", "GNNStudent", "MLPStudent", "create_student"),
    ".distill": ("DistillationLoss", "distillation_loss"),
    ".config": ("StudentConfig", "StudentModelConfig", "TeacherConfig", "build_config"),
    ".checkpoint": ("load_model", "save_model_dir"),
    ".student": ("train_student",),
    ".teacher": ("train_teacher",),
}  # fmt: skip
_MODULE = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:  # the same names for type checkers and editors (tests/test_library.py checks them)
    from .checkpoint import load_model, save_model_dir
    from .config import StudentConfig, StudentModelConfig, TeacherConfig, build_config
    from .distill import DistillationLoss, distillation_loss
    from .graph import SparseGraphLearner, normalize_adj, pairwise_sq_dists, sparse_graph, sparse_neighbours, symmetrize
    from .models import AnchorBank, GNNStudent, MLPStudent, create_student
    from .models.layers import GCNLayer, SAGELayer
    from .pyg import dense_to_edge_index, to_edge_index
    from .student import train_student
    from .teacher import train_teacher


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE[name], __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
