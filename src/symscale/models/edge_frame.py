"""Per-edge Wigner-D rotations into the eSCN edge frame, and their fast application.

* :class:`EdgeFrame` builds, once per forward, the rotation of every edge (block-diagonal per ℓ) from ``r̂``
  without inverse trigonometric functions, so gradients are finite for every direction. Only the
  structurally non-zero entries are computed (two small matmuls of trig multiples).
* :class:`EdgeRotation` applies those maps (``into`` the edge frame and ``back``) to features ``(E, K, C)``.
  When the rotation needs no gradient (direct forces), it multiplies by one block-sparse CSR matrix over all
  edges (one SpMM each way, forward and backward) instead of ``E`` tiny dense matrices: a batched matmul of
  ``(19 × 25)`` blocks spends most of its time per matrix, and only 115 of their 475 entries are non-zero
  (ℓ ≤ 4, |m| ≤ 2). The products and their backward passes are in :mod:`~symscale.models.sparse_matmul`.
  With a gradient (conservative forces), it uses dense batched matmuls, which autograd differentiates twice.

Row layouts: node features in e3nn order (row ``ℓ² + ℓ + m``), edge-frame features in the m-major order of
:func:`frame_rows`.
"""

from __future__ import annotations

import math
import warnings

import torch
from e3nn import o3
from torch import nn

from .sparse_matmul import M0Sum, PairSparseMatmul, SparseMatmul


def degree_of_rows(lmax: int) -> torch.Tensor:
    """``(K,)`` degree ℓ of each row in e3nn order."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def frame_rows(lmax: int, mmax: int) -> tuple[list[int], list[int]]:
    """Rows kept in the edge frame (``|m| ≤ mmax``), in m-major order, and the block size per ``m``.

    Order: ``m=0`` for ℓ = 0..lmax, then for each m = 1..mmax the ``+m`` rows (ℓ = m..lmax) followed by
    the ``−m`` rows (same ℓ). Returns (e3nn row indices, ``n_m`` = number of ℓ per sign of ``m``).
    """
    rows = [l * l + l for l in range(lmax + 1)]
    sizes = [lmax + 1]
    for m in range(1, mmax + 1):
        rows += [l * l + l + m for l in range(m, lmax + 1)]
        rows += [l * l + l - m for l in range(m, lmax + 1)]
        sizes.append(lmax + 1 - m)
    return rows, sizes


def _trig_multiples(c: torch.Tensor, s: torch.Tensor, lmax: int) -> torch.Tensor:
    """``(E, 2*lmax+1)`` = ``[1, cos θ, sin θ, cos 2θ, sin 2θ, ...]`` from ``cos θ, sin θ`` (no angles)."""
    out = [torch.ones_like(c), c, s][: 2 * lmax + 1]
    cm, sm = c, s
    for _ in range(lmax - 1):
        cm, sm = cm * c - sm * s, sm * c + cm * s
        out += [cm, sm]
    return torch.stack(out, dim=-1)


def _angle_trig(u: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trig multiples of e3nn's ``(α, β)`` of unit vectors ``u`` (``β = acos(u_y)``, ``α = atan2(u_x, u_z)``).

    ``sin β`` is clamped below at 0.1 so nothing diverges; callers only use directions with
    ``|u_y| ≤ 0.9`` (``sin β ≥ 0.43``), where the clamp is inactive and the values are exact.
    """
    x, y, z = u.unbind(-1)
    sb = torch.sqrt(torch.clamp(x * x + z * z, min=0.01))
    # α and β in one recursion: ``(2, N)`` cosines and sines
    both = _trig_multiples(torch.stack([z / sb, y]), torch.stack([x / sb, sb]), lmax)
    return both[0], both[1]


class EdgeFrame(nn.Module):
    """Per-edge Wigner-D matrices ``D(r̂) = D(α, β, 0)`` (e3nn convention: ``D`` maps the polar axis y to r̂).

    ``D_ℓ(α, β, 0) = Y_ℓ(α) · J_ℓ Y_ℓ(β) J_ℓᵀ`` where ``Y_ℓ(θ)`` (rotation about y) is a trigonometric
    polynomial of degree ℓ in θ whose coefficient matrices are fitted exactly from ``e3nn.o3.wigner_D`` at
    construction, and ``J_ℓ`` is the Wigner matrix of the rotation taking y to x (so ``J Y(β) Jᵀ`` rotates
    about x). ``cos/sin`` of ``mα, mβ`` come from ``r̂`` by the angle-addition recursion, never from
    ``acos/atan2``. Near the poles (``|r̂_y| > 0.9``) a second chart is used: ``D(r̂) = D(Q) D(Qᵀ r̂)`` with
    ``Q`` the rotation by π/2 about x; both charts give an edge frame with r̂ on the polar axis (they differ by
    a rotation about that axis, to which SO(2) convolutions are equivariant), and gradients stay finite.
    """

    def __init__(self, lmax: int, mmax: int):
        super().__init__()
        self.lmax, self.mmax = int(lmax), int(mmax)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
        try:
            self._build_constants()
        finally:
            torch.set_default_dtype(previous)
        rows, sizes = frame_rows(lmax, mmax)
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long))
        self.sizes = sizes
        self._build_entry_maps()

    def _build_constants(self) -> None:
        """Rotation-about-y Fourier coefficients, ``J_ℓ`` and ``D(Q)`` from e3nn, in float64."""
        lmax = self.lmax
        f64 = torch.float64
        zero = torch.zeros((), dtype=f64)
        n_samples = 4 * lmax + 4
        theta = torch.arange(n_samples, dtype=f64) * (2 * math.pi / n_samples)
        trig = _trig_multiples(torch.cos(theta), torch.sin(theta), lmax)  # (N, F)
        weight = torch.full((2 * lmax + 1,), 2.0 / n_samples, dtype=f64)
        weight[0] = 1.0 / n_samples
        rot_y_to_x = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64)
        j_angles = o3.matrix_to_angles(rot_y_to_x)
        q_angles = (zero, torch.tensor(math.pi / 2, dtype=f64), zero)
        self.register_buffer("q", o3.angles_to_matrix(*q_angles))
        for l in range(lmax + 1):
            y_samples = o3.wigner_D(l, theta, torch.zeros_like(theta), torch.zeros_like(theta))
            basis = torch.einsum("nf,nab->fab", trig * weight, y_samples)  # exact Fourier coefficients
            self.register_buffer(f"ybasis{l}", basis)
            self.register_buffer(f"j{l}", o3.wigner_D(l, *j_angles))
            self.register_buffer(f"dq{l}", o3.wigner_D(l, *q_angles))

    def _build_entry_maps(self) -> None:
        """Constant maps of :meth:`forward`: the structurally non-zero entries of the edge-frame map, as
        bilinear forms of the trig multiples of ``α`` and ``β`` (non-persistent buffers, float64).

        ``Y_ℓ(α)`` rotates about the polar axis, so its row ``k`` has at most two non-zero entries (``m`` and
        ``−m``): ``D[k, s] = Σ_{c ∈ {k, k̄}} Y(α)[k, c] · G[c, s]`` with ``G = J Y(β) Jᵀ``, and both factors
        are linear in the trig multiples (``ma``, ``mg``: one column per entry and term). The second chart
        ``D(Q) D(Qᵀ u)`` is a linear map ``mq`` of the same entries (left multiplication by the
        block-diagonal ``D(Q)`` keeps the pattern "all rows of a degree block × kept columns").
        """
        lmax, f64 = self.lmax, torch.float64
        rows, k = self.rows.tolist(), (lmax + 1) ** 2
        degree = degree_of_rows(lmax).tolist()
        pairs = [(r, c) for r, s in enumerate(rows) for c in range(degree[s] ** 2, (degree[s] + 1) ** 2)]
        index = {pair: p for p, pair in enumerate(pairs)}
        n_pairs, n_trig = len(pairs), 2 * lmax + 1
        ma, mg = torch.zeros(n_trig, 2 * n_pairs, dtype=f64), torch.zeros(n_trig, 2 * n_pairs, dtype=f64)
        mq = torch.zeros(n_pairs, n_pairs, dtype=f64)
        for p, (r, c) in enumerate(pairs):
            l = degree[rows[r]]
            o, n = l * l, 2 * l + 1
            basis = getattr(self, f"ybasis{l}")[:n]                      # (n, n, n): Y(θ) = Σ_f trig_f basis_f
            j = getattr(self, f"j{l}")
            g = j @ basis @ j.T                                         # G = Σ_f trig_f(β) J basis_f Jᵀ
            support = [a for a in range(n) if float(basis[:, c - o, a].abs().max()) > 1e-12]
            if len(support) > 2:
                raise AssertionError(f"Y_{l} row {c - o} has {len(support)} non-zero entries, expected <= 2")
            for t, a in enumerate(support):
                ma[:n, t * n_pairs + p] = basis[:, c - o, a]
                mg[:n, t * n_pairs + p] = g[:, a, rows[r] - o]
            dq = getattr(self, f"dq{l}")
            for t in range(o, o + n):                                   # D(u)[c, s] = Σ_t D(Q)[c, t] D(Qᵀu)[t, s]
                mq[index[(r, t)], p] = dq[c - o, t - o]
        self.register_buffer("ma", ma, persistent=False)
        self.register_buffer("mg", mg, persistent=False)
        self.register_buffer("mq", mq, persistent=False)
        self.register_buffer("entries", torch.tensor([r * k + c for r, c in pairs]), persistent=False)
        self.n_entries = n_pairs
        # CSR patterns of one edge's block (EdgeRotation): entries by row (r, c) and transposed (c, r)
        entry_row, entry_col = torch.tensor([r for r, _ in pairs]), torch.tensor([c for _, c in pairs])
        transpose = torch.argsort(entry_col * len(rows) + entry_row)
        self.register_buffer("entry_row", entry_row, persistent=False)
        self.register_buffer("entry_col", entry_col, persistent=False)
        self.register_buffer("transpose", transpose, persistent=False)
        for name, counts in (("row_start", torch.bincount(entry_row, minlength=len(rows))),
                             ("col_start", torch.bincount(entry_col, minlength=k))):
            self.register_buffer(name, torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("degree", torch.tensor(degree), persistent=False)
        self.register_buffer("m0_entries", torch.tensor([index[(degree[c], c)] for c in range(k)]),
                             persistent=False)
        # blocks of the edge-frame rows (m = 0, then ±m for m = 1..mmax; EdgeRotation.into_blocks): rows per
        # block, and each entry's block start row, block size and row within the block (for the block-major
        # column index of the transposed matrix), in transposed order
        self.block_rows = [self.sizes[0]] + [2 * n for n in self.sizes[1:]]
        starts = [sum(self.block_rows[:b]) for b in range(len(self.block_rows))]
        block = [max(b for b in range(len(starts)) if starts[b] <= r) for r in range(len(rows))]
        self.block_entries = [int(self.row_start[s0]) for s0 in starts] + [n_pairs]  # entries of block b
        start = torch.tensor([starts[block[r]] for r, _ in pairs])
        size = torch.tensor([self.block_rows[block[r]] for r, _ in pairs])
        self.register_buffer("t_block_start", start[transpose], persistent=False)
        self.register_buffer("t_block_size", size[transpose], persistent=False)
        self.register_buffer("t_block_row", (entry_row - start)[transpose], persistent=False)

    def blocks(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Per-ℓ Wigner blocks ``[(E, 2ℓ+1, 2ℓ+1)]`` of ``D(u)`` for unit vectors ``u`` ``(E, 3)`` (the
        reference construction; :meth:`forward` computes only the entries it needs, to rounding the same)."""
        n_edges = u.shape[0]
        dtype = u.dtype
        near_pole = (u[:, 1].abs() > 0.9)[:, None, None]
        both = torch.cat([u, u @ self.q.to(dtype)])  # second chart: Qᵀ u (row vectors)
        ta, tb = _angle_trig(both, self.lmax)
        out = []
        for l in range(self.lmax + 1):
            basis = getattr(self, f"ybasis{l}").to(dtype)[: 2 * l + 1]
            j = getattr(self, f"j{l}").to(dtype)
            ya = torch.einsum("ef,fab->eab", ta[:, : 2 * l + 1], basis)
            yb = torch.einsum("ef,fab->eab", tb[:, : 2 * l + 1], basis)
            d = ya @ (j @ yb @ j.T)
            d1, d2 = d[:n_edges], getattr(self, f"dq{l}").to(dtype) @ d[n_edges:]
            out.append(torch.where(near_pole, d2, d1))
        return out

    def wigner(self, u: torch.Tensor) -> torch.Tensor:
        """Block-diagonal ``(E, K, K)`` Wigner matrix ``D(u)`` (e3nn row order)."""
        blocks = self.blocks(u)
        k = (self.lmax + 1) ** 2
        d = u.new_zeros((u.shape[0], k, k))
        for l, b in enumerate(blocks):
            d[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2] = b
        return d

    def rotation(self, u: torch.Tensor) -> "EdgeRotation":
        """The edge-frame maps of unit vectors ``u`` ``(E, 3)``: rows ``|m| ≤ mmax`` of ``D(u)ᵀ`` (m-major).

        Only the structurally non-zero entries (within a degree block) are computed, from the trig multiples
        of both charts by two small matmuls (see :meth:`_build_entry_maps`); the second chart only for
        edges near the poles.
        """
        n, dtype = u.shape[0], u.dtype
        near = torch.nonzero(u[:, 1].abs() > 0.9).squeeze(-1)  # second chart, Qᵀ u (row vectors), for these
        both = torch.cat([u, u.index_select(0, near) @ self.q.to(dtype)])
        ta, tb = _angle_trig(both, self.lmax)
        d = (ta @ self.ma.to(dtype)) * (tb @ self.mg.to(dtype))  # (E', 2P): the two terms of every entry
        d = d[:, :self.n_entries] + d[:, self.n_entries:]
        return EdgeRotation(self, d[:n].index_copy(0, near, d[n:] @ self.mq.to(dtype)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(E, K', K)`` map into the edge frame: rows ``|m| ≤ mmax`` of ``D(u)ᵀ`` in m-major order.

        ``x_edge = R @ x`` rotates node features into the frame where ``u`` is the polar axis; ``Rᵀ``
        rotates edge-frame features back (the dropped ``|m| > mmax`` rows count as zero). Same as
        ``self.rotation(u).dense``; :class:`EdgeRotation` applies it without forming it.
        """
        return self.rotation(u).dense


class EdgeRotation:
    """The edge-frame maps ``R_e`` ``(K', K)`` of ``E`` edges, stored as their structurally non-zero
    entries ``values`` ``(E, P)`` (in :class:`EdgeFrame`'s entry order: by row, then column).

    ``into(x)`` = ``R_e x_e`` and ``back(y, weight)`` = ``weight_e R_eᵀ y_e`` equal the dense batched matmuls
    with :attr:`dense` to rounding; without gradients to the rotation they run as one SpMM each.
    """

    def __init__(self, frame: "EdgeFrame", values: torch.Tensor):
        self.frame, self.values = frame, values
        self.n_edges = values.shape[0]
        self.k_frame, self.k = frame.rows.shape[0], (frame.lmax + 1) ** 2
        self._dense = None
        self._patterns: dict[bool, tuple] = {}  # CSR index arrays per row layout (block-major or not)
        self._csr: dict[bool, tuple] = {}   # (A, Aᵀ) per row layout
        self._back: dict[bool, tuple] = {}  # (weight, Aᵀ, A) of the weighted values per row layout

    @property
    def sparse(self) -> bool:
        """Whether :meth:`into` / :meth:`back` use the CSR path (no gradient to the rotation needed)."""
        return not (self.values.requires_grad and torch.is_grad_enabled())

    @property
    def dense(self) -> torch.Tensor:
        """``(E, K', K)`` dense maps (zeros outside the degree blocks)."""
        if self._dense is None:
            out = self.values.new_zeros((self.n_edges, self.k_frame * self.k))
            self._dense = out.index_copy_(1, self.frame.entries, self.values).view(-1, self.k_frame, self.k)
        return self._dense

    def _pattern(self, blocks: bool) -> tuple[torch.Tensor, ...]:
        """Index arrays ``(crow, col, crow_t, col_t)`` of ``A`` and ``Aᵀ`` (see :meth:`_matrices`), built once
        per rotation and layout; 32-bit (MKL's own indices, ~10 % faster products) when they fit."""
        if blocks not in self._patterns:
            f, n, p = self.frame, self.n_edges, self.frame.n_entries
            dtype = torch.int32 if n * max(p, self.k) < 2**31 else torch.int64
            e = torch.arange(n, dtype=dtype, device=self.values.device)[:, None]
            end = e.new_full((1,), n * p)
            crow_t = torch.cat([(e * p + f.col_start.to(dtype)).view(-1), end])
            if blocks:  # a block's entries are contiguous in the entry order (rows are; blocks are row ranges)
                crows, cols, entry_col, row_start = [], [], f.entry_col.to(dtype), f.row_start.to(dtype)
                for b, rows in enumerate(f.block_rows):
                    p0, p1 = f.block_entries[b], f.block_entries[b + 1]
                    r0 = sum(f.block_rows[:b])
                    crows.append((e * (p1 - p0) + (row_start[r0:r0 + rows] + (n - 1) * p0)).view(-1))
                    cols.append((e * self.k + entry_col[p0:p1]).view(-1))
                crow, col = torch.cat(crows + [end]), torch.cat(cols)
                col_t = (e * f.t_block_size.to(dtype) + (n * f.t_block_start + f.t_block_row).to(dtype)).view(-1)
            else:
                crow = torch.cat([(e * p + f.row_start.to(dtype)).view(-1), end])
                col = (e * self.k + f.entry_col.to(dtype)).view(-1)
                col_t = (e * self.k_frame + f.entry_row[f.transpose].to(dtype)).view(-1)
            self._patterns[blocks] = (crow, col, crow_t, col_t)
        return self._patterns[blocks]

    def _matrices(self, values: torch.Tensor, blocks: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR ``A`` (``E K' × E K``, per-edge blocks ``R_e`` with ``values`` ``(E, P)``) and ``Aᵀ``.

        The rows of ``A`` (columns of ``Aᵀ``) are the edge-frame rows, edge-major (edge, row) or, with
        ``blocks``, block-major (block of :attr:`EdgeFrame.block_rows`, edge, row within the block)."""
        crow, col, crow_t, col_t = self._pattern(blocks)
        f, n = self.frame, self.n_edges
        if blocks:  # entries block after block, each edge-major
            bounds = f.block_entries
            flat = torch.cat([values[:, p0:p1].reshape(-1) for p0, p1 in zip(bounds[:-1], bounds[1:])])
        else:
            flat = values.reshape(-1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            a = torch.sparse_csr_tensor(crow, col, flat, (n * self.k_frame, n * self.k), check_invariants=False)
            at = torch.sparse_csr_tensor(crow_t, col_t, values.index_select(1, f.transpose).reshape(-1),
                                         (n * self.k, n * self.k_frame), check_invariants=False)
        return a, at

    def _weighted(self, weight: torch.Tensor | None, blocks: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Aᵀ, A)`` with ``values * weight`` (for :meth:`back`), built once per ``weight`` and layout."""
        cached = self._back.get(blocks)
        if cached is None or cached[0] is not weight:
            vals = self.values if weight is None else self.values * weight.reshape(-1, 1)
            a, at = self._matrices(vals, blocks)
            cached = self._back[blocks] = (weight, at, a)
        return cached[1], cached[2]

    def into(self, x: torch.Tensor) -> torch.Tensor:
        """``(E, K, C)`` node-order features -> ``(E, K', C)`` in the edge frame."""
        if not self.sparse:
            return torch.bmm(self.dense, x)
        if False not in self._csr:
            self._csr[False] = self._matrices(self.values)
        c = x.shape[-1]
        return SparseMatmul.apply(x.contiguous().view(-1, c), *self._csr[False]).view(-1, self.k_frame, c)

    def back(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(E, K', C)`` edge-frame features -> ``(E, K, C)`` node order, times ``weight`` ``(E, 1, 1)``."""
        if not self.sparse:
            return torch.bmm(self.dense.transpose(1, 2), y if weight is None else y * weight)
        c = y.shape[-1]
        return SparseMatmul.apply(y.contiguous().view(-1, c), *self._weighted(weight, False)).view(-1, self.k, c)

    def into_blocks(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`into` as the blocks of :attr:`EdgeFrame.block_rows` (the ``m = 0`` rows, then the ``+m, −m``
        rows of each ``m``): ``[(E, rows_b, C)]``. On the sparse path the product is written block after
        block, so each block is contiguous and the SO(2) convolution reads it without a copy.

        ``x`` may be a pair ``(x1, x2)`` of ``(E, K, C)`` features: the blocks of their channel concatenation
        ``[x1, x2]``, ``[(E, rows_b, 2C)]`` (``R [x1, x2] = [R x1, R x2]``). On the sparse path both products
        write into the halves of one tensor (:class:`~symscale.models.sparse_matmul.PairSparseMatmul`): no
        concatenation, forward or backward."""
        f = self.frame
        pair = isinstance(x, (tuple, list))
        if not self.sparse:
            if pair:
                return [torch.cat(b, dim=-1) for b in zip(self.into_blocks(x[0]), self.into_blocks(x[1]))]
            return list(torch.split(torch.bmm(self.dense, x), f.block_rows, dim=1))
        if True not in self._csr:
            self._csr[True] = self._matrices(self.values, blocks=True)
        n = self.n_edges
        if pair:
            c = x[0].shape[-1]
            out = PairSparseMatmul.apply(*(v.contiguous().view(-1, c) for v in x), *self._csr[True])
        else:
            c = x.shape[-1]
            out = SparseMatmul.apply(x.contiguous().view(-1, c), *self._csr[True])
        c = out.shape[-1]
        return [y.view(n, rows, c) for y, rows in zip(out.split([n * r for r in f.block_rows]), f.block_rows)]

    def back_blocks(self, ys: list[torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`back` of edge-frame features given as blocks (as :meth:`into_blocks` returns them)."""
        if not self.sparse:
            return self.back(torch.cat(ys, dim=1), weight)
        c = ys[0].shape[-1]
        y = torch.cat([y.reshape(-1, c) for y in ys])  # block-major (E K', C)
        return SparseMatmul.apply(y, *self._weighted(weight, True)).view(-1, self.k, c)

    def back_m0(self, m0: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``back`` of edge-frame features that are zero outside the ``m = 0`` rows: ``m0`` ``(E, lmax+1, C)``
        (one row per degree) -> ``(E, K, C)``; elementwise, as each node row has one ``m = 0`` entry."""
        return m0.index_select(1, self.frame.degree) * self._m0_scale(weight)[:, :, None]

    def _m0_scale(self, weight: torch.Tensor | None) -> torch.Tensor:
        """``(E, K)``: ``R[e, ℓ(k), k]`` (the ``m = 0`` entry of each node row), times ``weight`` ``(E, 1, 1)``."""
        scale = self.values.index_select(1, self.frame.m0_entries)
        return scale if weight is None else scale * weight.reshape(-1, 1)

    def back_m0_sum(self, m0: torch.Tensor, index: torch.Tensor, dim_size: int,
                    weight: torch.Tensor | None = None) -> torch.Tensor:
        """``scatter_sum(back_m0(m0, weight), index, dim_size)`` ``(dim_size, K, C)``; without gradients to
        the rotation (and ``weight``) its backward is one CSR product."""
        if not self.sparse or (weight is not None and weight.requires_grad and torch.is_grad_enabled()):
            msg = self.back_m0(m0, weight)
            return msg.new_zeros((dim_size, *msg.shape[1:])).index_add_(0, index, msg)
        return M0Sum.apply(m0, self._m0_scale(weight), self.frame.degree, index, dim_size)
