"""Reading model folders written by older versions of cnn2gnn: their description and weight names in today's form.

Format 1 (cnn2gnn 0.1) stored a student as ``GNNStudent`` keyword arguments (``meta["student"]["kwargs"]``, the MLP
as ``aggregate="none"``) with flat weight names (``lin1``, ``nbr1``, ``anchor_x``, ...). Format 2 stores the model
section of the config and names the weights after the modules that hold them (``conv1.lin``, ``bank.images``...).
:func:`upgrade` turns the first into the second; ``checkpoint.load_model`` applies it, so old folders load as they are.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["upgrade"]

# format-1 weight name -> format-2 weight name, for the GNN student (the MLP keeps lin1/lin2)
GNN_NAMES_V1 = {
    "lin1.": "conv1.lin.",
    "lin2.": "conv2.lin.",
    "nbr1.": "conv1.nbr.",
    "nbr2.": "conv2.nbr.",
    "anchor_x": "bank.images",
    "anchor_y": "bank.labels",
    "anchor_index": "bank.index",
}
BANK_V1 = ("anchor_x", "anchor_y", "anchor_index")


def _meta_v1(meta: dict[str, Any]) -> dict[str, Any]:
    meta = dict(meta)
    if meta.get("kind") == "student":
        old = meta["student"]
        model = {k: v for k, v in old["kwargs"].items() if k != "image_shape"}
        if model.get("aggregate") == "none":
            model["arch"], model["aggregate"] = "mlp", "sage"
        else:
            model["arch"] = "gnn"
        meta["student"] = {"model": model, "bank": int(old.get("anchors", 0))}
    meta["format_version"] = 2
    return meta


def _state_v1(state: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Tensor]:
    if meta.get("kind") != "student":
        return state
    if meta["student"]["model"]["arch"] == "mlp" or not meta["student"]["bank"]:
        state = {k: v for k, v in state.items() if k not in BANK_V1}  # v1 stored an empty bank in every student
    if meta["student"]["model"]["arch"] == "mlp":
        return state
    renamed = {}
    for key, value in state.items():
        old = next((o for o in GNN_NAMES_V1 if key.startswith(o)), None)
        renamed[key if old is None else GNN_NAMES_V1[old] + key[len(old) :]] = value
    return renamed


def upgrade(meta: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """``(meta, convert)``: the description in today's format and a function that renames a weights dict of the
    folder's format to today's (the identity for a current folder)."""
    if meta.get("format_version") == 1:
        new = _meta_v1(meta)
        return new, lambda state: _state_v1(state, new)
    return meta, lambda state: state
