"""Checks applied to every structure while reading and preparing data.

Each check raises :class:`symscale.errors.DataError` with a one-line message of the form
``"<file>: structure <idx>: <what>"`` so that the user can find the faulty record.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .neighbors import check_geometry, neighbor_list
from .structure import Structure

#: Pairs of atoms closer than this (Å) are reported as overlapping.
MIN_DISTANCE = 0.1
#: Largest atomic number accepted (oganesson).
MAX_Z = 118
_SEARCH_CUTOFF = 1.0


def structure_error(source: str, index: int, what: str) -> DataError:
    """A :class:`DataError` naming ``source`` and the structure ``index`` (message kept to one line)."""
    what = " ".join(str(what).split())
    return DataError(f"{source}: structure {index}: {what}")


def validate_structure(s: Structure, index: int, source: str, *, require_labels: bool = True,
                       min_distance: float = MIN_DISTANCE) -> None:
    """Raise :class:`DataError` when ``s`` cannot be used for training.

    Args:
        s: the structure to check.
        index: its position in ``source`` (0-based), used in the message.
        source: the file (or other source name) it came from, used in the message.
        require_labels: when true a missing energy or missing forces is an error.
        min_distance: two atoms (including periodic images) closer than this many Å are an error.
    """
    n = s.n_atoms
    if n == 0:
        raise structure_error(source, index, "empty structure (no atoms)")
    if s.positions.shape != (n, 3):
        raise structure_error(source, index, f"positions have shape {s.positions.shape}, expected ({n}, 3)")
    bad_z = (s.numbers < 1) | (s.numbers > MAX_Z)
    if bad_z.any():
        k = int(np.flatnonzero(bad_z)[0])
        raise structure_error(source, index, f"atom {k}: unknown element (atomic number {int(s.numbers[k])})")
    if not np.isfinite(s.positions).all():
        k = int(np.flatnonzero(~np.isfinite(s.positions).all(axis=1))[0])
        raise structure_error(source, index, f"atom {k}: non-finite position")
    if s.energy is None:
        if require_labels:
            raise structure_error(source, index, "missing energy")
    elif not np.isfinite(s.energy):
        raise structure_error(source, index, f"non-finite energy ({s.energy})")
    if s.forces is None:
        if require_labels:
            raise structure_error(source, index, "missing forces")
    else:
        if s.forces.shape != (n, 3):
            raise structure_error(source, index,
                                  f"forces have shape {tuple(s.forces.shape)}, expected ({n}, 3)")
        if not np.isfinite(s.forces).all():
            k = int(np.flatnonzero(~np.isfinite(s.forces).all(axis=1))[0])
            raise structure_error(source, index, f"atom {k}: non-finite force")
    periodic = s.cell is not None and bool(np.any(s.pbc))
    if periodic:
        if not np.isfinite(s.cell).all():
            raise structure_error(source, index, "non-finite cell")
        if bool(np.all(s.pbc)) and abs(np.linalg.det(s.cell)) < 1e-8:
            raise structure_error(source, index, "periodic structure with a degenerate (zero-volume) cell")
    problem = check_geometry(s.positions, _SEARCH_CUTOFF, s.cell, periodic and bool(np.all(s.pbc)))
    if problem is not None:
        raise structure_error(source, index, problem)
    if (n > 1 or periodic) and min_distance > 0:
        # vesin's cell list gets slow for tiny cutoffs (many empty cells): search at 1 Å, then filter
        edges, shift = neighbor_list(s.positions, max(min_distance, _SEARCH_CUTOFF), s.cell, s.pbc)
        dist = np.linalg.norm(s.positions[edges[1]] - s.positions[edges[0]] + shift, axis=1)
        close = np.flatnonzero(dist < min_distance)
        if len(close):
            k = int(close[0])
            i, j, d = int(edges[0, k]), int(edges[1, k]), float(dist[k])
            what = "its periodic image" if i == j else f"atom {j}"
            raise structure_error(source, index,
                                  f"atom {i} overlaps {what} (distance {d:.3g} Å < {min_distance} Å)")
