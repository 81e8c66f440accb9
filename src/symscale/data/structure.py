"""One labelled atomic structure, the unit every reader yields and the prepared format stores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Structure:
    """A labelled structure in eV / Å.

    Attributes:
        numbers: atomic numbers, shape ``(n,)``, int.
        positions: Cartesian positions in Å, shape ``(n, 3)``.
        energy: total energy in eV (``None`` when unlabelled).
        forces: forces in eV/Å, shape ``(n, 3)`` (``None`` when unlabelled).
        cell: lattice vectors as rows in Å, shape ``(3, 3)``, or ``None`` for a molecule.
        pbc: periodic flags, shape ``(3,)``.
        mol_id: identity of the molecule this is a conformer of (used for splits), or ``None``.
        charge: total charge in units of e (OMol25's ``charge``), or ``None`` when the source gives none.
        spin: spin multiplicity 2S+1 (OMol25's ``spin``: 1 = singlet), or ``None``.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    cell: np.ndarray | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    mol_id: str | None = None
    charge: int | None = None
    spin: int | None = None

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(3)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def to_atoms(self):
        """The structure as an :class:`ase.Atoms` with a single-point calculator holding its labels."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions,
                      cell=self.cell if self.cell is not None else np.zeros((3, 3)), pbc=self.pbc)
        if self.mol_id is not None:
            atoms.info["mol_id"] = self.mol_id
        for key in ("charge", "spin"):  # where fairchem's loaders put them
            if getattr(self, key) is not None:
                atoms.info[key] = getattr(self, key)
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces)
        return atoms

    @classmethod
    def from_atoms(cls, atoms, energy: float | None = None, forces: np.ndarray | None = None,
                   mol_id: str | None = None, charge: int | None = None, spin: int | None = None) -> "Structure":
        """Build from :class:`ase.Atoms`; labels, charge and spin are taken from the arguments (readers
        resolve keys)."""
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        has_cell = bool(np.any(atoms.pbc)) or bool(np.abs(cell).sum() > 0 and np.any(atoms.pbc))
        return cls(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), energy=energy,
                   forces=forces, cell=cell if has_cell else None, pbc=atoms.pbc.copy(),
                   mol_id=mol_id if mol_id is not None else atoms.info.get("mol_id"), charge=charge, spin=spin)
