"""Tests of the label regimes (issue 14): few labels per class (the rest unlabelled, label -1) and noisy labels
(train and val flipped, test clean), the loss and the anchor bank with unlabelled images, and a run end to end."""

import json

import pytest
import torch
from helpers import ONE_THREAD, metrics, run_cli

from cnn2gnn.config import StudentModelConfig
from cnn2gnn.data import load_dataset
from cnn2gnn.data.regimes import UNLABELLED, apply_regime, few_labels, labelled, noisy_labels
from cnn2gnn.distill import distillation_loss
from cnn2gnn.models import GNNStudent
from cnn2gnn.student import stratified_anchors


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_few_labels_keeps_n_per_class_in_train_and_val(digits):
    b = few_labels(digits, 5, seed=0)
    known = b.train.labels != UNLABELLED
    assert torch.bincount(b.train.labels[known], minlength=10).tolist() == [5] * 10
    assert torch.equal(b.train.labels[known], digits.train.labels[known])  # kept labels are the true ones
    assert torch.equal(b.train.images, digits.train.images)  # every image stays, unlabelled
    assert torch.bincount(b.val.labels, minlength=10).tolist() == [5] * 10
    assert torch.equal(b.test.labels, digits.test.labels)
    again = few_labels(digits, 5, seed=0)
    assert torch.equal(again.train.labels, b.train.labels) and not torch.equal(
        few_labels(digits, 5, seed=1).train.labels, b.train.labels
    )


def test_noisy_labels_flip_the_fraction_to_other_classes_and_leave_test_clean(digits):
    b = noisy_labels(digits, 0.4, seed=0)
    for noisy, clean in ((b.train, digits.train), (b.val, digits.val)):
        flipped = noisy.labels != clean.labels
        assert int(flipped.sum()) == round(0.4 * len(clean))
        assert noisy.labels.min() >= 0 and noisy.labels.max() < 10
    assert torch.equal(b.test.labels, digits.test.labels)
    assert apply_regime(digits, None, 0.0, 0) is digits


def test_labelled_repeats_the_labelled_images_to_the_split_size(digits):
    b = few_labels(digits, 3, seed=0)
    seen = labelled(b.train)
    assert len(seen) == 30 and bool((seen.labels >= 0).all())
    repeated = labelled(b.train, size=len(b.train))
    assert abs(len(repeated) - len(b.train)) <= 15 and torch.equal(repeated.labels[:30], seen.labels)
    assert labelled(digits.train) is digits.train


def test_loss_uses_labelled_targets_for_ce_and_every_sample_for_kd():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g, requires_grad=True), torch.randn(6, 4, generator=g)
    y = torch.tensor([1, -1, 3, -1, -1, 0])
    out = distillation_loss(s, y, t, alpha=0.5, temperature=2.0)
    known = y >= 0
    torch.testing.assert_close(out["ce"], torch.nn.functional.cross_entropy(s[known], y[known]))
    torch.testing.assert_close(out["kd"], distillation_loss(s, y.clamp_min(0), t, alpha=0.5, temperature=2.0)["kd"])
    none = distillation_loss(s, torch.full((6,), -1), t, alpha=0.5, temperature=2.0)
    assert none["ce"].item() == 0.0 and torch.isfinite(none["loss"])
    none["loss"].backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_unlabelled_anchors_are_drawn_without_labels_and_send_no_label(digits):
    b = few_labels(digits, 2, seed=0)
    idx = stratified_anchors(b.train.labels, 40, seed=0)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40
    model = GNNStudent(64, 10, StudentModelConfig(hidden=8, k=3, label_messages=True), bank_size=0)
    x = b.train.images[idx].float().flatten(1)
    model.set_bank(x, b.train.labels[idx], idx)
    model.eval()
    with torch.no_grad():
        logits = model(x[:5], graph="anchors")
    assert torch.isfinite(logits).all()
    hidden = model.bank.labels.clone()
    model.bank.labels.fill_(UNLABELLED)
    model.bank.clear()
    with torch.no_grad():  # every anchor unlabelled: the label term is zero, the logits those of label_messages off
        silent = model(x[:5], graph="anchors")
        model.label_gain.weight.zero_()
        model.bank.labels.copy_(hidden)
        model.bank.clear()
        torch.testing.assert_close(model(x[:5], graph="anchors"), silent)


@pytest.mark.slow
def test_a_few_label_teacher_and_student_run_end_to_end(tmp_path):
    regime = ["--set", "data.labels_per_class=5"]
    t, s = tmp_path / "t", tmp_path / "s"
    code, _, err = run_cli("teacher", "--data", "digits", "--arch", "resnet8", "--epochs", 1, "--set", "model.width=4",
                           *regime, *ONE_THREAD, "--quiet", "--out", t)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("distill", "--data", "digits", "--teacher", t, "--epochs", 1, "--hidden", 16,
                           "--set", "bank.size=40", *regime, *ONE_THREAD, "--quiet", "--out", s)  # fmt: skip
    assert code == 0, err
    meta = json.loads((s / "meta.json").read_text())
    assert meta["regime"] == {"labels_per_class": 5, "label_noise": 0.0}
    assert (json.loads((t / "manifest.json").read_text())["data"]["train"]) == len(load_dataset("digits").train)
    assert all(0 <= r["val_acc"] <= 1 and r["train_kd"] > 0 for r in metrics(s))


def test_the_bench_report_states_the_regime_in_its_heading():
    from cnn2gnn.bench.report import regime_name

    assert regime_name({"name": "digits"}) == "every label, clean"
    assert regime_name({"labels_per_class": 10, "label_noise": 0.0}) == "10 labels per class"
    assert regime_name({"labels_per_class": None, "label_noise": 0.4}) == "40% of labels flipped (test clean)"
