"""Shipping a trained student (issue 13): one self-contained graph that takes a float batch ``N x C x H x W`` of
pixel values in [0, 1] at the student's image size (any N) and returns logits, with the input normalisation and the
anchor bank (its states computed once) inside; saved as ONNX (served by ONNX Runtime) or as a ``torch.export``
program, with the class names in a JSON file beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import policy
from .errors import UserError

FORMATS = ("onnx", "torch-export")
MAX_BATCH = 1 << 16  # the largest batch the dynamic batch dimension admits


class Deployable(nn.Module):
    r"""A model folder's network as it ships: :math:`\mathrm{logits} = f((\mathbf{x} - \mu) / \sigma)` for pixels
    :math:`\mathbf{x} \in [0, 1]`, under the model's default inference policy, which must not depend on the other
    images of a batch (``anchors`` for a student with a bank; teachers and the MLP have no graph).

    The anchor bank's states are computed once here and held as constants of the graph, so the exported forward
    pass is the query path only: distances to the bank, top-k, the closed-form weights, a gather, the two layers.

    Shapes:
        x: :math:`(N, C, H, W)`, float in [0, 1] -> logits :math:`(N, \text{classes})`
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        _, name = policy.resolve(model)
        if policy.depends_on_batch(name):
            raise UserError(
                f"this student's predictions depend on the other images of a batch (policy '{name}'): only a student "
                "with an anchor bank (bank.size > 0) can be exported"
            )
        self.model, self.policy = model.eval(), name
        self.register_buffer("mean", torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.shape = (int(meta["in_channels"]), *map(int, meta["image_size"]))
        with torch.no_grad():  # compute (and cache) the bank's states now: the export sees them as constants
            self.model(torch.zeros(2, *self.shape))

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        return self.model(x) if self.policy == policy.NONE else self.model(x, graph=self.policy)


def export_model(model: nn.Module, meta: dict[str, Any], out: str | Path, fmt: str) -> dict[str, Any]:
    """Export ``model`` (from :func:`cnn2gnn.checkpoint.load_model`) to ``out`` in format ``fmt`` (``onnx`` |
    ``torch-export``), and write ``out`` with the suffix ``.json``: class names, input shape and range, policy."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}' (known: {', '.join(FORMATS)})")
    out = Path(out)
    net = Deployable(model.cpu(), meta).eval()
    example = torch.rand(2, *net.shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "torch-export":
            program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, str(out))
        else:
            _onnx(net, example, batch, out)
    info = {
        "format": fmt,
        "classes": list(meta["classes"]),
        "input": {"name": "images", "shape": ["N", *net.shape], "dtype": "float32", "range": [0.0, 1.0]},
        "output": {"name": "logits", "shape": ["N", len(meta["classes"])]},
        "policy": net.policy,
        "kind": meta["kind"],
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _onnx(net: nn.Module, example: Tensor, batch, out: Path) -> None:
    try:
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'cnn2gnn[export]'") from None
    program = torch.onnx.export(
        net, (example,), input_names=["images"], output_names=["logits"], dynamic_shapes={"x": {0: batch}},
        dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    program.save(str(out))
