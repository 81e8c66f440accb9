"""Neighbour lists built with vesin.

Convention used by every model: an edge ``(i, j)`` means atom ``j`` lies within the cutoff of atom ``i``;
``i`` is the centre that receives the message and ``j`` the neighbour that sends it. The edge vector is
``r_ij = pos[j] - pos[i] + shift`` where ``shift = S @ cell`` for integer periodic image ``S``.
Lists are *full* (both ``(i, j)`` and ``(j, i)`` appear) and contain no self pairs at zero shift.
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList


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
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    n = positions.shape[0]
    periodic = cell is not None and pbc is not None and bool(np.any(pbc))
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
