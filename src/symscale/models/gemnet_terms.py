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

from .sparse_matmul import spmm


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
        fused: build the transposed gathers for :func:`aggregate`'s and :func:`table_rows`' fused backward
            (bases without gradient).

    Returns ``{"basis": [(R_b, B, K_b)], "sizes": slots per bucket, "rows": target edge of every grid row,
    "src": table row of every slot, "table": table, "gather_t": (n_table, slots) CSR or None, "table_t": the
    ``(n_edges, n_table)`` CSRs of the table's two gathers or None}``, or None when there are no terms.
    """
    if dst.numel() == 0:
        return None
    rows, slot, grid = _grid(dst, n_edges)
    sizes = [r * k for r, k in grid]
    dense_src = src.new_zeros(sum(sizes)).index_copy_(0, slot, src)
    dense = basis.new_zeros(sum(sizes), basis.shape[1]).index_copy_(0, slot, basis)
    bases = [b.view(r, k, -1).transpose(1, 2).contiguous() for b, (r, k) in zip(dense.split(sizes), grid)]
    gather_t = table_t = None
    if fused:  # rows: table rows; one entry per real (not padded) slot
        gather_t = _transposed_gather(src, slot, n_table, sum(sizes), basis)
        if table is not None:  # the table's own gathers from the edges, (in, mid)
            positions = torch.arange(table[0].shape[0], device=dst.device)
            table_t = tuple(_transposed_gather(t, positions, n_edges, t.shape[0], basis) for t in table)
    return {"basis": bases, "sizes": sizes, "rows": rows, "src": dense_src, "table": table,
            "gather_t": gather_t, "table_t": table_t}


def _grid(dst: torch.Tensor, n_dst: int, buckets: int = 4) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The padded layout of :func:`~symscale.models.gemnet_geometry.dense_layout` (targets with terms sorted
    by their number of terms, split into up to ``buckets`` equal groups, each an ``(R_b, K_b)`` grid) in a few
    whole-array operations (no pass over the terms per bucket): returns the target of every grid row (all
    buckets), every term's flat slot in the concatenated grids, and ``[(R_b, K_b)]``."""
    counts = torch.bincount(dst, minlength=n_dst)
    rows = torch.nonzero(counts).squeeze(-1)
    n_rows = rows.numel()
    rows = rows.index_select(0, torch.argsort(counts.index_select(0, rows), stable=True))
    bounds = torch.linspace(0, n_rows, min(buckets, n_rows) + 1).round().long().tolist()
    kmax = counts.index_select(0, rows[torch.tensor(bounds[1:], device=dst.device) - 1]).tolist()
    grid = [(hi - lo, k) for lo, hi, k in zip(bounds[:-1], bounds[1:], kmax) if hi > lo]
    offsets = [sum(r * k for r, k in grid[:b]) for b in range(len(grid))]
    base = torch.cat([torch.arange(r, device=dst.device) * k + o for (r, k), o in zip(grid, offsets)])
    pos_of = torch.zeros(n_dst, dtype=torch.long, device=dst.device).index_copy_(
        0, rows, torch.arange(n_rows, device=dst.device))
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(dst.numel(), device=dst.device)
    if bool((dst[1:] >= dst[:-1]).all()):  # grouped by target already (triplets, quadruplets): no sort
        rank = position - start.index_select(0, dst)
    else:
        order = torch.argsort(dst, stable=True)
        sorted_rank = position - start.index_select(0, dst.index_select(0, order))
        rank = torch.empty_like(dst).index_copy_(0, order, sorted_rank)
    return rows, base.index_select(0, pos_of.index_select(0, dst)) + rank, grid


def _transposed_gather(index: torch.Tensor, position: torch.Tensor, n_rows: int, n_cols: int,
                       like: torch.Tensor) -> torch.Tensor:
    """CSR ``(n_rows, n_cols)`` with a 1 at ``(index[t], position[t])``: the transpose of the gather that puts
    row ``index[t]`` at ``position[t]``, i.e. its backward as one sparse matmul (no ``index_add``)."""
    key = index.int() if n_rows < 2**31 else index  # 32-bit keys: half the radix passes
    order = torch.argsort(key, stable=True)
    crow = index.new_zeros(n_rows + 1)
    crow[1:] = torch.cumsum(torch.bincount(index, minlength=n_rows), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, position.index_select(0, order), like.new_ones(index.shape[0]),
                                       (n_rows, n_cols), check_invariants=False)


class _GatherRows(torch.autograd.Function):
    """``x.index_select(0, index)`` whose backward is the sparse matmul ``index_t @ grad`` (:func:`spmm`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        ctx.index_t = index_t
        return x.index_select(0, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return spmm(ctx.index_t, grad.contiguous()), None, None


def table_rows(x: torch.Tensor, gate: torch.Tensor, terms: dict) -> torch.Tensor:
    """Quadruplet table ``x[in] · gate[mid]`` ``(n_table, D)`` (one row per ``(mid, in)`` triplet); with the
    fused layout the gathers' backward is a sparse matmul, else plain autograd."""
    (src, mid), table_t = terms["table"], terms["table_t"]
    if table_t is None:
        return x.index_select(0, src) * gate.index_select(0, mid)
    return _GatherRows.apply(x, src, table_t[0]) * _GatherRows.apply(gate, mid, table_t[1])


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
        return spmm(terms["gather_t"], grad_y), None


def aggregate(table: torch.Tensor, terms: dict) -> torch.Tensor:
    """``A_e`` ``(rows, B · D)`` for the grid rows of ``terms`` from the table features ``(n_table, D)``."""
    if terms["gather_t"] is not None and not (torch.is_grad_enabled() and terms["basis"][0].requires_grad):
        return _Aggregate.apply(table, terms)
    y = table.index_select(0, terms["src"])
    aggs = [torch.bmm(basis, y_b.view(basis.shape[0], basis.shape[2], -1))
            for basis, y_b in zip(terms["basis"], y.split(terms["sizes"]))]
    return torch.cat(aggs).flatten(1)
