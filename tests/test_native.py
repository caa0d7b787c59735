"""cnn2gnn.native: the C selection kernel is built once, cached, equals a stable sort, and is skipped cleanly where it
cannot be built (cnn2gnn then takes its torch path)."""

import pytest
import torch

from cnn2gnn import native
from cnn2gnn.graph import sparse_neighbours
from cnn2gnn.select import nearest_k

needs_kernel = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernel is not built here")


def stable_smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: a stable ascending sort (ties in column order, NaN last), its first k."""
    values, index = torch.sort(d, dim=1, stable=True)
    return values[:, :k], index[:, :k]


@needs_kernel
@pytest.mark.parametrize("m", [1, 5, 43, 44, 63, 64, 65, 300, 1024, 4099])
@pytest.mark.parametrize("k", [1, 2, 11, 40])
def test_select_k_equals_a_stable_sort(m, k):
    k = min(k, m)
    g = torch.Generator().manual_seed(m * 7 + k)
    d = torch.rand(13, m, generator=g)
    values, index = native.select_k(d, k)
    ref_values, ref_index = stable_smallest(d, k)
    assert torch.equal(values, ref_values) and torch.equal(index, ref_index)


@needs_kernel
def test_ties_go_to_the_lower_column_and_every_float_orders():
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 3, (8, 500), generator=g).float()  # long runs of ties
    assert torch.equal(native.select_k(d, 20)[1], stable_smallest(d, 20)[1])
    special = torch.tensor([[float("nan"), 3.0, -0.0, float("inf"), -2.5, 0.0, float("-inf"), 1e-42, -float("nan")]])
    repeated = special.repeat(2, 8)  # 72 entries: the blocked path
    for k in (8, 9, 30, 60):
        assert torch.equal(native.select_k(repeated, k)[1], stable_smallest(repeated, k)[1])  # -0 ties +0
    values, index = native.select_k(special, 9)  # nine entries: the one-pass path, NaN last as in topk
    assert torch.equal(index[0, :7], torch.tensor([6, 4, 2, 5, 7, 1, 3]))  # -inf, -2.5, -0, +0, a subnormal, 3, inf
    assert torch.isnan(values[0, 7:]).all()


@needs_kernel
def test_shapes_strides_and_errors():
    d = torch.rand(20, 100).t()  # not contiguous
    assert torch.equal(native.select_k(d, 3)[1], d.topk(3, dim=1, largest=False).indices)
    values, index = native.select_k(torch.rand(0, 50), 4)
    assert values.shape == index.shape == (0, 4)
    with pytest.raises(ValueError, match="k must be in"):
        native.select_k(torch.rand(2, 5), 6)


def test_nearest_k_keeps_gradients_and_matches_topk_with_or_without_the_kernel(monkeypatch):
    g = torch.Generator().manual_seed(0)  # distinct values: with unseeded rand, a tie among a row's 11 smallest (about
    # one run in twenty: 2^24 levels) let topk and the kernel order it differently, and the test fail at random
    d = (torch.randperm(70 * 2000, generator=g).float() / (70 * 2000)).reshape(70, 2000).requires_grad_()
    for build in (True, False):
        if not build:
            monkeypatch.setattr(native, "select_k", lambda dist, k: None)
        values, index = nearest_k(d, 11)
        ref = d.topk(11, dim=1, largest=False)
        assert torch.equal(values, ref.values) and torch.equal(index, ref.indices)
        (grad,) = torch.autograd.grad(values.sum(), d)
        assert grad.sum().item() == 70 * 11 and torch.equal(grad.gather(1, index), torch.ones(70, 11))


def test_no_compiler_or_disabled_means_no_kernel_and_the_torch_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN2GNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    assert native.library() is None and native.select_k(torch.rand(3, 9), 2) is None
    assert list(tmp_path.rglob("*.so")) == []
    d = torch.rand(100, 3000)
    assert torch.equal(nearest_k(d, 5)[1], d.topk(5, dim=1, largest=False).indices)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("CC")
    monkeypatch.setenv("CNN2GNN_NATIVE", "0")
    assert not native.available()


@needs_kernel
def test_built_once_into_the_cache_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN2GNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native.available()
    (built,) = tmp_path.rglob("*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(native, "_state", {})  # a new process: finds the library, does not rebuild it
    assert native.available() and built.stat().st_mtime_ns == stamp and list(tmp_path.rglob("*.so")) == [built]


@needs_kernel
def test_select_k_gives_the_same_rows_on_any_thread_count():
    d = torch.rand(1000, 700)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(native.select_k(d, 11))
    finally:
        torch.set_num_threads(threads)
    for values, index in results[1:]:
        assert torch.equal(values, results[0][0]) and torch.equal(index, results[0][1])


def torch_neighbours(monkeypatch, dist, k, **kw):
    """sparse_neighbours by its torch operators (the native weights switched off for this call)."""
    with monkeypatch.context() as m:
        m.setattr(native, "adaptive_weights", lambda *a: None)
        return sparse_neighbours(dist, k, **kw)


@needs_kernel
@pytest.mark.parametrize("width", [2, 3, 11, 12, 40, 64])
def test_adaptive_weights_equal_the_torch_operators(monkeypatch, width):
    g = torch.Generator().manual_seed(width)
    dist = torch.rand(50, width, generator=g)
    dist[3] = 0.5  # every candidate at the same distance: uniform weights
    dist[4, :2] = float("inf")  # masked pairs
    dist[5] = torch.randint(0, 3, (width,), generator=g).float()  # ties
    for k in sorted({1, min(5, width - 1), width - 1}):
        weights, cols = sparse_neighbours(dist, k)
        ref_weights, ref_cols = torch_neighbours(monkeypatch, dist, k)
        torch.testing.assert_close(weights, ref_weights, rtol=1e-6, atol=1e-7, equal_nan=True)  # inf - inf: both NaN
        assert torch.equal(cols[6:], ref_cols[6:]) and torch.equal(cols[:3], ref_cols[:3])  # no ties there
        assert torch.equal(dist.gather(1, cols), dist.gather(1, ref_cols))  # tied columns hold the same distances
        torch.testing.assert_close(weights.sum(dim=1)[torch.arange(50) != 4], torch.ones(49))  # row 4 may be NaN


@needs_kernel
def test_adaptive_weights_leave_gradients_nan_and_wide_rows_to_torch(monkeypatch):
    calls = []
    real = native.adaptive_weights
    monkeypatch.setattr(native, "adaptive_weights", lambda *a: calls.append(a[0].shape) or real(*a))
    dist = torch.rand(8, 12, requires_grad=True)
    weights, _ = sparse_neighbours(dist, 4)
    assert weights.requires_grad and calls == []  # the gradient needs torch's operators
    with torch.no_grad():
        sparse_neighbours(dist, 4)
    assert calls == [(8, 12)]
    nan = torch.rand(4, 6)
    nan[1, 2] = float("nan")  # NaN sorts last, as topk sorts it
    torch.testing.assert_close(sparse_neighbours(nan, 3), torch_neighbours(monkeypatch, nan, 3), equal_nan=True)
    assert native.adaptive_weights(torch.rand(2, 65), 5, 1e-12) is None  # over 64 candidates: torch's path
    wide = torch.rand(3, 100)
    torch.testing.assert_close(sparse_neighbours(wide, 10), torch_neighbours(monkeypatch, wide, 10))


def torch_propagate(dist, positions, k, messages, bias):
    """The reference of native.propagate: sparse_neighbours' weights, a float64 weighted sum of the rows, the bias."""
    weights, cols = sparse_neighbours(dist, k)
    rows = messages.double()[positions.gather(1, cols)]  # (n, k', w)
    return (weights.double()[:, :, None] * rows).sum(dim=1) + bias.double()


@needs_kernel
@pytest.mark.parametrize("width", [2, 6, 11, 64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("w", [37, 150])  # under one vector chunk of columns; two chunks (of 32 or 64) and a tail
def test_propagate_sums_the_weighted_messages_of_the_neighbours(width, threads, w):
    g = torch.Generator().manual_seed(width)
    n, m = 70, 90
    dist = torch.rand(n, width, generator=g)
    dist[3] = 0.5  # every candidate at the same distance: uniform weights
    dist[5] = torch.randint(0, 3, (width,), generator=g).float()  # ties
    dist[6, 0] = float("nan")  # sorts last
    positions = torch.randint(0, m, (n, width), generator=g)
    messages, bias = torch.randn(m, w, generator=g), torch.randn(w, generator=g)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for k in sorted({1, 4, width - 1, width + 3}):  # k clamps to K - 1 as in sparse_neighbours
            out = native.propagate(dist, positions, k, messages, bias)
            ref = torch_propagate(dist, positions, k, messages, bias)
            torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        without = native.propagate(dist.t().contiguous().t(), positions.int(), 4, messages)  # strided, int32
        torch.testing.assert_close(without.double(), torch_propagate(dist, positions, 4, messages, torch.zeros(w)))
    finally:
        torch.set_num_threads(saved)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_propagate_adds_a_base_to_the_first_columns_then_the_relu(threads):
    """base: a strided view (the first columns of a wider product, as the fast path passes it), added after the bias
    to its own width only; relu over its own width only, NaN kept."""
    g = torch.Generator().manual_seed(1)
    n, m, w = 50, 40, 150
    dist, positions = torch.rand(n, 11, generator=g), torch.randint(0, m, (n, 11), generator=g)
    messages, bias = torch.randn(m, w, generator=g), torch.randn(w, generator=g)
    wide = torch.randn(n, 200, generator=g)
    wide[4, 2] = float("nan")
    base = wide[:, :130]  # row stride 200
    ref = torch_propagate(dist, positions, 10, messages, bias)
    ref[:, :130] += base.double()
    ref[:, :90] = ref[:, :90].relu()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.propagate(dist, positions, 10, messages, bias, base=base, relu=90)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert out[4, 2].isnan() and (out[:, :90].nan_to_num() >= 0).all() and (out[:, 90:] < 0).any()
    with pytest.raises(ValueError, match="base"):
        native.propagate(dist, positions, 10, messages, bias, base=torch.zeros(n, w + 1))
    with pytest.raises(ValueError, match="relu"):
        native.propagate(dist, positions, 10, messages, bias, relu=w + 1)


@needs_kernel
def test_propagate_refuses_positions_outside_the_messages_and_leaves_what_it_cannot_serve():
    dist, messages = torch.rand(40, 5), torch.randn(8, 3)
    positions = torch.randint(0, 8, (40, 5))
    dist[17, 0], positions[17, 0] = 0.0, 8  # the nearest candidate: among the weighted ones
    with pytest.raises(IndexError, match=r"\[0, 8\)"):
        native.propagate(dist, positions, 3, messages)
    positions[17, 0] = -1
    with pytest.raises(IndexError):
        native.propagate(dist, positions, 3, messages)
    with pytest.raises(ValueError, match="shape"):
        native.propagate(dist, positions[:, :4], 3, messages)
    assert native.propagate(dist[:, :1], positions[:, :1], 3, messages) is None  # one candidate: torch's argmin
    assert native.propagate(dist.double(), positions, 3, messages) is None
    assert native.propagate(dist, positions, 3, messages.double()) is None
    with native.disabled():
        assert native.propagate(dist, positions.clamp(0, 7), 3, messages) is None


@needs_kernel
def test_a_compiler_command_with_arguments(monkeypatch, tmp_path):
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    monkeypatch.setenv("CNN2GNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", f"{compiler} -DCNN2GNN_UNUSED=1")  # as CC often is: a command and its options
    monkeypatch.setattr(native, "_state", {})
    assert native.available() and len(list(tmp_path.rglob("*.so"))) == 1


def test_disabled_switches_to_the_torch_path_for_the_block_only():
    before = native.library()
    with native.disabled():
        assert not native.available() and native.select_k(torch.rand(2, 5), 1) is None
    assert native.library() is before  # the kernels come back (or stay absent) after the block


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, c, nh", [(70, 10, 512), (3, 3, 37), (41, 9, 130), (1, 1, 16)])
def test_propagate_with_a_head_gives_the_next_layer_from_the_activations(threads, n, c, nh):
    """head W (c, h): the next layer's o[:, h:] + relu(o[:, :h] + base) W^T, from the same pass; rows not a whole
    number of tiles, classes not of class blocks, h not of vectors. The rows a head reads never leave the kernel."""
    g = torch.Generator().manual_seed(n + c)
    m, w = 40, nh + c
    dist, positions = torch.rand(n, 11, generator=g), torch.randint(0, m, (n, 11), generator=g)
    messages, bias = torch.randn(m, w, generator=g), torch.randn(w, generator=g)
    base, head = torch.randn(n, nh, generator=g), torch.randn(c, nh, generator=g)
    ref = torch_propagate(dist, positions, 10, messages, bias)
    hidden = (ref[:, :nh] + base.double()).relu()
    ref = ref[:, nh:] + hidden @ head.double().t()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.propagate(dist, positions, 10, messages, bias, base=base, relu=nh, head=head)
        again = native.propagate(dist[:1], positions[:1], 10, messages, bias, base=base[:1], relu=nh, head=head)
    finally:
        torch.set_num_threads(saved)
    assert out.shape == (n, c)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(again, out[:1])  # a row's logits do not depend on the rows it shares a tile with
    with pytest.raises(ValueError, match="head"):
        native.propagate(dist, positions, 10, messages, bias, head=torch.zeros(c, nh + 1))
    positions[n - 1, :] = m  # a row outside the table: refused, as without a head
    with pytest.raises(IndexError):
        native.propagate(dist, positions, 10, messages, bias, base=base, relu=nh, head=head)
