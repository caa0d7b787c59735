"""Tests of the student's graph layers (docs/method.md section 3): hand-computed values, the edges path against the
dense path, equality with PyTorch Geometric's GCNConv / GraphConv on both paths, and that the students run them."""

import pytest
import torch
from helpers import pyg_graphconv, set_random

from cnn2gnn.config import StudentModelConfig
from cnn2gnn.graph import normalize_adj, sparse_neighbours, symmetrize
from cnn2gnn.models import GCNLayer, GNNStudent, MLPStudent, SAGELayer, create_student
from cnn2gnn.models.layers import gather


def _edges(n: int, m: int, k: int, seed: int):
    """Row-stochastic edges (weight, index), each (n, k), from random distances, and the same graph dense (n, m)."""
    g = torch.Generator().manual_seed(seed)
    weight, index = sparse_neighbours(torch.rand(n, m, generator=g), k)
    return (weight, index), torch.zeros(n, m).scatter(1, index, weight)


def test_gcn_matches_hand_computation():
    conv = GCNLayer(2, 1)
    with torch.no_grad():
        conv.lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        conv.lin.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # x W = [1, 2, 3]
    adj = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    expected = torch.tensor([[0.5 * 1 + 0.5 * 2 + 0.5], [2 + 0.5], [0.2 * 1 + 0.3 * 2 + 0.5 * 3 + 0.5]])
    torch.testing.assert_close(conv(x, adj), expected)
    # edges: node 0 has neighbours 1 (0.25) and 2 (0.75): half itself, half its neighbours, plus the bias
    edges = (torch.tensor([[0.25, 0.75]]), torch.tensor([[1, 2]]))
    torch.testing.assert_close(
        conv(x[:1], edges, conv.message(x)), torch.tensor([[0.5 * (1 + 0.25 * 2 + 0.75 * 3) + 0.5]])
    )


def test_sage_matches_hand_computation():
    conv = SAGELayer(2, 1)
    with torch.no_grad():
        conv.lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        conv.lin.bias.fill_(0.5)
        conv.nbr.weight.copy_(torch.tensor([[10.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # x W = [1, 2, 3], x U = [10, 0, 10]
    p = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
    expected = torch.tensor([[1 + 0.5 + 0.5 * 0 + 0.5 * 10], [2 + 0.5 + 10], [3 + 0.5 + 0.2 * 10 + 0.8 * 0]])
    torch.testing.assert_close(conv(x, p), expected)


@pytest.mark.parametrize("layer", [GCNLayer, SAGELayer])
def test_edges_path_equals_dense_path(layer):
    # queries aggregate k of m sources: gathering k rows equals multiplying by the dense (n, m) graph
    conv = layer(5, 3)
    set_random(conv, 1)
    edges, dense = _edges(4, 9, 3, seed=2)
    x, src = torch.randn(4, 5), torch.randn(9, 5)
    messages = conv.message(src)
    torch.testing.assert_close(gather(edges, messages), dense @ messages)
    if layer is SAGELayer:
        expected = conv.lin(x) + dense @ messages
    else:  # D^-1 (P + I) for a row-stochastic P: half the node, half its neighbours
        expected = 0.5 * (conv.message(x) + dense @ messages) + conv.lin.bias
    torch.testing.assert_close(conv(x, edges, messages), expected)


@pytest.mark.parametrize("layer", [GCNLayer, SAGELayer])
def test_bad_arguments_and_gradients(layer):
    with pytest.raises(ValueError, match=f"{layer.__name__}: in_features"):
        layer(0, 3)
    conv = layer(3, 2)
    with pytest.raises(ValueError, match=f"{layer.__name__}: graph"):
        conv(torch.randn(4, 3), torch.eye(5))
    x = torch.randn(4, 3, requires_grad=True)
    conv(x, torch.rand(4, 4)).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
    assert repr(conv) == f"{layer.__name__}(\n  3, 2\n  (lin): Linear(in_features=3, out_features=2, bias=True)" + (
        "\n  (nbr): Linear(in_features=3, out_features=2, bias=False)\n)" if layer is SAGELayer else "\n)"
    )


def test_sage_zero_init_starts_as_a_linear_layer():
    conv = SAGELayer(3, 2, zero_init=True)
    x = torch.randn(5, 3)
    torch.testing.assert_close(conv(x, torch.rand(5, 5)), conv.lin(x))


# ----------------------------------------------------------------------------------- PyTorch Geometric


def test_gcn_dense_path_equals_pyg_gcnconv():
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    g = torch.Generator().manual_seed(0)
    n, f_in, f_out = 7, 5, 3
    mask = torch.rand(n, n, generator=g) < 0.4
    a = symmetrize(torch.rand(n, n, generator=g) * mask)
    a.fill_diagonal_(0.0)
    x = torch.randn(n, f_in, generator=g)
    conv = GCNLayer(f_in, f_out)
    set_random(conv, 3)
    ref = pyg_nn.GCNConv(f_in, f_out, normalize=True, add_self_loops=True)
    with torch.no_grad():
        ref.lin.weight.copy_(conv.lin.weight)
        ref.bias.copy_(conv.lin.bias)
    edge_index = a.nonzero().T
    expected = ref(x, edge_index, a[edge_index[0], edge_index[1]])
    torch.testing.assert_close(conv(x, normalize_adj(a, mode="sym", self_loop=True)), expected)


def test_gcn_edges_path_equals_pyg_gcnconv_on_the_query_and_source_graph():
    # n queries and m sources as one graph: query i <- itself (1/2) and <- source j (p_ij / 2)
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    n, m, f_in, f_out = 4, 9, 5, 3
    conv = GCNLayer(f_in, f_out)
    set_random(conv, 4)
    (weight, index), _ = _edges(n, m, 3, seed=5)
    x, src = torch.randn(n, f_in), torch.randn(m, f_in)
    ref = pyg_nn.GCNConv(f_in, f_out, normalize=False, add_self_loops=False)
    with torch.no_grad():
        ref.lin.weight.copy_(conv.lin.weight)
        ref.bias.copy_(conv.lin.bias)
    rows = torch.arange(n).repeat_interleave(index.shape[1])
    source = torch.cat([index.flatten() + n, torch.arange(n)])
    target = torch.cat([rows, torch.arange(n)])
    edge_weight = torch.cat([0.5 * weight.flatten(), torch.full((n,), 0.5)])
    expected = ref(torch.cat([x, src]), torch.stack([source, target]), edge_weight)[:n]
    torch.testing.assert_close(conv(x, (weight, index), conv.message(src)), expected)


def test_sage_dense_path_equals_pyg_graphconv():
    conv = SAGELayer(5, 3)
    set_random(conv, 6)
    ref = pyg_graphconv(conv)
    _, p = _edges(7, 7, 3, seed=7)
    x = torch.randn(7, 5)
    target, source = p.nonzero().T  # p_ij: node i aggregates node j, an edge j -> i
    expected = ref(x, torch.stack([source, target]), p[target, source])
    torch.testing.assert_close(conv(x, p), expected)


def test_sage_edges_path_equals_pyg_graphconv_on_a_bipartite_graph():
    conv = SAGELayer(5, 3)
    set_random(conv, 8)
    ref = pyg_graphconv(conv)
    (weight, index), _ = _edges(4, 9, 3, seed=9)
    x, src = torch.randn(4, 5), torch.randn(9, 5)
    target = torch.arange(4).repeat_interleave(3)
    expected = ref((src, x), torch.stack([index.flatten(), target]), weight.flatten(), size=(9, 4))
    torch.testing.assert_close(conv(x, (weight, index), conv.message(src)), expected)


# ----------------------------------------------------------------------------------- the students run them


@pytest.mark.parametrize(("aggregate", "layer"), [("sage", SAGELayer), ("gcn", GCNLayer)])
def test_the_student_is_built_from_the_layers(aggregate, layer):
    model = GNNStudent(16, 3, StudentModelConfig(aggregate=aggregate, hidden=8, k=3), bank_size=5)
    assert type(model.conv1) is layer and type(model.conv2) is layer
    assert (model.conv1.in_features, model.conv1.out_features, model.conv2.out_features) == (16, 8, 3)
    assert model.policies == ("batch", "anchors")
    default = create_student(StudentModelConfig(), 16, 3)
    assert type(default.conv1) is SAGELayer and default.bank is None and default.policies == ("batch",)
    mlp = create_student(StudentModelConfig(arch="mlp", hidden=8), 16, 3)
    assert (
        type(mlp) is MLPStudent
        and mlp.policies == ()
        and not any(isinstance(m, (GCNLayer, SAGELayer)) for m in mlp.modules())
    )
