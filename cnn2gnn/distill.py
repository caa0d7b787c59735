"""Response-based knowledge distillation loss of CNN2GNN (docs/method.md section 4).

``L = (1 - alpha) * CE(y, z_s) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, returned as a dict of
named terms ``{"loss", "ce", "kd"}`` so the training loop can log each one. The defaults of ``alpha`` and ``T`` are
those of the config (:class:`cnn2gnn.config.DistillConfig`: alpha 0.5, T 2, selected on validation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DistillConfig

__all__ = ["DistillationLoss", "distillation_loss"]


def _check_hparams(owner: str, alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: alpha must be in [0, 1], got alpha={alpha!r}")
    if not temperature > 0.0:
        raise ValueError(f"{owner}: temperature must be > 0, got temperature={temperature!r}")


def distillation_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor | None = None,
    *,
    alpha: float = DistillConfig.alpha,
    temperature: float = DistillConfig.temperature,
) -> dict[str, Tensor]:
    r"""Cross-entropy on the labels plus temperature-scaled KL to the teacher (https://arxiv.org/abs/2404.14822).

    .. math::
        \mathcal{L} = (1 - \alpha)\, \mathrm{CE}(y, z_s)
            + \alpha\, T^2\, \mathrm{KL}\!\left(\mathrm{softmax}(z_t / T) \,\|\, \mathrm{softmax}(z_s / T)\right)

    The weight ``1 - alpha`` multiplies the cross-entropy with the hard labels and ``alpha`` multiplies the
    distillation term ``T^2 * KL``. Both terms are means over the batch (the KL is summed over classes, then
    averaged over samples: ``batchmean``). The teacher's logits are detached, so gradients reach the student only.
    Without ``teacher_logits`` the loss is the cross-entropy alone (``alpha`` is treated as 0) and ``kd`` is 0.

    Args:
        student_logits: the student's logits :math:`z_s`.
        targets: class indices :math:`y`.
        teacher_logits: the teacher's logits :math:`z_t`, or ``None`` for plain cross-entropy.
        alpha: weight of the distillation term, in :math:`[0, 1]` (default 0.5, the config's).
        temperature: softmax temperature :math:`T > 0` (default 2, the config's).

    Returns:
        ``{"loss": total, "ce": CE(y, z_s), "kd": T^2 * KL (before the alpha weight)}``, all scalar tensors.

    Shapes:
        - student_logits, teacher_logits: :math:`(B, C)`
        - targets: :math:`(B,)`, integer
    """
    name = "distillation_loss"
    _check_hparams(name, alpha, temperature)
    if student_logits.dim() != 2:
        raise ValueError(f"{name}: student_logits must be (B, C), got {tuple(student_logits.shape)}")
    if targets.shape != student_logits.shape[:1]:
        raise ValueError(
            f"{name}: targets must be ({student_logits.shape[0]},) class indices, got {tuple(targets.shape)}"
        )
    # unlabelled samples (target -1, the few-label regime) count in the KD term only; no sync on the host
    ce = F.cross_entropy(student_logits, targets, ignore_index=-1, reduction="sum") / (targets >= 0).sum().clamp_min(1)
    if teacher_logits is None:
        kd = torch.zeros((), dtype=ce.dtype, device=ce.device)
        return {"loss": ce, "ce": ce, "kd": kd}
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"{name}: teacher_logits {tuple(teacher_logits.shape)} must match student_logits "
            f"{tuple(student_logits.shape)}"
        )
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    kd = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
    loss = (1.0 - alpha) * ce + alpha * kd
    return {"loss": loss, "ce": ce, "kd": kd}


class DistillationLoss(nn.Module):
    r"""Module form of :func:`distillation_loss`, holding ``alpha`` and ``temperature`` (docs/method.md section 4).

    CNN2GNN (https://arxiv.org/abs/2404.14822) distils the teacher's soft outputs into the GNN student:

    .. math::
        \mathcal{L} = (1 - \alpha)\, \mathrm{CE}(y, z_s)
            + \alpha\, T^2\, \mathrm{KL}\!\left(\mathrm{softmax}(z_t / T) \,\|\, \mathrm{softmax}(z_s / T)\right)

    Args:
        alpha: weight of the distillation term (``1 - alpha`` weights the cross-entropy; default 0.5).
        temperature: softmax temperature :math:`T > 0` (default 2).

    Shapes:
        - student_logits, teacher_logits: :math:`(B, C)`; targets: :math:`(B,)`
        - output: dict of scalar tensors ``{"loss", "ce", "kd"}``
    """

    def __init__(self, alpha: float = DistillConfig.alpha, temperature: float = DistillConfig.temperature) -> None:
        super().__init__()
        _check_hparams(type(self).__name__, alpha, temperature)
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def forward(
        self, student_logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None
    ) -> dict[str, Tensor]:
        return distillation_loss(
            student_logits, targets, teacher_logits, alpha=self.alpha, temperature=self.temperature
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"
