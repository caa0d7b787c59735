"""cnn2gnn.select.nearest_k: the k smallest of each row, exactly as torch.topk finds them, by the native kernel
(cnn2gnn.native, where a C compiler is there) and by the pure-torch narrowing (elsewhere)."""

import pytest
import torch

from cnn2gnn import native, select
from cnn2gnn.graph import pairwise_sq_dists
from cnn2gnn.select import nearest_k


@pytest.fixture(autouse=True, params=["native", "torch"])
def narrow_everything(request, monkeypatch):
    """Each test runs on the native kernel and on the torch path; the torch path narrows rows of any width and
    count (by default only wide rows are), so small tensors test every step."""
    if request.param == "native":
        if not native.available():
            pytest.skip("no C compiler: the native kernel is not built here")
        return
    monkeypatch.setattr(native, "select_k", lambda dist, k: None)
    monkeypatch.setattr(select, "WIDE", 65)
    monkeypatch.setattr(select, "WIDE_ONE_THREAD", 65)
    monkeypatch.setattr(select, "ROWS", 1)


@pytest.mark.parametrize("m", [1, 7, 64, 65, 97, 176, 1000, 1024, 4099])
@pytest.mark.parametrize("k", [1, 3, 11, 12])
def test_values_and_columns_are_topks(m, k):
    g = torch.Generator().manual_seed(m * 100 + k)
    d = pairwise_sq_dists(torch.randn(9, 16, generator=g), torch.randn(m, 16, generator=g))
    values, index = nearest_k(d, k)
    ref_values, ref_index = d.topk(min(k, m), dim=1, largest=False)
    assert values.shape == index.shape == (9, min(k, m)) and index.dtype == torch.int64
    assert torch.equal(values, ref_values)
    assert torch.equal(index, ref_index)  # continuous random distances do not tie


def test_ties_infinities_and_zeros_keep_the_values():
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 4, (5, 300), generator=g).float()  # many ties
    d[:, ::7] = float("inf")  # masked pairs, as sparse_neighbours masks them
    d[0, :290] = float("inf")  # a row with only ten allowed candidates
    values, index = nearest_k(d, 11)
    assert torch.equal(values, d.topk(11, dim=1, largest=False).values)
    assert torch.equal(d.gather(1, index), values)  # the columns hold the values they claim
    assert (index < 300).all() and all(len(set(row.tolist())) == 11 for row in index)


def test_a_column_far_from_the_rest_is_found_in_any_block():
    # the minimum alone in every position of the row: each block and each padding layout gets its turn
    for m in (130, 1024):
        for col in range(0, m, 37):
            d = torch.full((1, m), 5.0)
            d[0, col] = 1.0
            assert nearest_k(d, 3)[1][0, 0].item() == col


def test_gradients_reach_the_selected_entries_as_through_topk():
    d = torch.rand(4, 500, requires_grad=True)
    w = torch.randn(4, 6)
    (nearest_k(d, 6)[0] * w).sum().backward()
    grad = d.grad.clone()
    d.grad = None
    (d.topk(6, dim=1, largest=False).values * w).sum().backward()
    assert torch.equal(grad, d.grad)


def test_other_dtypes_and_no_rows_fall_back_to_topk():
    d = torch.rand(3, 200, dtype=torch.float64)
    assert torch.equal(nearest_k(d, 5)[1], d.topk(5, dim=1, largest=False).indices)
    values, index = nearest_k(torch.rand(0, 200), 5)
    assert values.shape == index.shape == (0, 5)


def test_narrow_or_few_rows_go_to_one_topk(monkeypatch):
    monkeypatch.setattr(native, "select_k", lambda dist, k: None)
    monkeypatch.setattr(select, "WIDE", 4096)
    monkeypatch.setattr(select, "WIDE_ONE_THREAD", 256)
    monkeypatch.setattr(select, "ROWS", 8)
    steps = []
    narrow = select._narrow
    monkeypatch.setattr(select, "_narrow", lambda *a: steps.append(a[0].shape) or narrow(*a))
    threads = torch.get_num_threads()
    try:
        for count, shapes in ((2, ((256, 4095), (7, 5000))), (1, ((256, 255), (7, 5000)))):
            torch.set_num_threads(count)
            for shape in shapes:
                d = torch.rand(shape)
                assert torch.equal(nearest_k(d, 11)[1], d.topk(11, dim=1, largest=False).indices)
            assert steps == []
        for count, shape in ((2, (8, 4096)), (1, (8, 256))):
            torch.set_num_threads(count)
            d = torch.rand(shape)
            assert torch.equal(nearest_k(d, 11)[0], d.topk(11, dim=1, largest=False).values)
            assert steps[0] == shape  # the first narrowing step takes the whole row
            steps.clear()
    finally:
        torch.set_num_threads(threads)
