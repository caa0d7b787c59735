"""Tests for the dense graph convolution of the GNN student (METHOD.md section 3)."""

import math

import pytest
import torch

from cnn2gnn.graph import normalize_adj, symmetrize
from cnn2gnn.models.gnn import GraphConv


def test_matches_hand_computation():
    conv = GraphConv(2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0], [2.0]]))
        conv.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # x @ W = [1, 2, 3]
    adj = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    expected = torch.tensor([[0.5 * 1 + 0.5 * 2 + 0.5], [2 + 0.5], [0.2 * 1 + 0.3 * 2 + 0.5 * 3 + 0.5]])
    torch.testing.assert_close(conv(x, adj), expected)
    torch.testing.assert_close(conv.propagate(conv.project(x), adj), expected)


def test_init_shapes_and_rectangular_adj():
    conv = GraphConv(6, 4)
    bound = math.sqrt(6 / 10)
    assert conv.weight.shape == (6, 4) and conv.weight.abs().max() <= bound and torch.equal(conv.bias, torch.zeros(4))
    assert GraphConv(6, 4, bias=False).bias is None
    out = conv(torch.randn(5, 6), torch.rand(3, 5))  # 3 queries aggregate 5 anchors
    assert out.shape == (3, 4)
    assert repr(conv) == "GraphConv(6, 4, bias=True)"


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="GraphConv: in_features"):
        GraphConv(0, 3)
    conv = GraphConv(3, 2)
    with pytest.raises(ValueError, match="GraphConv: x"):
        conv(torch.randn(4, 5), torch.eye(4))
    with pytest.raises(ValueError, match="GraphConv: adj"):
        conv(torch.randn(4, 3), torch.eye(5))


def test_gradient_reaches_parameters_and_input():
    conv = GraphConv(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    conv(x, torch.rand(4, 4)).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0


def test_equals_pyg_gcnconv():
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    g = torch.Generator().manual_seed(0)
    n, f_in, f_out = 7, 5, 3
    mask = torch.rand(n, n, generator=g) < 0.4
    a = symmetrize(torch.rand(n, n, generator=g) * mask)
    a.fill_diagonal_(0.0)
    x = torch.randn(n, f_in, generator=g)

    conv = GraphConv(f_in, f_out)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(f_out, generator=g))
    ref = pyg_nn.GCNConv(f_in, f_out, normalize=True, add_self_loops=True)
    with torch.no_grad():
        ref.lin.weight.copy_(conv.weight.T)  # PyG stores (out, in)
        ref.bias.copy_(conv.bias)

    edge_index = a.nonzero().T
    edge_weight = a[edge_index[0], edge_index[1]]
    expected = ref(x, edge_index, edge_weight)
    torch.testing.assert_close(conv(x, normalize_adj(a, mode="sym", self_loop=True)), expected)
