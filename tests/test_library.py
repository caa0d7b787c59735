"""Tests of cnn2gnn as a library (issue 13 item 5): the public names of ``import cnn2gnn``, loaded lazily so that the
import (and ``cnn2gnn --help``) does not import torch, and the graph head's graphs in PyTorch Geometric's form
(cnn2gnn/pyg.py, ``SparseGraphLearner.edge_index``) equal to the dense graphs our layers take.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import pyg_graphconv, set_random

import cnn2gnn
from cnn2gnn import GCNLayer, SAGELayer, SparseGraphLearner, dense_to_edge_index, to_edge_index
from cnn2gnn.graph import sparse_neighbours

# ----------------------------------------------------------------------------------- the public names


def _fresh_python(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_import_and_help_do_not_import_torch():
    _fresh_python('import sys, cnn2gnn; assert "torch" not in sys.modules, "import cnn2gnn imported torch"')
    _fresh_python(
        "import runpy, sys\n"
        "sys.argv = ['cnn2gnn', '--help']\n"
        "try:\n    runpy.run_module('cnn2gnn', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert 'torch' not in sys.modules, 'cnn2gnn --help imported torch'"
    )
    # a public name loads its module on first use
    _fresh_python('import sys, cnn2gnn; cnn2gnn.GNNStudent; assert "torch" in sys.modules')


def test_the_public_names():
    from cnn2gnn import checkpoint, config, distill, graph, models, pyg, student, teacher
    from cnn2gnn.models import layers

    expected = {
        graph: ["SparseGraphLearner", "normalize_adj", "pairwise_sq_dists", "sparse_graph", "sparse_neighbours"]
        + ["symmetrize"],
        pyg: ["dense_to_edge_index", "to_edge_index"],
        layers: ["GCNLayer", "SAGELayer"],
        models: ["AnchorBank", "GNNStudent", "MLPStudent", "create_student"],
        distill: ["DistillationLoss", "distillation_loss"],
        config: ["StudentConfig", "StudentModelConfig", "TeacherConfig", "build_config"],
        checkpoint: ["load_model", "save_model_dir"],
        teacher: ["train_teacher"],
        student: ["train_student"],
    }
    names = [name for group in expected.values() for name in group]
    assert sorted(cnn2gnn.__all__) == sorted(["__version__", *names]) and len(set(cnn2gnn.__all__)) == len(names) + 1
    for module, group in expected.items():
        for name in group:
            assert getattr(cnn2gnn, name) is getattr(module, name), name
    assert set(cnn2gnn.__all__) <= set(dir(cnn2gnn))
    assert isinstance(cnn2gnn.__version__, str)
    namespace: dict = {}
    exec("from cnn2gnn import *", namespace)  # noqa: S102 - the star import a user may write
    assert set(cnn2gnn.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="'cnn2gnn' has no attribute 'nothing'"):
        cnn2gnn.nothing  # noqa: B018
    # the lazy table and the imports for type checkers name the same things as __all__
    tree = ast.parse(Path(cnn2gnn.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {alias.name for node in block.body for alias in node.names}
    assert typed == set(cnn2gnn.__all__) - {"__version__"} == set(cnn2gnn._MODULE)


# ----------------------------------------------------------------------------------- PyG form, without PyG


def _add_aggregate(edge_index, edge_weight, messages, n):
    """PyG's "add" aggregation, source -> target: out_i = sum over edges j -> i of w * m_j."""
    source, target = edge_index
    return torch.zeros(n, messages.shape[1]).index_add_(0, target, edge_weight[:, None] * messages[source])


def test_to_edge_index_by_hand():
    weights, index = torch.tensor([[0.75, 0.25], [1.0, 0.0]]), torch.tensor([[2, 0], [1, 3]])
    edge_index, edge_weight = to_edge_index(weights, index)
    # row i aggregates from index[i]: edges index[i, l] -> i, ordered by target; zero weights kept (n k edges)
    assert edge_index.dtype == torch.long
    assert edge_index.tolist() == [[2, 0, 1, 3], [0, 0, 1, 1]]
    assert edge_weight.tolist() == [0.75, 0.25, 1.0, 0.0]
    edge_index, edge_weight = dense_to_edge_index(torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]))
    assert edge_index.tolist() == [[0, 2, 2], [0, 0, 1]] and edge_weight.tolist() == [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="to_edge_index: weights and index"):
        to_edge_index(weights, index[:, :1])
    with pytest.raises(ValueError, match="dense_to_edge_index: a must be a 2-D tensor"):
        dense_to_edge_index(torch.ones(3))


def test_edges_aggregate_as_the_dense_graphs():
    g = torch.Generator().manual_seed(0)
    n, m = 6, 10
    dist = torch.rand(n, m, generator=g)
    weights, index = sparse_neighbours(dist, 3)
    dense = torch.zeros(n, m).scatter(1, index, weights)
    messages = torch.randn(m, 4, generator=g)
    torch.testing.assert_close(_add_aggregate(*to_edge_index(weights, index), messages, n), dense @ messages)
    torch.testing.assert_close(_add_aggregate(*dense_to_edge_index(dense), messages, n), dense @ messages)


@pytest.mark.parametrize("sage", [True, False])
def test_learner_edge_index_is_its_graph(sage):
    learner = SparseGraphLearner(3, symmetric=not sage, self_loop=not sage, norm="none" if sage else "sym")
    v = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    edge_index, edge_weight = learner.edge_index(v)
    a = learner(v)
    rebuilt = torch.zeros_like(a).index_put_((edge_index[1], edge_index[0]), edge_weight)
    torch.testing.assert_close(rebuilt, a)
    loops = int((edge_index[0] == edge_index[1]).sum())
    assert loops == (0 if sage else 8)  # the normalised A-hat keeps its self loops as edges
    if sage:
        assert edge_index.shape == (2, 8 * 3)  # k per node, no ties in random features
    # a single node: only its self loop (GCN) or nothing (SAGE)
    one_index, one_weight = learner.edge_index(v[:1])
    assert one_index.tolist() == ([[], []] if sage else [[0], [0]]) and one_weight.tolist() == ([] if sage else [1.0])


def test_learner_edge_index_with_anchors_and_exclusions():
    g = torch.Generator().manual_seed(2)
    v, anchors = torch.randn(5, 4, generator=g), torch.randn(11, 4, generator=g)
    exclude = torch.zeros(5, 11, dtype=torch.bool)
    exclude[torch.arange(5), torch.arange(5)] = True  # query i may not link anchor i (its own copy)
    learner = SparseGraphLearner(3)
    edge_index, edge_weight = learner.edge_index(v, anchors, exclude, max_excluded=1)
    weights, index = learner(v, anchors, exclude, sparse=True, max_excluded=1)
    assert edge_index.shape == (2, 5 * 3) and int(edge_index[0].max()) < 11 and int(edge_index[1].max()) < 5
    assert not exclude[edge_index[1], edge_index[0]].any()
    torch.testing.assert_close(edge_weight, weights.flatten())
    assert torch.equal(edge_index[0], index.flatten())


# ----------------------------------------------------------------------------------- PyTorch Geometric layers


def test_pyg_graphconv_on_the_sage_learners_edges_equals_sage_layer():
    conv = SAGELayer(6, 3)
    set_random(conv, 3)
    ref = pyg_graphconv(conv)
    learner = SparseGraphLearner(3, symmetric=False, self_loop=False, norm="none")  # the SAGE student's head
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 6, generator=g)
    v = torch.randn(9, 4, generator=g, requires_grad=True)
    edge_index, edge_weight = learner.edge_index(v)
    out = ref(x, edge_index, edge_weight)
    expected = conv(x, learner(v))
    torch.testing.assert_close(out, expected)
    # the edge weights carry the graph's gradient as the dense matrix does
    w = torch.randn(9, 3, generator=g)
    (grad_pyg,) = torch.autograd.grad((out * w).sum(), v)
    (grad_dense,) = torch.autograd.grad((expected * w).sum(), v)
    assert grad_dense.abs().sum() > 0
    torch.testing.assert_close(grad_pyg, grad_dense)


def test_pyg_gcnconv_on_the_gcn_learners_edges_equals_gcn_layer():
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    conv = GCNLayer(6, 3)
    set_random(conv, 5)
    ref = pyg_nn.GCNConv(6, 3, normalize=False, add_self_loops=False)  # the edges already hold A-hat
    with torch.no_grad():
        ref.lin.weight.copy_(conv.lin.weight)
        ref.bias.copy_(conv.lin.bias)
    learner = SparseGraphLearner(3)  # the GCN student's head: symmetrised, self loops, D^-1/2 (A + I) D^-1/2
    g = torch.Generator().manual_seed(6)
    x, v = torch.randn(9, 6, generator=g), torch.randn(9, 4, generator=g)
    a_hat = learner(v)
    torch.testing.assert_close(ref(x, *learner.edge_index(v)), conv(x, a_hat))
    torch.testing.assert_close(ref(x, *dense_to_edge_index(a_hat)), conv(x, a_hat))


def test_pyg_graphconv_on_the_anchors_graph_equals_sage_layer():
    conv = SAGELayer(6, 3)
    set_random(conv, 7)
    ref = pyg_graphconv(conv)
    learner = SparseGraphLearner(3)  # anchors mode: row-stochastic, no symmetrisation, no self loop
    g = torch.Generator().manual_seed(8)
    n, m = 5, 11
    x_queries, x_anchors = torch.randn(n, 6, generator=g), torch.randn(m, 6, generator=g)
    v, v_anchors = torch.randn(n, 4, generator=g), torch.randn(m, 4, generator=g)
    edge_index, edge_weight = learner.edge_index(v, v_anchors)
    out = ref((x_anchors, x_queries), edge_index, edge_weight, size=(m, n))  # bipartite: sources are the anchors
    messages = conv.message(x_anchors)
    torch.testing.assert_close(out, conv(x_queries, learner(v, v_anchors, sparse=True), messages))
    torch.testing.assert_close(out, conv(x_queries, learner(v, v_anchors), messages))
