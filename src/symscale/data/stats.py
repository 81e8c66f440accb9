"""Per-element reference energies and normalisation statistics.

The total energy is modelled as ``E ≈ Σ_atoms E0[Z] + residual``. ``E0`` is fitted by linear least squares
on the training split (composition matrix × E0 ≈ E). What the network learns is then scaled by

* ``energy_scale`` (eV/atom): the RMS over training structures of the per-atom residual
  ``(E - Σ E0[Z]) / n_atoms``;
* ``force_scale`` (eV/Å): the RMS over all training force *components*.

:func:`fit_normalization` works on arrays in memory; :func:`fit_normalization_streaming` gives the same
numbers from data read in blocks (two passes, memory independent of the dataset size), which is what
preparing a dataset uses.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def composition_matrix(numbers: np.ndarray, offsets: np.ndarray, elements: np.ndarray,
                       indices: np.ndarray | None = None) -> np.ndarray:
    """``(S, n_elements)`` counts of each element in each structure (vectorised, no per-atom loop).

    Args:
        numbers: concatenated atomic numbers of all structures.
        offsets: ``(S_all + 1,)`` atom offsets of each structure into ``numbers``.
        elements: sorted atomic numbers defining the columns.
        indices: structures to include (all when ``None``), in that row order.
    """
    n_all = len(offsets) - 1
    indices = np.arange(n_all) if indices is None else np.asarray(indices, dtype=np.int64)
    counts = np.diff(offsets)
    struct_of_atom = np.repeat(np.arange(n_all), counts)
    column = np.searchsorted(elements, numbers)
    full = np.zeros((n_all, len(elements)), dtype=np.float64)
    np.add.at(full, (struct_of_atom, column), 1.0)
    return full[indices]


def fit_normalization(numbers: np.ndarray, offsets: np.ndarray, energy: np.ndarray, forces: np.ndarray,
                      train: np.ndarray) -> dict:
    """Fit ``E0`` and the energy / force scales on the ``train`` structures.

    Args:
        numbers: concatenated atomic numbers ``(n_atoms_total,)``.
        offsets: ``(S + 1,)`` atom offsets.
        energy: ``(S,)`` total energies in eV.
        forces: ``(n_atoms_total, 3)`` forces in eV/Å.
        train: indices of the training structures.

    Returns:
        ``{"e0": {Z: eV}, "energy_scale": eV/atom, "force_scale": eV/Å,
        "notes": [str]}``. Elements present in the data but absent from ``train`` get ``E0 = 0`` and a note.
        A zero scale (e.g. one training structure) is replaced by 1.0 with a note.
    """
    numbers = np.asarray(numbers)
    offsets = np.asarray(offsets, dtype=np.int64)
    train = np.asarray(train, dtype=np.int64)
    elements = np.unique(numbers).astype(np.int64)
    notes: list[str] = []
    e0 = {int(z): 0.0 for z in elements}
    energy_scale = force_scale = 1.0
    if len(train) == 0:
        notes.append("no training structures: E0 = 0 and unit scales")
        return {"e0": e0, "energy_scale": 1.0, "force_scale": 1.0, "notes": notes}
    comp = composition_matrix(numbers, offsets, elements, train)
    present = comp.sum(axis=0) > 0
    e_train = np.asarray(energy, dtype=np.float64)[train]
    solution, *_ = np.linalg.lstsq(comp[:, present], e_train, rcond=None)
    for z, value in zip(elements[present], solution):
        e0[int(z)] = float(value)
    for z in elements[~present]:
        notes.append(f"element Z={int(z)} absent from the training split: E0 set to 0")
    n_atoms = np.diff(offsets)[train].astype(np.float64)
    residual = (e_train - comp[:, present] @ solution) / n_atoms
    energy_scale = float(np.sqrt(np.mean(residual ** 2)))
    atom_mask = np.zeros(len(numbers), dtype=bool)
    starts, ends = offsets[train], offsets[train + 1]
    _mark_ranges(atom_mask, starts, ends)
    f_train = np.asarray(forces)[atom_mask].astype(np.float64)
    force_scale = float(np.sqrt(np.mean(f_train ** 2))) if f_train.size else 0.0
    return _normalization(e0, energy_scale, force_scale, notes)


def _normalization(e0: dict, energy_scale: float, force_scale: float, notes: list[str]) -> dict:
    """The normalisation record; a zero scale (constant labels) becomes 1.0 with a note."""
    if not energy_scale > 1e-12:
        notes.append("per-atom energy residual RMS is zero: energy_scale set to 1.0")
        energy_scale = 1.0
    if not force_scale > 1e-12:
        notes.append("force RMS is zero: force_scale set to 1.0")
        force_scale = 1.0
    return {"e0": e0, "energy_scale": energy_scale, "force_scale": force_scale, "notes": notes}


def _mark_ranges(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Set ``mask[s:e] = True`` for every range, vectorised with a difference array."""
    diff = np.zeros(len(mask) + 1, dtype=np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, ends, -1)
    mask |= np.cumsum(diff[:-1]) > 0


def atom_ranges(offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Concatenated atom indices of the structures ``indices`` (in that order), without a Python loop."""
    offsets = np.asarray(offsets, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    starts = offsets[indices]
    counts = offsets[indices + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position within each run + the run's start
    run_starts = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + run_starts


# ---------------------------------------------------------------------------------------------- streaming
#: One block of structures for :func:`fit_normalization_streaming`: atomic numbers, atoms per structure,
#: energies, forces (``None`` when not asked for) and which of the block's structures are in training.
Block = tuple[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray]


def fit_normalization_streaming(blocks: Callable[[bool], Iterable[Block]], elements: np.ndarray,
                                n_train: int) -> dict:
    """:func:`fit_normalization` over data read block by block, in memory independent of the data size.

    ``blocks(with_forces)`` iterates the dataset's structures in consecutive blocks (see :data:`Block`);
    it is called twice. Pass 1 accumulates the QR factor ``R`` of the augmented training composition matrix
    ``[C | E]`` (TSQR: ``R ← qr([R; block])``, an ``(n_el + 1)²`` matrix whatever the number of structures)
    and the sum of squared training force components. Because ``[C | E] = Q R``, the least-squares problem
    ``C · E0 ≈ E`` has the same solutions as ``R_C · E0 ≈ z`` (``z`` the last column's upper part) and the
    same singular values, so ``numpy.linalg.lstsq`` on ``R`` with the cut-off :func:`fit_normalization` uses
    (``eps · max(S_train, n_elements)``) gives the same minimum-norm ``E0``, rank-deficient cases included,
    without forming the normal equations (whose conditioning is the square of ``C``'s). Pass 2 computes the
    per-atom residuals with the fitted ``E0``. Results equal :func:`fit_normalization`'s up to rounding.

    Args:
        blocks: the block iterator factory.
        elements: sorted atomic numbers of the whole dataset (the columns; training may lack some).
        n_train: number of training structures (the ``True`` entries over all blocks).
    """
    elements = np.asarray(elements, dtype=np.int64)
    notes: list[str] = []
    e0 = {int(z): 0.0 for z in elements}
    if n_train == 0:
        notes.append("no training structures: E0 = 0 and unit scales")
        return {"e0": e0, "energy_scale": 1.0, "force_scale": 1.0, "notes": notes}
    k = len(elements)
    r = np.zeros((0, k + 1))
    present = np.zeros(k, dtype=bool)
    f_sq, f_count = 0.0, 0
    for numbers, n_atoms, energy, forces, train in blocks(True):
        if not train.any():
            continue
        comp = _block_composition(numbers, n_atoms, elements, train)
        present |= comp.sum(axis=0) > 0
        r = np.linalg.qr(np.vstack([r, np.column_stack([comp, energy[train]])]), mode="r")
        atom_mask = np.repeat(train, n_atoms)
        f = np.asarray(forces[atom_mask], dtype=np.float64)
        f_sq += float(np.sum(f * f))
        f_count += f.size
    r_c = np.zeros((k, k))
    z = np.zeros(k)
    rows = min(k, r.shape[0])
    r_c[:rows], z[:rows] = r[:rows, :k], r[:rows, k]
    cols = np.flatnonzero(present)
    rcond = np.finfo(np.float64).eps * max(n_train, len(cols))
    solution, *_ = np.linalg.lstsq(r_c[:, cols], z, rcond=rcond)
    for z_, value in zip(elements[cols], solution):
        e0[int(z_)] = float(value)
    for z_ in elements[~present]:
        notes.append(f"element Z={int(z_)} absent from the training split: E0 set to 0")
    res_sq = 0.0
    for numbers, n_atoms, energy, _, train in blocks(False):
        if not train.any():
            continue
        comp = _block_composition(numbers, n_atoms, elements, train)
        residual = (energy[train] - comp[:, cols] @ solution) / n_atoms[train].astype(np.float64)
        res_sq += float(np.sum(residual ** 2))
    energy_scale = float(np.sqrt(res_sq / n_train))
    force_scale = float(np.sqrt(f_sq / f_count)) if f_count else 0.0
    return _normalization(e0, energy_scale, force_scale, notes)


def _block_composition(numbers: np.ndarray, n_atoms: np.ndarray, elements: np.ndarray,
                       keep: np.ndarray) -> np.ndarray:
    """``(keep.sum(), n_elements)`` element counts of the kept structures of one block (one ``bincount``)."""
    k = len(elements)
    struct = np.repeat(np.arange(len(n_atoms)), n_atoms)
    counts = np.bincount(struct * k + np.searchsorted(elements, numbers), minlength=len(n_atoms) * k)
    return counts.reshape(len(n_atoms), k)[keep].astype(np.float64)
