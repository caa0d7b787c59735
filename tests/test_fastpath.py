"""models/fastpath.py: the anchors policy's eval fast path gives the general path's logits for every configuration it
serves, and steps aside (None) wherever the general path is needed."""

import pytest
import torch

from cnn2gnn import native
from cnn2gnn.bench.measure import flops_per_image
from cnn2gnn.config import StudentModelConfig
from cnn2gnn.models import fastpath
from cnn2gnn.models.gnn import GNNStudent
from cnn2gnn.models.product import PACK_FROM, PackedProduct
from cnn2gnn.native.prepared import AnchorsPass, prepare_anchors_pass

SHAPE = (1, 8, 8)


def student(m: int = 60, **kw) -> GNNStudent:
    torch.manual_seed(0)
    cfg = StudentModelConfig(hidden=24, graph_dim=6, k=5, dropout=0.3, **kw)
    model = GNNStudent(64, 4, cfg, image_shape=SHAPE, bank_size=m)
    for p in model.parameters():  # no zero-initialised neighbour weights: every term of the layers counts
        torch.nn.init.normal_(p, std=0.3)
    g = torch.Generator().manual_seed(1)
    model.set_bank(torch.randn(m, *SHAPE, generator=g), torch.randint(-1, 4, (m,), generator=g), torch.arange(m))
    return model.eval()


def general(model: GNNStudent, x: torch.Tensor) -> torch.Tensor:
    """The general path: with gradients enabled the fast path steps aside."""
    with torch.enable_grad():
        return model(x, graph="anchors").detach()


@pytest.mark.parametrize(
    "kw",
    [{}, {"graph_space": "proj"}, {"graph_space": "pixels"}, {"label_messages": True}, {"embed": "randconv"},
     {"embed": "patch", "embed_filters": 8, "embed_kernel": 4}, {"input_dropout": 0.2, "graph_space": "proj"}],
)  # fmt: skip
@pytest.mark.parametrize("m", [60, 4])  # a bank smaller than k + 1: k clamps alike in both paths
def test_the_fast_path_gives_the_general_logits(kw, m):
    model = student(m, **kw)
    x = torch.randn(37, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = fastpath.anchors_logits(model, x)
        called = model(x, graph="anchors")
    assert fast is not None and torch.equal(called, fast)  # the module's forward takes it in eval without gradients
    torch.testing.assert_close(fast, general(model, x), rtol=1e-5, atol=1e-5)


def test_the_fast_path_steps_aside_where_the_general_path_is_needed():
    model = student()
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert fastpath.applies(model, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fastpath.applies(model, x)
        model.train()
        assert fastpath.anchors_logits(model, x) is None
        gcn = GNNStudent(64, 4, StudentModelConfig(hidden=8, k=3, aggregate="gcn"), bank_size=10).eval()
        assert fastpath.anchors_logits(gcn, x) is None
        no_bank = GNNStudent(64, 4, StudentModelConfig(hidden=8, k=3)).eval()
        assert fastpath.anchors_logits(no_bank, x) is None
    model.eval()
    assert fastpath.anchors_logits(model, x) is None  # gradients enabled
    with torch.no_grad(), fastpath.disabled():
        assert fastpath.anchors_logits(model, x) is None
    with torch.no_grad():
        assert fastpath.applies(model, x)  # back on after the block


@pytest.mark.parametrize("kw", [{}, {"graph_space": "proj"}, {"graph_space": "pixels"}])
def test_without_the_native_kernels_the_fast_path_gives_the_same_logits(kw):
    model = student(**kw)
    x = torch.randn(37, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = fastpath.anchors_logits(model, x)
        with native.disabled():
            model.bank.clear()  # the search is rebuilt without the packed bank
            plain = fastpath.anchors_logits(model, x)
    assert plain is not None
    torch.testing.assert_close(plain, fast, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, general(model, x), rtol=1e-5, atol=1e-5)


def test_the_fast_path_keeps_its_tables_with_the_bank_states_from_the_first_call():
    """The stacked messages, biases and first-layer/graph-head weights are cached with the bank's states by the first
    call (not by the second, as when the first call's states were not the cached dict), and go with them."""
    model = student()
    x = torch.randn(9, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(x, graph="anchors")
        tables = model.bank._cache
        assert tables is not None and {"msg12", "bias12", "product"} <= set(tables)
        model(x, graph="anchors")
        assert model.bank._cache is tables
    model.load_state_dict(model.state_dict())  # loaded weights: the cached states and tables are dropped
    assert model.bank._cache is None


lanes = native.library().cnn2gnn_nearest_lanes() if native.available() else 0
needs_kernel = pytest.mark.skipif(lanes < native.MIN_LANES, reason="no native search here (no compiler or narrow SIMD)")


@needs_kernel
@pytest.mark.parametrize("m", [60, 4])
def test_the_prepared_pass_gives_the_checked_kernels_logits_bit_for_bit(m):
    """With the head graph space and the fused search, the fast path calls the two kernels prepared with the bank's
    tables (native/prepared.py): the same kernels on the same arguments as the checking wrappers."""
    model = student(m)
    x = torch.randn(37, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prepared = fastpath.anchors_logits(model, x)
        tables = model.bank._cache
        run, tables["run"] = tables["run"], None
        checked = fastpath.anchors_logits(model, x)
        tables["run"] = run
    assert isinstance(run, AnchorsPass) and torch.equal(prepared, checked)


@needs_kernel
def test_the_prepared_pass_is_skipped_for_another_k_and_dropped_with_the_search(monkeypatch):
    model = student()
    x = torch.randn(9, *SHAPE, generator=torch.Generator().manual_seed(3))
    calls = []
    real = AnchorsPass.__call__
    monkeypatch.setattr(AnchorsPass, "__call__", lambda self, x: calls.append(len(x)) or real(self, x))
    with torch.no_grad():
        model(x, graph="anchors")
        assert calls == [9]
        model.graph.k = 3  # prepared for k = 5: the checked kernels serve k = 3
        fast = model(x, graph="anchors")
    assert calls == [9]
    torch.testing.assert_close(fast, general(model, x), rtol=1e-5, atol=1e-5)
    model.bank.use_search("faiss")  # another search: the states and what was prepared with them go
    assert model.bank._cache is None


@needs_kernel
def test_prepare_anchors_pass_refuses_tables_it_cannot_serve():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(100, 8, generator=g)
    packed = native.pack(bank, bank.pow(2).sum(dim=1))
    messages, bias = torch.randn(100, 13, generator=g), torch.randn(13, generator=g)
    weight, head = torch.randn(18, 20, generator=g), torch.randn(3, 10, generator=g)
    product = PackedProduct(weight)
    assert prepare_anchors_pass(product, packed, 5, messages, bias, head) is not None
    assert prepare_anchors_pass(product, packed, 5, messages[:30], bias, head) is None  # not the bank's rows
    assert prepare_anchors_pass(product, packed, 5, messages, bias, head[:, :9]) is None  # c + h: not its width
    assert prepare_anchors_pass(PackedProduct(weight[:17]), packed, 5, messages, bias, head) is None  # not h + d
    assert prepare_anchors_pass(product, packed, 5, messages.double(), bias, head) is None
    assert prepare_anchors_pass(product, packed, 5, messages.t().contiguous().t(), bias, head) is None  # strided
    assert prepare_anchors_pass(product, packed, 70, messages, bias, head) is None  # 71 candidates: over 64
    run = prepare_anchors_pass(product, packed, 5, messages, bias, head)
    with pytest.raises(RuntimeError):
        run(torch.randn(4, 19))  # not D features: torch's product refuses it
    assert run(torch.randn(0, 20)).shape == (0, 3)
    with pytest.raises(ValueError, match="expected float32"):
        run.finish(torch.randn(4, 17))  # not h + d columns: refused before the kernels read past the rows
    with pytest.raises(ValueError, match="expected float32"):
        run.finish(torch.randn(4, 18, dtype=torch.float64))
    for n in (6, 40):  # torch.mm, then the packed product
        x = torch.randn(n, 20, generator=g)
        both = product(x)
        torch.testing.assert_close(both, x @ weight.t(), rtol=1e-5, atol=1e-5)
        dist, index = native.nearest(both[:, 10:], packed, 6)
        expected = native.propagate(dist, index, 5, messages, bias, base=both[:, :10], relu=10, head=head)
        assert torch.equal(run.finish(both), expected)  # the checked kernels on the same arguments
        assert torch.equal(run(x), expected)


def test_the_flop_count_includes_the_packed_product():
    """The bench counts the fast path's first-layer and graph-head product, which runs on MKL's packed product from
    PACK_FROM rows (models/product.py): the counter does not know that op and counted none of its FLOPs."""
    model = student()
    x = torch.randn(PACK_FROM, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(x, graph="anchors")
    width = model.conv1.lin.weight.shape[0] + model.graph_head.weight.shape[0]
    product = 2 * model.conv1.lin.weight.shape[1] * width  # per image
    assert flops_per_image(lambda b: model(b, graph="anchors"), x) >= product


@needs_kernel
def test_the_prepared_pass_steps_aside_when_the_kernels_are_disabled(monkeypatch):
    """Within native.disabled() the fast path takes the torch path even after it prepared the kernels: the FLOP
    counter (bench: FLOPs per image) sees the distances' product there, and counted too few without it."""
    model = student()
    x = torch.randn(9, *SHAPE, generator=torch.Generator().manual_seed(3))

    def fn(batch):
        return model(batch, graph="anchors")

    before = flops_per_image(fn, x)  # states built with the kernels off: nothing prepared
    model.bank.clear()
    with torch.no_grad():
        fn(x)  # states built with the kernels: the prepared pass
        assert model.bank._cache.get("run") is not None
    calls = []
    real = AnchorsPass.__call__
    monkeypatch.setattr(AnchorsPass, "__call__", lambda self, b: calls.append(len(b)) or real(self, b))
    assert flops_per_image(fn, x) == before
    assert calls == []
