"""Inference policies of a graph student (docs/method.md section 5): where a test image finds its neighbours.

The one place that names the policies and their properties. A model states which ones it supports (its
``policies`` attribute; teachers and the MLP have none); evaluation, distillation, the benchmark and the command
line ask :func:`supported` and :func:`resolve` instead of deciding themselves. Adding a policy means a name here
(with its description and properties) and its forward pass in the model that supports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from .errors import UserError

Policy = Literal["batch", "anchors"]
POLICIES: tuple[str, ...] = get_args(Policy)

DESCRIPTIONS: dict[str, str] = {
    "batch": "the graph is built among the images of a batch (predictions depend on batch-mates: shuffle)",
    "anchors": "each image is linked to its k nearest images of a fixed bank stored in the model",
}
# why a model cannot use a policy, said when it lacks what the policy needs
MISSING: dict[str, str] = {
    "batch": "this model builds no graph among a batch",
    "anchors": "this model has no anchor bank (trained with bank.size=0)",
}
# policies whose prediction for an image does not depend on the other images passed with it
INDEPENDENT: frozenset[str] = frozenset({"anchors"})
# the default is the first of these that a model supports
PREFERENCE: tuple[str, ...] = ("anchors", "batch")
NONE = "none"  # the "policy" of a model without a graph (a teacher, the MLP)


def depends_on_batch(name: str) -> bool:
    """Whether a prediction under policy ``name`` depends on the other images of its batch (then evaluation must
    shuffle, and shows what class-sorted batches would leak)."""
    return name in POLICIES and name not in INDEPENDENT


def supported(model: Any) -> tuple[str, ...]:
    """The policies ``model`` supports, in :data:`POLICIES` order; ``()`` for a model without a graph."""
    own = tuple(getattr(model, "policies", ()))
    return tuple(p for p in POLICIES if p in own)


def default(model: Any) -> str:
    """The policy used when none is asked for: the first of :data:`PREFERENCE` the model supports, else ``none``."""
    own = supported(model)
    return next((p for p in PREFERENCE if p in own), NONE)


def check(policy: str) -> str:
    """``policy`` if it is a known name, else a one-line :class:`UserError` listing the known ones."""
    if policy not in POLICIES:
        raise UserError(f"unknown graph policy '{policy}' (known: {', '.join(POLICIES)})")
    return policy


def resolve(model: Any, policy: str | None = None) -> tuple[Callable, str]:
    """A ``logits = f(x)`` for ``model`` under ``policy`` (None: :func:`default`) and the policy's name.

    A model without a graph ignores ``policy`` and runs as it is (name ``none``); a graph student that does not
    support the policy is a :class:`UserError` saying what it lacks.
    """
    own = supported(model)
    if not own:
        return model, NONE
    policy = default(model) if policy is None else check(policy)
    if policy not in own:
        raise UserError(f"{MISSING[policy]}: use --graph {' or --graph '.join(own)}")
    return (lambda x: model(x, graph=policy)), policy
