"""Loss helpers: the Gram matrix's own backward agrees with autograd's."""

from __future__ import annotations

import pytest
import torch

from gpu_node.engine.losses import gram


@pytest.mark.parametrize("shape", [(1, 6, 5, 7), (2, 4, 3, 3)])
def test_gram_value_and_gradient_match_the_plain_formula(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    n, c, h, w = shape
    flat = x.reshape(n, c, h * w)
    plain = torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)
    assert torch.allclose(gram(x), plain, atol=1e-12)
    # An upstream gradient that is not symmetric, so both halves of dG count.
    upstream = torch.randn(n, c, c, generator=generator, dtype=torch.float64)
    (ours,) = torch.autograd.grad(gram(x), x, upstream)
    (theirs,) = torch.autograd.grad(plain, x, upstream)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert torch.autograd.gradcheck(gram, (x,))


def test_gram_of_a_frozen_map_needs_no_graph() -> None:
    with torch.no_grad():
        g = gram(torch.ones(1, 2, 4, 4))
    assert not g.requires_grad
    assert torch.allclose(g, torch.full((1, 2, 2), 0.5))
