"""Padded layouts of GemNet's many-body terms and their aggregation ``A_e = Σ_t basis_t ⊗ y_t``.

Terms (triplets or quadruplets) are grouped by their target edge into a few padded buckets
(:func:`~symscale.models.gemnet_geometry.dense_layout`); the per-term features ``y_t`` are rows of a
"table" (the edges for triplets, the ``(mid, in)`` triplets for quadruplets) gathered into the grid slots,
and each bucket is one batched matmul with its basis ``(R_b, B, K_b)``.

With direct forces the bases are constants, and :func:`aggregate` runs as one autograd node: the bucket
products write into one output (no concatenation), their backward writes into one gradient (no
concatenation of split gradients), and the gather's backward is one sparse matmul with the transposed
slot → table map built here once per forward, which skips the padding (an ``index_add`` of the ~100k padded
slots of a paper_mini batch took ~2 ms per many-body block). When the bases need gradients (conservative
forces, differentiated twice) it uses plain autograd ops.
"""

from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable

from . import gemnet_geometry as geo


def term_layout(basis: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, n_edges: int, n_table: int,
                table: tuple[torch.Tensor, torch.Tensor] | None = None, fused: bool = True) -> dict | None:
    """Padded per-target layouts of many-body terms (padding has zero basis), all buckets in one gather.

    Args:
        basis: ``(T, B)`` per-term basis (envelopes and scales included).
        dst, src: ``(T,)`` target edge and table row of every term.
        n_edges, n_table: number of edges (targets) and of table rows.
        table: None (the table is one row per edge: triplets) or the ``(in, mid)`` edges of each table row
            (quadruplets: rows are their ``(mid, in)`` triplets, so ``x_in · gate_mid`` is formed once per
            triplet, not once per quadruplet).
        fused: build the transposed gather for :func:`aggregate`'s fused backward (bases without gradient).

    Returns ``{"basis": [(R_b, B, K_b)], "sizes": slots per bucket, "rows": target edge of every grid row,
    "src": table row of every slot, "table": table, "gather_t": (n_table, slots) CSR or None}``, or None when
    there are no terms.
    """
    layout = geo.dense_layout(dst, n_edges)
    if not layout:
        return None
    sizes = [rows.numel() * kmax for rows, _, _, kmax in layout]
    offsets = [sum(sizes[:b]) for b in range(len(sizes))]
    idx = torch.cat([terms for _, terms, _, _ in layout])
    slot = torch.cat([s + o for (_, _, s, _), o in zip(layout, offsets)])
    term_src = src.index_select(0, idx)
    dense_src = src.new_zeros(sum(sizes)).index_copy_(0, slot, term_src)
    bases = [geo.to_dense(basis.index_select(0, terms), s, rows.numel(), kmax).transpose(1, 2).contiguous()
             for rows, terms, s, kmax in layout]
    gather_t = None
    if fused:  # rows: table rows; one entry per real (not padded) slot
        order = torch.argsort(term_src, stable=True)
        crow = term_src.new_zeros(n_table + 1)
        crow[1:] = torch.cumsum(torch.bincount(term_src, minlength=n_table), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            gather_t = torch.sparse_csr_tensor(crow, slot.index_select(0, order),
                                               basis.new_ones(slot.shape[0]), (n_table, sum(sizes)),
                                               check_invariants=False)
    return {"basis": bases, "sizes": sizes, "rows": torch.cat([rows for rows, _, _, _ in layout]),
            "src": dense_src, "table": table, "gather_t": gather_t}


class _Aggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, terms: dict) -> torch.Tensor:
        ctx.terms, d = terms, table.shape[1]
        y = table.index_select(0, terms["src"])
        bases = terms["basis"]
        out = table.new_empty(sum(b.shape[0] for b in bases), bases[0].shape[1], d)
        r0 = 0
        for basis, y_b in zip(bases, y.split(terms["sizes"])):
            torch.bmm(basis, y_b.view(basis.shape[0], basis.shape[2], d), out=out[r0:r0 + basis.shape[0]])
            r0 += basis.shape[0]
        return out.view(out.shape[0], -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        terms = ctx.terms
        bases = terms["basis"]
        grad = grad.reshape(grad.shape[0], bases[0].shape[1], -1)
        d = grad.shape[2]
        grad_y = grad.new_empty(sum(terms["sizes"]), d)
        r0 = s0 = 0
        for basis, size in zip(bases, terms["sizes"]):
            r, k = basis.shape[0], basis.shape[2]
            torch.bmm(basis.transpose(1, 2), grad[r0:r0 + r], out=grad_y[s0:s0 + size].view(r, k, d))
            r0, s0 = r0 + r, s0 + size
        return terms["gather_t"] @ grad_y, None


def aggregate(table: torch.Tensor, terms: dict) -> torch.Tensor:
    """``A_e`` ``(rows, B · D)`` for the grid rows of ``terms`` from the table features ``(n_table, D)``."""
    if terms["gather_t"] is not None and not (torch.is_grad_enabled() and terms["basis"][0].requires_grad):
        return _Aggregate.apply(table, terms)
    y = table.index_select(0, terms["src"])
    aggs = [torch.bmm(basis, y_b.view(basis.shape[0], basis.shape[2], -1))
            for basis, y_b in zip(terms["basis"], y.split(terms["sizes"]))]
    return torch.cat(aggs).flatten(1)
