"""Tests for the response-based distillation loss (docs/method.md section 4), against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from cnn2gnn.distill import DistillationLoss, distillation_loss

STUDENT = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]
TEACHER = [[1.5, 0.2, 0.3], [-0.5, 3.0, 0.0]]
TARGETS = [0, 2]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _expected(alpha: float, t: float) -> tuple[float, float, float]:
    s, te = np.array(STUDENT, dtype=np.float64), np.array(TEACHER, dtype=np.float64)
    ce = float(np.mean([-_log_softmax(s)[i, y] for i, y in enumerate(TARGETS)]))
    log_ps, log_pt = _log_softmax(s / t), _log_softmax(te / t)
    kd = float(t * t * (np.exp(log_pt) * (log_pt - log_ps)).sum() / s.shape[0])
    return (1 - alpha) * ce + alpha * kd, ce, kd


@pytest.mark.parametrize(("alpha", "t"), [(0.9, 4.0), (0.3, 1.0), (1.0, 2.5)])
def test_hand_computed_value(alpha, t):
    out = distillation_loss(
        torch.tensor(STUDENT, dtype=torch.float64),
        torch.tensor(TARGETS),
        torch.tensor(TEACHER, dtype=torch.float64),
        alpha=alpha,
        temperature=t,
    )
    assert set(out) == {"loss", "ce", "kd"}
    loss, ce, kd = _expected(alpha, t)
    assert math.isclose(out["ce"].item(), ce, rel_tol=1e-9)
    assert math.isclose(out["kd"].item(), kd, rel_tol=1e-9)
    assert math.isclose(out["loss"].item(), loss, rel_tol=1e-9)


def test_alpha_zero_and_no_teacher_give_cross_entropy():
    s, y, t = torch.tensor(STUDENT), torch.tensor(TARGETS), torch.tensor(TEACHER)
    out = distillation_loss(s, y, t, alpha=0.0)
    torch.testing.assert_close(out["loss"], out["ce"])
    out = distillation_loss(s, y, alpha=0.9)
    torch.testing.assert_close(out["loss"], out["ce"])
    assert out["kd"].item() == 0.0


def test_kd_zero_iff_logits_match():
    s = torch.tensor(STUDENT)
    assert abs(distillation_loss(s, torch.tensor(TARGETS), s.clone())["kd"].item()) < 1e-6
    assert distillation_loss(s, torch.tensor(TARGETS), torch.tensor(TEACHER))["kd"].item() > 0


def test_gradient_reaches_student_only():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER, requires_grad=True)
    distillation_loss(s, torch.tensor(TARGETS), t)["loss"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_invalid_alpha_raises(alpha):
    s, y = torch.tensor(STUDENT), torch.tensor(TARGETS)
    with pytest.raises(ValueError, match="distillation_loss: alpha"):
        distillation_loss(s, y, alpha=alpha)
    with pytest.raises(ValueError, match="DistillationLoss: alpha"):
        DistillationLoss(alpha=alpha)


@pytest.mark.parametrize("t", [0.0, -1.0])
def test_invalid_temperature_raises(t):
    with pytest.raises(ValueError, match=f"distillation_loss: temperature must be > 0, got temperature={t}"):
        distillation_loss(torch.tensor(STUDENT), torch.tensor(TARGETS), temperature=t)
    with pytest.raises(ValueError, match="DistillationLoss: temperature"):
        DistillationLoss(temperature=t)


def test_module_wrapper():
    crit = DistillationLoss(alpha=0.3, temperature=1.0)
    assert repr(crit) == "DistillationLoss(alpha=0.3, temperature=1.0)"
    s, y, t = torch.tensor(STUDENT), torch.tensor(TARGETS), torch.tensor(TEACHER)
    expected = distillation_loss(s, y, t, alpha=0.3, temperature=1.0)
    for key, value in crit(s, y, t).items():
        torch.testing.assert_close(value, expected[key])
    with pytest.raises(ValueError, match="teacher_logits"):
        crit(s, y, t[:, :2])
