"""Triplet and quadruplet index sets and their invariant geometry, for :mod:`symscale.models.gemnet`.

Edges follow :mod:`symscale.data.neighbors`: edge ``e = (i, j)`` has centre ``i`` (receiving) and
neighbour ``j`` (sending), with vector ``r_ij = pos[j] - pos[i] + shift_e``.

* A **triplet** ``(out, in)`` chains two edges ``out = (i, j)`` and ``in = (j, k)``: the message of
  ``k`` that reached ``j`` is passed on to ``i`` (``k -> j -> i``). Its angle is the one at ``j``
  between ``r_ji`` and ``r_jk``. The back-edge (``k`` the very image of ``i``) is excluded.
* A **quadruplet** ``(out, mid, in)`` chains three edges ``out = (i, j)``, ``mid = (j, k)``,
  ``in = (k, l)`` (``l -> k -> j -> i``). Its dihedral is the torsion around the central bond ``j-k``
  between the planes ``(i, j, k)`` and ``(j, k, l)``. The four atoms are distinct images (``k != i``,
  ``l != j`` and ``l != i``).

Everything is built with vectorised torch operations (no Python loops over edges or atoms) and works on
empty graphs. Periodic images are told apart by their shifts, so an atom's own periodic image is a
legitimate partner.
"""

from __future__ import annotations

import torch

_SAME_IMAGE_TOL = 1e-6  # Å; summed lattice shifts below this are the zero shift


def pair_by_key(left_key: torch.Tensor, right_key: torch.Tensor, n_keys: int,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(a, b)`` with ``left_key[a] == right_key[b]``, as two index tensors.

    Pairs come grouped by ``a`` (ascending), and within a group ordered by ``b`` (ascending).
    Cost is linear in the number of pairs produced.
    """
    device = left_key.device
    order = torch.argsort(right_key, stable=True)
    counts = torch.bincount(right_key, minlength=n_keys)
    start = torch.cumsum(counts, 0) - counts
    reps = counts[left_key]
    total = int(reps.sum())
    a = torch.repeat_interleave(torch.arange(left_key.shape[0], device=device), reps,
                                output_size=total)
    first = torch.cumsum(reps, 0) - reps
    offset = torch.arange(total, device=device) - torch.repeat_interleave(first, reps, output_size=total)
    b = order[start[left_key][a] + offset]
    return a, b


def nearest_mask(centre: torch.Tensor, dist: torch.Tensor, mask: torch.Tensor,
                 max_neighbors: int | None) -> torch.Tensor:
    """Restrict ``mask`` to the ``max_neighbors`` nearest masked edges of each centre (ties by index)."""
    if max_neighbors is None or centre.numel() == 0:
        return mask
    idx = torch.nonzero(mask).squeeze(-1)
    c, d = centre[idx], dist[idx]
    by_dist = torch.argsort(d, stable=True)
    order = by_dist[torch.argsort(c[by_dist], stable=True)]
    c_sorted = c[order]
    n = int(centre.max()) + 1
    counts = torch.bincount(c_sorted, minlength=n)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.shape[0], device=centre.device) - start[c_sorted]
    keep = torch.zeros_like(mask)
    keep[idx[order[rank < max_neighbors]]] = True
    return keep


def triplets(edge_index: torch.Tensor, edge_shift: torch.Tensor, mask: torch.Tensor | None = None,
             n_atoms: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplets ``k -> j -> i`` as edge indices ``(out, in)`` with ``out = (i, j)``, ``in = (j, k)``.

    Args:
        edge_index: ``(2, E)`` centres and neighbours.
        edge_shift: ``(E, 3)`` periodic shifts (used to exclude the back-edge ``k = i`` image-exactly).
        mask: ``(E,)`` bool, the edges allowed in triplets (e.g. within the triplet cutoff); all if None.
        n_atoms: number of atoms (default: inferred from ``edge_index``).
    """
    n_edges = edge_index.shape[1]
    if mask is None:
        mask = torch.ones(n_edges, dtype=torch.bool, device=edge_index.device)
    n = n_atoms if n_atoms is not None else (int(edge_index.max()) + 1 if n_edges else 0)
    sub = torch.nonzero(mask).squeeze(-1)
    centre, neigh = edge_index[0, sub], edge_index[1, sub]
    a, b = pair_by_key(neigh, centre, n)
    out, inn = sub[a], sub[b]
    same_atom = edge_index[0, out] == edge_index[1, inn]
    same_image = (edge_shift[out] + edge_shift[inn]).abs().sum(-1) < _SAME_IMAGE_TOL
    keep = ~(same_atom & same_image)
    return out[keep], inn[keep]


def quadruplets(edge_index: torch.Tensor, edge_shift: torch.Tensor, trip_out: torch.Tensor,
                trip_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quadruplets ``l -> k -> j -> i`` as edge indices ``(out, mid, in)`` joined from two triplets.

    ``(trip_out, trip_in)`` are triplets (from :func:`triplets`, usually on a smaller cutoff); a
    quadruplet is a triplet ``(out, mid)`` followed by a triplet ``(mid, in)``. Quadruplets with
    ``l`` the same image as ``i`` (three-rings) are dropped, so the four atoms are distinct images.
    """
    n_edges = edge_index.shape[1]
    a, b = pair_by_key(trip_in, trip_out, n_edges)
    out, mid, inn = trip_out[a], trip_in[a], trip_in[b]
    same_atom = edge_index[0, out] == edge_index[1, inn]
    shift = edge_shift[out] + edge_shift[mid] + edge_shift[inn]
    keep = ~(same_atom & (shift.abs().sum(-1) < _SAME_IMAGE_TOL))
    return out[keep], mid[keep], inn[keep]


def _unit(vec: torch.Tensor) -> torch.Tensor:
    return vec / torch.linalg.vector_norm(vec, dim=-1, keepdim=True).clamp_min(1e-12)


def triplet_cosine(vec: torch.Tensor, out: torch.Tensor, inn: torch.Tensor) -> torch.Tensor:
    """``cos`` of the angle at ``j`` between ``r_ji`` and ``r_jk`` for triplets ``(out=(i,j), in=(j,k))``."""
    u = _unit(vec)
    return -(u[out] * u[inn]).sum(-1)


def dihedral_components(vec: torch.Tensor, out: torch.Tensor, mid: torch.Tensor, inn: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth invariants of quadruplets ``(out=(i,j), mid=(j,k), in=(k,l))``.

    Returns ``(cos_j, cos_k, x, y)``: the cosines of the bond angles at ``j`` (between ``r_ji``,
    ``r_jk``) and at ``k`` (between ``r_kj``, ``r_kl``), and ``x = sin_j sin_k cos(phi)``,
    ``y = sin_j sin_k sin(phi)`` with ``phi`` the dihedral around ``j-k`` (IUPAC sign convention,
    ``phi = atan2(y, x)``). ``x`` and ``y`` are polynomials in unit bond vectors, hence smooth and
    NaN-free even where ``phi`` is undefined (collinear atoms), where both vanish.
    """
    u = _unit(vec)
    b0, b1, b2 = -u[out], u[mid], u[inn]  # j->i, j->k, k->l
    cos_j = (b0 * b1).sum(-1)
    proj2 = (b2 * b1).sum(-1)
    x = (b0 * b2).sum(-1) - cos_j * proj2
    y = (torch.linalg.cross(b1, b0) * b2).sum(-1)
    return cos_j, -proj2, x, y


def legendre(x: torch.Tensor, num: int) -> torch.Tensor:
    """Legendre polynomials ``P_0 .. P_{num-1}`` of ``x``, stacked on a last axis ``(..., num)``."""
    ps = [torch.ones_like(x), x][:num]
    for ell in range(1, num - 1):
        ps.append(((2 * ell + 1) * x * ps[ell] - ell * ps[ell - 1]) / (ell + 1))
    return torch.stack(ps, dim=-1)


def dihedral_harmonics(x: torch.Tensor, y: torch.Tensor, num: int) -> torch.Tensor:
    """``Re (x + i y)^m = (sin_j sin_k)^m cos(m phi)`` for ``m = 1..num``, shape ``(..., num)``.

    Only the real parts are used, so the features are invariant under reflections as well as rotations;
    each vanishes smoothly where the dihedral is undefined.
    """
    re, im = x, y
    out = [re]
    for _ in range(num - 1):
        re, im = re * x - im * y, re * y + im * x
        out.append(re)
    return torch.stack(out, dim=-1)


def dense_layout(dst: torch.Tensor, n_dst: int, buckets: int = 4,
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Padded layouts of terms grouped by their target, for batched matrix products.

    The targets that have terms are sorted by their number of terms and split into up to ``buckets``
    groups of equal size, each laid out as an ``(R_b, K_b)`` grid (one row per target, ``K_b`` = the
    most terms of a target in the group), which keeps padding small when counts vary a lot.

    Returns one ``(rows, terms, slot, K)`` per non-empty group: the target of each grid row, the indices
    of the terms of the group, and each such term's flat position ``row * K + rank`` in the grid.
    """
    device = dst.device
    counts = torch.bincount(dst, minlength=n_dst)
    rows = torch.nonzero(counts).squeeze(-1)
    if dst.numel() == 0:
        return []
    rows = rows[torch.argsort(counts[rows], stable=True)]
    pos_of = torch.full((n_dst,), -1, dtype=torch.long, device=device)
    pos_of[rows] = torch.arange(rows.numel(), device=device)
    order = torch.argsort(dst, stable=True)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(dst)
    rank[order] = torch.arange(dst.numel(), device=device) - start[dst[order]]
    term_pos = pos_of[dst]
    out = []
    bounds = torch.linspace(0, rows.numel(), min(buckets, rows.numel()) + 1).round().long().tolist()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        kmax = int(counts[rows[hi - 1]])
        terms = torch.nonzero((term_pos >= lo) & (term_pos < hi)).squeeze(-1)
        out.append((rows[lo:hi], terms, (term_pos[terms] - lo) * kmax + rank[terms], kmax))
    return out


def to_dense(values: torch.Tensor, slot: torch.Tensor, n_rows: int, kmax: int) -> torch.Tensor:
    """Scatter per-term ``values`` ``(T, ...)`` into a zero-padded ``(R, K, ...)`` grid (differentiable)."""
    out = values.new_zeros((n_rows * kmax,) + tuple(values.shape[1:]))
    return out.index_copy(0, slot, values).view((n_rows, kmax) + tuple(values.shape[1:]))
