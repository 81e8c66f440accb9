"""Neighbour lists built with vesin.

Convention used by every model: an edge ``(i, j)`` means atom ``j`` lies within the cutoff of atom ``i``;
``i`` is the centre that receives the message and ``j`` the neighbour that sends it. The edge vector is
``r_ij = pos[j] - pos[i] + shift`` where ``shift = S @ cell`` for integer periodic image ``S``.
Lists are *full* (both ``(i, j)`` and ``(j, i)`` appear) and contain no self pairs at zero shift.
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList

from ..errors import DataError

#: Accepted cutoff radii (Å). Below, vesin refuses; far above, a search over a molecule hangs in vesin
#: and a periodic one enumerates millions of images.
MIN_CUTOFF = 0.1
MAX_CUTOFF = 100.0
#: Largest extent (Å) of an isolated structure, and largest |coordinate| of any: vesin's cell list dies
#: with SIGFPE on coordinates near 1e5 Å, so nothing that large ever reaches it.
MAX_EXTENT = 1.0e4
#: Largest number of pairs a periodic search may produce (about 16 bytes each, several arrays).
MAX_PAIRS = 200_000_000


def check_geometry(positions: np.ndarray, cutoff: float, cell: np.ndarray | None = None,
                   periodic: bool = False) -> str | None:
    """Why a neighbour search over this geometry cannot be done safely, or ``None``.

    Checks, before any native code runs: a finite cutoff in [:data:`MIN_CUTOFF`, :data:`MAX_CUTOFF`],
    finite positions within :data:`MAX_EXTENT` of each other and of the origin, and for a periodic cell an
    estimated pair count below :data:`MAX_PAIRS`.
    """
    if not (np.isfinite(cutoff) and MIN_CUTOFF <= cutoff <= MAX_CUTOFF):
        return f"cutoff {cutoff:g} Å is outside [{MIN_CUTOFF:g}, {MAX_CUTOFF:g}] Å"
    if len(positions) == 0:
        return None
    if not np.isfinite(positions).all():
        return "non-finite position"
    big = float(np.abs(positions).max())
    if big > MAX_EXTENT:
        return f"a coordinate of {big:.3g} Å exceeds {MAX_EXTENT:g} Å"
    if periodic:
        volume = abs(float(np.linalg.det(cell)))
        if not volume > 0:
            return "periodic structure with a degenerate (zero-volume) cell"
        n = len(positions)
        pairs = n * max(n, 1) / volume * 4.0 / 3.0 * np.pi * cutoff ** 3
        if pairs > MAX_PAIRS:
            return (f"cutoff {cutoff:g} Å gives about {pairs:.2g} pairs in this {volume:.3g} Å^3 cell "
                    f"(more than {MAX_PAIRS:.0e})")
    return None


def neighbor_list(positions: np.ndarray, cutoff: float, cell: np.ndarray | None = None,
                  pbc: np.ndarray | bool | None = None, max_neighbors: int | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list of one structure.

    Args:
        positions: ``(n, 3)`` Cartesian positions in Å.
        cutoff: cutoff radius in Å (pairs with distance ``< cutoff`` are kept).
        cell: ``(3, 3)`` lattice vectors as rows, or ``None`` for an isolated molecule.
        pbc: periodic flags (bool or three bools); ignored without a cell.
        max_neighbors: when given, keep only the nearest ``max_neighbors`` neighbours of each centre
            (ties broken by index). The list is then no longer symmetric in ``i`` and ``j``.

    Returns:
        ``edge_index`` of shape ``(2, E)`` (int64; row 0 centres ``i``, row 1 neighbours ``j``) and
        ``shift`` of shape ``(E, 3)``: the Cartesian shift (Å) added to ``pos[j] - pos[i]``.

    Raises:
        DataError: the geometry is outside what the search handles (:func:`check_geometry`).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    n = positions.shape[0]
    periodic = cell is not None and pbc is not None and bool(np.any(pbc))
    problem = check_geometry(positions, float(cutoff), cell, periodic)
    if problem is not None:
        raise DataError(f"neighbour list: {problem}")
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3))
    if periodic:
        box = np.ascontiguousarray(cell, dtype=np.float64)
        periodic_flags = [bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]
    else:
        box = np.zeros((3, 3))
        periodic_flags = False
    calc = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, d = calc.compute(points=positions, box=box, periodic=periodic_flags, quantities="ijSd")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shift = s.astype(np.float64) @ box if periodic else np.zeros((len(i), 3))
    # vesin sorts nothing by default; a deterministic order keeps batches reproducible.
    order = np.lexsort((j, d, i)) if max_neighbors is not None else np.lexsort((j, i))
    i, j, shift, d = i[order], j[order], shift[order], d[order]
    if max_neighbors is not None and len(i) > 0:
        # rank of each edge within its centre's distance-sorted block
        starts = np.searchsorted(i, i, side="left")
        rank = np.arange(len(i)) - starts
        keep = rank < max_neighbors
        i, j, shift = i[keep], j[keep], shift[keep]
    return np.stack([i, j]), shift
