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
    reps = counts.index_select(0, left_key)
    total = int(reps.sum())
    a = torch.repeat_interleave(torch.arange(left_key.shape[0], device=device), reps,
                                output_size=total)
    # pair k of left item a takes the right item at sorted position start[key_a] + (k - first_a)
    shift = start.index_select(0, left_key) - (torch.cumsum(reps, 0) - reps)
    b = order.index_select(0, torch.repeat_interleave(shift, reps, output_size=total)
                           + torch.arange(total, device=device))
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
    centre, neigh = edge_index[0].index_select(0, sub), edge_index[1].index_select(0, sub)
    a, b = pair_by_key(neigh, centre, n)
    out, inn = sub.index_select(0, a), sub.index_select(0, b)
    back = edge_index[0].index_select(0, out) == edge_index[1].index_select(0, inn)
    if bool(edge_shift.any()):  # periodic images: the back-edge is also the same image
        back &= _zero_shift(edge_shift, out, inn)
    keep = torch.nonzero(~back).squeeze(-1)
    return out.index_select(0, keep), inn.index_select(0, keep)


def quadruplets(edge_index: torch.Tensor, edge_shift: torch.Tensor, trip_out: torch.Tensor,
                trip_in: torch.Tensor, with_triplet: bool = False) -> tuple[torch.Tensor, ...]:
    """Quadruplets ``l -> k -> j -> i`` as edge indices ``(out, mid, in)`` joined from two triplets.

    ``(trip_out, trip_in)`` are triplets (from :func:`triplets`, usually on a smaller cutoff); a
    quadruplet is a triplet ``(out, mid)`` followed by a triplet ``(mid, in)``. Quadruplets with
    ``l`` the same image as ``i`` (three-rings) are dropped, so the four atoms are distinct images.
    ``with_triplet``: also return, for each quadruplet, the position of its triplet ``(mid, in)`` in
    ``(trip_out, trip_in)``.
    """
    n_edges = edge_index.shape[1]
    a, b = pair_by_key(trip_in, trip_out, n_edges)
    out, mid, inn = trip_out.index_select(0, a), trip_in.index_select(0, a), trip_in.index_select(0, b)
    ring = edge_index[0].index_select(0, out) == edge_index[1].index_select(0, inn)
    if bool(edge_shift.any()):  # periodic images: a three-ring only if l is the very image of i
        ring &= _zero_shift(edge_shift, out, mid, inn)
    keep = torch.nonzero(~ring).squeeze(-1)
    quads = (out.index_select(0, keep), mid.index_select(0, keep), inn.index_select(0, keep))
    return quads + (b.index_select(0, keep),) if with_triplet else quads


def _zero_shift(edge_shift: torch.Tensor, *edges: torch.Tensor) -> torch.Tensor:
    """Whether the lattice shifts of the chained ``edges`` sum to zero (the path returns to the same image)."""
    total = sum(edge_shift.index_select(0, e) for e in edges)
    return total.abs().sum(-1) < _SAME_IMAGE_TOL


def unit_columns(vec: torch.Tensor) -> torch.Tensor:
    """Unit edge vectors as ``(3, E)`` columns (component-major: gathers and dot products over the three
    components then run on contiguous rows); pass as ``unit`` to the functions below to compute it once."""
    return (vec / torch.linalg.vector_norm(vec, dim=-1, keepdim=True).clamp_min(1e-12)).T.contiguous()


def triplet_cosine(vec: torch.Tensor, out: torch.Tensor, inn: torch.Tensor,
                   unit: torch.Tensor | None = None) -> torch.Tensor:
    """``cos`` of the angle at ``j`` between ``r_ji`` and ``r_jk`` for triplets ``(out=(i,j), in=(j,k))``;
    ``unit``: :func:`unit_columns` of ``vec`` if already computed."""
    u = unit_columns(vec) if unit is None else unit
    return -(u.index_select(1, out) * u.index_select(1, inn)).sum(0)


def dihedral_components(vec: torch.Tensor, out: torch.Tensor, mid: torch.Tensor, inn: torch.Tensor,
                        unit: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth invariants of quadruplets ``(out=(i,j), mid=(j,k), in=(k,l))``.

    Returns ``(cos_j, cos_k, x, y)``: the cosines of the bond angles at ``j`` (between ``r_ji``,
    ``r_jk``) and at ``k`` (between ``r_kj``, ``r_kl``), and ``x = sin_j sin_k cos(phi)``,
    ``y = sin_j sin_k sin(phi)`` with ``phi`` the dihedral around ``j-k`` (IUPAC sign convention,
    ``phi = atan2(y, x)``). ``x`` and ``y`` are polynomials in unit bond vectors, hence smooth and
    NaN-free even where ``phi`` is undefined (collinear atoms), where both vanish. ``unit``: as in
    :func:`triplet_cosine`.
    """
    u = unit_columns(vec) if unit is None else unit
    a0, b1, b2 = u.index_select(1, out), u.index_select(1, mid), u.index_select(1, inn)  # i->j, j->k, k->l
    cos_j = -(a0 * b1).sum(0)                                             # b0 = -a0 = j->i
    proj2 = (b2 * b1).sum(0)
    x = -(a0 * b2).sum(0) - cos_j * proj2
    y = -(torch.linalg.cross(b1, a0, dim=0) * b2).sum(0)
    return cos_j, -proj2, x, y


def legendre(x: torch.Tensor, num: int, dim: int = -1) -> torch.Tensor:
    """Legendre polynomials ``P_0 .. P_{num-1}`` of ``x``, stacked on axis ``dim`` (default: a last axis,
    ``(..., num)``; ``dim=0``: ``(num, ...)``, contiguous per polynomial)."""
    ps = [torch.ones_like(x), x][:num]
    for ell in range(1, num - 1):  # P_{l+1} = ((2l+1) x P_l - l P_{l-1}) / (l+1)
        ps.append(torch.addcmul(ps[ell - 1] * (-ell / (ell + 1)), x, ps[ell], value=(2 * ell + 1) / (ell + 1)))
    return torch.stack(ps, dim=dim)


def dihedral_harmonics(x: torch.Tensor, y: torch.Tensor, num: int, dim: int = -1) -> torch.Tensor:
    """``Re (x + i y)^m = (sin_j sin_k)^m cos(m phi)`` for ``m = 1..num``, stacked on axis ``dim`` (default:
    a last axis, ``(..., num)``).

    Only the real parts are used, so the features are invariant under reflections as well as rotations;
    each vanishes smoothly where the dihedral is undefined.
    """
    re, im = x, y
    out = [re]
    for _ in range(num - 1):
        re, im = re * x - im * y, re * y + im * x
        out.append(re)
    return torch.stack(out, dim=dim)


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
    if dst.numel() == 0:
        return []
    counts = torch.bincount(dst, minlength=n_dst)
    rows = torch.nonzero(counts).squeeze(-1)
    rows = rows.index_select(0, torch.argsort(counts.index_select(0, rows), stable=True))
    pos_of = torch.full((n_dst,), -1, dtype=torch.long, device=device)
    pos_of.index_copy_(0, rows, torch.arange(rows.numel(), device=device))
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(dst.numel(), device=device)
    if bool((dst[1:] >= dst[:-1]).all()):  # grouped by target already (triplets, quadruplets): no sort
        rank = position - start.index_select(0, dst)
    else:
        order = torch.argsort(dst, stable=True)
        rank = torch.empty_like(dst).index_copy_(0, order, position - start.index_select(0, dst.index_select(0, order)))
    term_pos = pos_of.index_select(0, dst)
    out = []
    bounds = torch.linspace(0, rows.numel(), min(buckets, rows.numel()) + 1).round().long().tolist()
    kmax_of = counts.index_select(0, rows[torch.tensor(bounds[1:], device=device) - 1]).tolist()
    for (lo, hi), kmax in zip(zip(bounds[:-1], bounds[1:]), kmax_of):
        if hi <= lo:
            continue
        terms = torch.nonzero((term_pos >= lo) & (term_pos < hi)).squeeze(-1)
        slot = (term_pos.index_select(0, terms) - lo) * kmax + rank.index_select(0, terms)
        out.append((rows[lo:hi], terms, slot, kmax))
    return out


def to_dense(values: torch.Tensor, slot: torch.Tensor, n_rows: int, kmax: int) -> torch.Tensor:
    """Scatter per-term ``values`` ``(T, ...)`` into a zero-padded ``(R, K, ...)`` grid (differentiable)."""
    out = values.new_zeros((n_rows * kmax,) + tuple(values.shape[1:]))
    return out.index_copy_(0, slot, values).view((n_rows, kmax) + tuple(values.shape[1:]))
