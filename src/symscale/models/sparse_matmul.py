"""Products of constant sparse CSR matrices with dense features, and their autograd functions.

:func:`spmm` is ``a @ x`` without the two full-size temporaries that ``@`` / ``torch.mm`` allocate for a sparse
``a``: PyTorch computes ``addmm(zeros(m, c), a, x, beta=0)``, which fills a new zero tensor and copies it into a
second new tensor, the result. Where fresh memory is page-faulted in (a new process, glibc's default allocator)
those two passes cost several times the product itself (an edge rotation's ``E K × E K'`` product, E = 3596,
C = 14: 6-8 ms with ``@``, 1.2 ms with :func:`spmm`); with a warm heap, less.

:class:`SparseMatmul`, :class:`PairSparseMatmul` and :class:`M0Sum` use it (or the same ``addmm`` into a given
output) in their forward and backward passes. ``FlopCounterMode`` counts these ``addmm`` calls as
:mod:`symscale.models.layers` counts a sparse ``mm``: 2 FLOPs per stored entry and column.
"""

from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable


def _count_sparse_addmm() -> None:
    """Make ``FlopCounterMode`` count ``aten.addmm`` with a CSR first factor (what :func:`spmm` issues) by its
    stored entries (2 FLOPs each per column of the second factor), as ``layers`` does for ``aten.mm``; dense
    products are counted as before. Counters created after this module is imported see it."""
    from torch.utils.flop_counter import flop_registry

    addmm = torch.ops.aten.addmm
    dense = flop_registry[addmm]
    if getattr(dense, "_symscale_sparse", False):
        return

    def addmm_flops(bias, a, b, *args, **kwargs):
        if isinstance(a, torch.Tensor) and a.layout == torch.sparse_csr:
            return 2 * a.values().numel() * b.shape[-1]
        return dense(bias, a, b, *args, **kwargs)

    addmm_flops._symscale_sparse = True
    flop_registry[addmm] = addmm_flops


_count_sparse_addmm()


def spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` for a sparse CSR ``a`` ``(m, k)`` and a dense ``x`` ``(k, c)``: one ``addmm`` with ``beta = 0``
    writing into a new uninitialised ``(m, c)`` tensor (the result itself: no zero-filled input, no copy).

    With ``beta = 0`` MKL's sparse product (``mkl_sparse_?_mm``, what PyTorch calls on CPU) does not read the
    output's previous contents (also checked with a NaN-filled output), so the result is ``a @ x`` exactly."""
    out = x.new_empty((a.shape[0], x.shape[1]))
    return torch.addmm(out, a, x, beta=0, alpha=1, out=out)


class SparseMatmul(torch.autograd.Function):
    """``y = A x`` for a constant CSR matrix ``A`` (its transpose ``At`` given) and a dense ``x`` ``(N, C)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        ctx.at = at
        return spmm(a, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return spmm(ctx.at, grad.contiguous()), None, None


class PairSparseMatmul(torch.autograd.Function):
    """``[A x₁, A x₂]`` ``(N, 2C)`` (concatenated along columns) for a constant CSR matrix ``A`` (its transpose
    ``At`` given) and dense ``x₁, x₂`` ``(M, C)``: each product is written into its half of one new tensor (MKL
    takes the row stride ``2C``), and the backward reads the halves of the gradient in place, so neither pass
    allocates per-half results or copies them (``torch.cat`` of two products, and its backward's
    non-contiguous slices)."""

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, a: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        ctx.at = at
        c = x1.shape[1]
        out = x1.new_empty((a.shape[0], 2 * c))
        for half, x in ((out[:, :c], x1), (out[:, c:], x2)):
            torch.addmm(half, a, x, beta=0, alpha=1, out=half)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        c = grad.shape[1] // 2
        return spmm(ctx.at, grad[:, :c]), spmm(ctx.at, grad[:, c:]), None, None


class M0Sum(torch.autograd.Function):
    """``out[index_e, k] += scale[e, k] m0[e, ℓ(k)]`` (``m0`` ``(E, L+1, C)``, ``scale`` ``(E, K)`` constant);
    backward by one CSR product with ``E K`` non-zeros (the gradient of the per-degree ``index_select`` would be
    an ``index_add`` along rows: ~10× slower)."""

    @staticmethod
    def forward(ctx, m0: torch.Tensor, scale: torch.Tensor, degree: torch.Tensor, index: torch.Tensor,
                dim_size: int) -> torch.Tensor:
        ctx.save_for_backward(scale, degree, index)
        ctx.dim_size = dim_size
        msg = m0.index_select(1, degree) * scale[:, :, None]
        return msg.new_zeros((dim_size, *msg.shape[1:])).index_add_(0, index, msg)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        scale, degree, index = ctx.saved_tensors
        n_edges, k = scale.shape
        lmax = int(degree[-1])
        dtype = torch.int32 if ctx.dim_size * k < 2**31 else torch.int64
        e = torch.arange(n_edges, dtype=dtype, device=scale.device)[:, None]
        firsts = torch.arange(lmax + 1, dtype=dtype, device=scale.device) ** 2     # first row of each degree
        crow = torch.cat([(e * k + firsts).view(-1), e.new_full((1,), n_edges * k)])
        col = (index.to(dtype)[:, None] * k + torch.arange(k, dtype=dtype, device=scale.device)).view(-1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            at = torch.sparse_csr_tensor(crow, col, scale.reshape(-1), (n_edges * (lmax + 1), ctx.dim_size * k),
                                         check_invariants=False)
        c = grad.shape[-1]
        return spmm(at, grad.contiguous().view(-1, c)).view(n_edges, lmax + 1, c), None, None, None, None
