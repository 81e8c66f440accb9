"""The sparse-product helpers of models/sparse_matmul.py: exact products and gradients, and the
assumption spmm rests on (addmm with beta = 0 never reads the output's previous contents)."""

from __future__ import annotations

import torch

from symscale.models.sparse_matmul import PairSparseMatmul, SparseMatmul, spmm


def _sparse(m: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(m, k, generator=g, dtype=torch.float64)
    return dense * (torch.rand(m, k, generator=g, dtype=torch.float64) < 0.2)


def test_addmm_with_beta_zero_ignores_a_nan_output():
    a = torch.eye(4, dtype=torch.float64).to_sparse_csr()
    x = torch.randn(4, 3, dtype=torch.float64)
    out = torch.full((4, 3), float("nan"), dtype=torch.float64)
    torch.addmm(out, a, x, beta=0, out=out)
    assert torch.equal(out, x)
    half = torch.full((4, 6), float("nan"), dtype=torch.float64)[:, 3:]   # a strided output, as PairSparseMatmul
    torch.addmm(half, a, x, beta=0, out=half)
    assert torch.equal(half, x)


def test_spmm_and_autograd_functions_match_dense_products():
    d = _sparse(30, 20, 0)
    a, at = d.to_sparse_csr(), d.t().contiguous().to_sparse_csr()
    x1 = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(spmm(a, x1.detach()), d @ x1.detach(), atol=1e-12)
    y = SparseMatmul.apply(x1, a, at)
    pair = PairSparseMatmul.apply(x1, x2, a, at)
    assert torch.allclose(pair, torch.cat([d @ x1, d @ x2], dim=1), atol=1e-12)
    w = torch.randn(30, 10, dtype=torch.float64)
    g1, g2 = torch.autograd.grad((pair * w).sum() + (y * w[:, :5]).sum(), (x1, x2))
    assert torch.allclose(g1, d.t() @ (w[:, :5] + w[:, :5]), atol=1e-12)
    assert torch.allclose(g2, d.t() @ w[:, 5:], atol=1e-12)
