"""OMol25-shaped synthetic data: directories of ``.aselmdb`` shards written with ase-db-backends.

Each row is what fairchem ships: atoms with a single-point calculator holding ``energy`` (eV) and
``forces`` (eV/Å), and a ``data`` dictionary with ``charge``, ``spin`` (multiplicity, consistent with the
electron count's parity), ``data_id`` (the OMol25 domain) and ``source`` (a distinct identifier per
structure). A ``metadata.npz`` beside the shards holds ``natoms``, the atom counts concatenated in sorted
shard order. Structure ``i`` depends on ``(seed, i)`` only, so shards can be written in any order or in
parallel processes (the 1M-structure benchmark does).

Geometries are jittered grid points 1.5 Å apart (never overlapping); labels are a per-element reference
energy plus noise and random forces, so preparing them exercises everything but chemistry.

API::

    write_omol_dir(directory, n_structures, n_shards=4, seed=0, metadata=True) -> OmolSet
    write_omol_shard(path, start, count, seed=0, drop_forces=(), record=None) -> list[int]   # atom counts
    omol_row(i, seed=0) -> (Atoms with calculator, data dict)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

DATA_IDS = ("elytes", "biomolecules", "metal_complexes", "reactivity")
E0 = {1: -13.6, 6: -1029.5, 7: -1485.0, 8: -2041.3, 16: -10830.0, 17: -12520.0}
_GRID = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5


def omol_row(i: int, seed: int = 0) -> tuple[Atoms, dict]:
    """Structure ``i``: 3–24 atoms of H, C, N, O (and in one in ten a S or Cl), labels, and its data."""
    rng = np.random.default_rng([seed, i])
    n = int(rng.integers(3, 25))
    numbers = rng.choice([1, 6, 7, 8], size=n, p=[0.5, 0.25, 0.1, 0.15])
    if rng.random() < 0.1:
        numbers[0] = rng.choice([16, 17])
    positions = _GRID[rng.permutation(len(_GRID))[:n]] + rng.normal(0.0, 0.05, (n, 3))
    charge = int(rng.choice([-1, 0, 1], p=[0.2, 0.6, 0.2]))
    electrons = int(numbers.sum()) - charge
    spin = 2 if electrons % 2 else int(rng.choice([1, 3], p=[0.8, 0.2]))
    energy = sum(E0[int(z)] for z in numbers) + 0.7 * charge + rng.normal(0.0, 0.05) * n
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=rng.normal(0.0, 0.5, (n, 3)))
    data_id = DATA_IDS[int(rng.integers(len(DATA_IDS)))]
    return atoms, {"charge": charge, "spin": spin, "data_id": data_id, "source": f"synthetic/{data_id}/{seed}/{i:09d}"}


def write_omol_shard(path: str | Path, start: int, count: int, seed: int = 0, drop_forces: tuple[int, ...] = (),
                     record: list | None = None) -> list[int]:
    """Write structures ``start .. start+count-1`` into a new ``.aselmdb`` file (one transaction); a structure
    whose index is in ``drop_forces`` is written with its energy only. Returns the atom counts; each row's
    data dictionary is appended to ``record`` when given."""
    import ase.db

    natoms = []
    db = ase.db.connect(str(path), type="aselmdb", use_lock_file=False)
    with db:
        for i in range(start, start + count):
            atoms, data = omol_row(i, seed)
            if i in drop_forces:
                atoms.calc = SinglePointCalculator(atoms, energy=atoms.calc.results["energy"])
            db.write(atoms, data=data)
            natoms.append(len(atoms))
            if record is not None:
                record.append(data)
    return natoms


@dataclass
class OmolSet:
    """What :func:`write_omol_dir` wrote: the directory, the shard files, and per structure (in shard order)
    the atom count, charge, spin and data_id."""

    directory: Path
    shards: list[Path]
    natoms: np.ndarray
    charge: np.ndarray
    spin: np.ndarray
    data_id: list[str]

    def mask(self, charge: int | None = None, spin: int | None = None) -> np.ndarray:
        keep = np.ones(len(self.natoms), dtype=bool)
        if charge is not None:
            keep &= self.charge == charge
        if spin is not None:
            keep &= self.spin == spin
        return keep


def write_omol_dir(directory: str | Path, n_structures: int, n_shards: int = 4, seed: int = 0,
                   metadata: bool = True, drop_forces: tuple[int, ...] = ()) -> OmolSet:
    """``n_structures`` structures in ``n_shards`` shards ``data.NNNN.aselmdb`` (sizes differ by at most one)
    plus ``metadata.npz`` (``natoms``) when ``metadata``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_structures, n_shards + 1).round().astype(int)
    shards, natoms, rows = [], [], []
    for k in range(n_shards):
        path = d / f"data.{k:04d}.aselmdb"
        natoms += write_omol_shard(path, int(bounds[k]), int(bounds[k + 1] - bounds[k]), seed, drop_forces, rows)
        shards.append(path)
    if metadata:
        np.savez(d / "metadata.npz", natoms=np.asarray(natoms, dtype=np.int64))
    return OmolSet(d, shards, np.asarray(natoms), np.array([r["charge"] for r in rows]),
                   np.array([r["spin"] for r in rows]), [r["data_id"] for r in rows])
