"""Tests of the fixed random-convolution input embedding (``model.embed=randconv``, issue 3): shape, no trained
parameters, centred unit-norm filters saved with the model, the same features for the MLP and the GNN, the anchors
policy's batch independence on top of it, and a distill -> load -> evaluate run through the command line."""

import json

import pytest
import torch
from helpers import ONE_THREAD, run_cli

from cnn2gnn.checkpoint import load_model
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models import GNNStudent, MLPStudent, create_student
from cnn2gnn.models.embed import PatchEmbedding, RandomConvEmbedding, make_embedding

SHAPE = (1, 8, 8)


def test_shape_and_no_trained_parameters():
    emb = RandomConvEmbedding(SHAPE, filters=6, kernel=3, pool=3)
    assert emb.out_features == 6 * 3 * 3  # ceil(8 / 3) = 3 cells per side
    x = torch.randn(5, 64)
    assert emb(x).shape == (5, emb.out_features)
    assert torch.equal(emb(x), emb(x.view(5, *SHAPE)))
    assert list(emb.parameters()) == [] and "weight" in emb.state_dict()
    assert (emb(x) >= 0).all()  # ReLU then averaging


def test_filters_are_centred_unit_norm_and_fixed_by_the_seed():
    a, b, c = (RandomConvEmbedding((3, 8, 8), filters=5, seed=s) for s in (0, 0, 1))
    w = a.weight.flatten(1)
    assert torch.allclose(w.mean(dim=1), torch.zeros(5), atol=1e-6)
    assert torch.allclose(w.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_a_constant_image_gives_zero_features_away_from_the_border():
    emb = RandomConvEmbedding((1, 12, 12), filters=4, kernel=3, pool=4)
    z = emb(torch.full((1, 144), 3.0)).view(4, 3, 3)
    assert torch.allclose(z[:, 1, 1], torch.zeros(4), atol=1e-5)  # centred filters ignore brightness


@pytest.mark.parametrize(
    ("embed", "shape", "fragment"),
    [
        ("randconv", None, "needs the image shape"),
        ("patch", None, "needs the image shape"),
        ("fourier", SHAPE, "embed must be one of"),
    ],
)
def test_bad_embedding_arguments(embed, shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_embedding(embed, shape)


@pytest.mark.parametrize("arch", ["gnn", "mlp"])
@pytest.mark.parametrize("embed", ["none", "randconv"])
def test_student_and_mlp_check_the_image_shape(arch, embed):
    # the MLP did not check it after the redesign (it failed in forward, or never with embed=none)
    cfg = StudentModelConfig(arch=arch, hidden=8, k=3, embed=embed)
    with pytest.raises(ValueError, match=r"(GNN|MLP)Student: image_shape \(1, 7, 7\) does not have in_features=64"):
        create_student(cfg, 64, 3, image_shape=(1, 7, 7))


def test_student_needs_the_image_shape_for_an_embedding():
    with pytest.raises(ValueError, match="GNNStudent: embed='randconv' needs the image shape"):
        GNNStudent(64, 3, StudentModelConfig(hidden=8, k=3, embed="randconv"))


def student(arch: str = "gnn", **kwargs) -> GNNStudent | MLPStudent:
    torch.manual_seed(0)
    cfg = StudentModelConfig(
        arch=arch, hidden=8, k=3, dropout=0.0, embed="randconv", embed_filters=4, embed_kernel=3, embed_pool=2, **kwargs
    )
    return create_student(cfg, 64, 3, image_shape=SHAPE)


@pytest.mark.parametrize("graph", ["batch", "anchors"])
def test_gnn_and_mlp_see_the_same_features_and_every_weight_learns(graph):
    gnn, mlp = student(aggregate="sage"), student("mlp")
    assert isinstance(gnn, GNNStudent) and isinstance(mlp, MLPStudent)
    assert torch.equal(gnn.embed.weight, mlp.embed.weight)
    assert gnn.conv1.lin.in_features == mlp.lin1.in_features == 4 * 4 * 4
    g = torch.Generator().manual_seed(1)
    gnn.set_bank(torch.randn(12, 64, generator=g), torch.randint(0, 3, (12,), generator=g), torch.arange(12))
    x = torch.randn(10, *SHAPE, generator=g)
    gnn(x, graph=graph).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gnn.parameters())


def assert_anchors_ignore_batch_order(model: GNNStudent, n: int, g: torch.Generator) -> None:
    """Under the anchors policy a reordered batch gives reordered predictions, and one image alone the same."""
    model.eval()
    x = torch.randn(n, 64, generator=g)
    perm = torch.randperm(n, generator=g)
    with torch.no_grad():
        full = model(x, graph="anchors")
        assert torch.allclose(model(x[perm], graph="anchors"), full[perm], atol=1e-6)
        assert torch.allclose(model(x[:1], graph="anchors"), full[:1], atol=1e-6)


def test_anchors_policy_with_embedding_ignores_batch_order():
    model = student(aggregate="sage")
    g = torch.Generator().manual_seed(2)
    model.set_bank(torch.randn(12, 64, generator=g), torch.randint(0, 3, (12,), generator=g), torch.arange(12))
    assert_anchors_ignore_batch_order(model, 9, g)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "kind", "features"),
    [
        (["model.embed=randconv", "model.embed_pool=2"], RandomConvEmbedding, 64 * 4 * 4),
        (["model.embed=patch", "model.embed_kernel=4", "model.embed_filters=6"], PatchEmbedding, 6 * 2 * 2),
    ],
    ids=["randconv", "patch"],
)
def test_distill_with_an_embedding_and_reload(tmp_path, overrides, kind, features):
    out = tmp_path / "student"
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, text, err = run_cli(
        "distill", "--data", "digits", "--epochs", 1, *sets, "--set", "model.hidden=16", "--set", "bank.size=40",
        *ONE_THREAD, "--out", out,
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert [meta["in_channels"], *meta["image_size"]] == [1, 8, 8]  # the image shape the embedding is rebuilt with
    model, _ = load_model(out)
    assert isinstance(model.embed, kind) and model.conv1.lin.in_features == features
    code, text, err = run_cli("evaluate", "--model", out, "--data", "digits", "--graph", "anchors", "--json")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(text)["mean"] == pytest.approx(summary["test_acc_anchors"], abs=1e-6)


# -- the learned patch embedding (model.embed=patch) ------------------------------------------------------------


def test_patch_embedding_maps_each_patch_alone():
    emb = PatchEmbedding((2, 9, 8), filters=5, patch=4)
    assert emb.out_features == 5 * 2 * 2  # the 9th row does not fill a patch and is dropped
    assert [p.shape for p in emb.parameters()] == [(5, 2, 4, 4), (5,)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 9, 8, generator=g)
    z = emb(x).view(3, 5, 2, 2)
    patch = x[:, :, 4:8, 0:4].flatten(1)  # second row of patches, first column
    by_hand = torch.relu(patch @ emb.proj.weight.flatten(1).T + emb.proj.bias)
    assert torch.allclose(z[:, :, 1, 0], by_hand, atol=1e-5)
    y = x.clone()
    y[:, :, 8, :] = 100.0  # the dropped row changes nothing
    assert torch.equal(emb(y), emb(x))
    with pytest.raises(ValueError, match="patch=10 is larger than the 9x8 images"):
        PatchEmbedding((2, 9, 8), patch=10)


@pytest.mark.parametrize("graph", ["batch", "anchors"])
def test_patch_embedding_learns_with_the_student(graph):
    torch.manual_seed(0)
    cfg = StudentModelConfig(hidden=8, k=3, dropout=0.0, embed="patch", embed_filters=4, embed_kernel=4)
    model = GNNStudent(64, 3, cfg, image_shape=SHAPE)
    assert model.conv1.lin.in_features == 4 * 2 * 2
    g = torch.Generator().manual_seed(1)
    model.set_bank(torch.randn(12, 64, generator=g), torch.randint(0, 3, (12,), generator=g), torch.arange(12))
    model(torch.randn(10, 64, generator=g), graph=graph).square().sum().backward()
    assert model.embed.proj.weight.grad is not None and model.embed.proj.weight.grad.abs().sum() > 0
    assert_anchors_ignore_batch_order(model, 7, g)
