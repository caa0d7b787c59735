"""models/product.py: a fixed weight's product, packed once per batch size where torch has MKL."""

import pytest
import torch

from cnn2gnn.models import product as product_module
from cnn2gnn.models.product import MOST_SIZES, PACK_FROM, PackedProduct, unpacked


def test_the_packed_product_is_the_weights_product_and_packs_a_few_batch_sizes():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 70, generator=g)
    product = PackedProduct(weight.t().contiguous().t())  # a strided weight is copied, not misread
    sizes = [1, PACK_FROM - 1, PACK_FROM, 40, 40, 100, 300]
    for n in sizes:
        x = torch.randn(n, 70, generator=g)
        torch.testing.assert_close(product(x), x @ weight.t(), rtol=1e-5, atol=1e-5)
    packed = sorted(product.packs)
    if product_module._OPS is None:  # no MKL in this build of torch: torch.mm throughout
        assert packed == []
    else:  # from PACK_FROM rows, the first MOST_SIZES sizes seen
        assert packed == [n for n in dict.fromkeys(sizes) if n >= PACK_FROM][:MOST_SIZES]


@pytest.mark.skipif(product_module._OPS is None, reason="this build of torch has no MKL packed product")
def test_unpacked_runs_on_torch_mm_and_keeps_the_packings():
    weight, x = torch.randn(8, 30), torch.randn(PACK_FROM, 30)
    product = PackedProduct(weight)
    product(x)
    with unpacked():
        assert torch.equal(product(x), torch.mm(x, weight.t()))
        assert product(torch.randn(PACK_FROM + 1, 30)).shape == (PACK_FROM + 1, 8)
    assert list(product.packs) == [PACK_FROM]  # nothing packed within the block


def test_without_the_mkl_ops_the_product_is_torch_mm(monkeypatch):
    monkeypatch.setattr(product_module, "_OPS", None)
    weight, x = torch.randn(8, 30), torch.randn(64, 30)
    product = PackedProduct(weight)
    assert torch.equal(product(x), torch.mm(x, weight.t())) and not product.packs
