"""Edge-frame rotations (symscale.models.edge_frame): the fast construction and the block-sparse application
against the reference dense matrices, gradients, and how FLOPs of the sparse products are counted."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from symscale.models.edge_frame import EdgeFrame

F64 = torch.float64


def directions(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Random unit vectors plus the poles, a near-pole and a chart-boundary direction."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 3, generator=g, dtype=F64)
    u[:4] = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.05, 0.99, 0.0], [0.436, 0.9, 0.0]], dtype=F64)
    return u / u.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("lmax,mmax", [(1, 1), (2, 2), (2, 0), (3, 1), (4, 2), (4, 4)])
def test_rotation_equals_reference_construction(lmax, mmax):
    """Only the structurally non-zero entries are computed (two matmuls of trig multiples, second chart only
    near the poles); the map equals the per-ℓ construction ``D(u)ᵀ[rows]`` everywhere."""
    frame = EdgeFrame(lmax, mmax).double()
    u = directions()
    ref = frame.wigner(u).transpose(1, 2)[:, frame.rows]
    err = float((frame(u) - ref).abs().max())
    print(f"lmax={lmax} mmax={mmax}: |R - reference| {err:.1e}")
    assert err < 1e-13


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("lmax,mmax", [(2, 2), (4, 2)])
def test_sparse_application_matches_dense(lmax, mmax, dtype, tol):
    """``into``, ``back`` (with per-edge weights) and ``back_m0`` equal the dense batched matmuls, values and
    gradients, on the sparse path (rotation without gradient) and the dense one (rotation with gradient)."""
    frame = EdgeFrame(lmax, mmax).to(dtype)
    g = torch.Generator().manual_seed(1)
    vec = directions().to(dtype).requires_grad_(True)
    for needs_grad in (False, True):
        rot = frame.rotation(vec if needs_grad else vec.detach())
        assert rot.sparse is not needs_grad
        dense = rot.dense.detach()
        e, kf, k = dense.shape
        x = torch.randn(e, k, 5, generator=g, dtype=F64).to(dtype).requires_grad_(True)
        y = torch.randn(e, kf, 5, generator=g, dtype=F64).to(dtype).requires_grad_(True)
        m0 = torch.randn(e, lmax + 1, 5, generator=g, dtype=F64).to(dtype).requires_grad_(True)
        w = torch.rand(e, 1, 1, generator=g, dtype=F64).to(dtype)
        got = (rot.into(x), rot.back(y, w), rot.back_m0(m0, w))
        want = (dense @ x, dense.transpose(1, 2) @ (y * w), dense[:, : lmax + 1].transpose(1, 2) @ (m0 * w))
        for a, b in zip(got, want):
            assert float((a - b).detach().abs().max()) < tol * float(b.detach().abs().max())
        loss = sum((a * a.detach().sin()).sum() for a in got)
        grads = torch.autograd.grad(loss, [x, y, m0])
        ref = torch.autograd.grad(sum((b * b.detach().sin()).sum() for b in want), [x, y, m0])
        for a, b in zip(grads, ref):
            assert float((a - b).abs().max()) < tol * float(b.abs().max())
    (rot.into(x).square().sum() + rot.back(y, w).square().sum()).backward()  # gradient reaches the vectors
    assert vec.grad is not None and torch.isfinite(vec.grad).all() and vec.grad.abs().max() > 0


def test_sparse_products_count_their_stored_entries():
    """FlopCounterMode counts the block-sparse product by its non-zeros (2 per entry and channel), forward and
    backward, not as an ``(E K') × (E K)`` dense matrix."""
    frame = EdgeFrame(4, 2)
    rot = frame.rotation(directions(50).float())
    x = torch.randn(50, 25, 8, requires_grad=True)
    with FlopCounterMode(display=False) as fwd:
        y = rot.into(x)
    with FlopCounterMode(display=False) as bwd:
        y.sum().backward()
    expected = 2 * 50 * frame.n_entries * 8
    assert frame.n_entries == 115  # of 19 × 25 entries: the ℓ blocks, rows |m| <= 2
    assert fwd.get_total_flops() == expected and bwd.get_total_flops() == expected
