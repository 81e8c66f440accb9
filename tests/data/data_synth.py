"""Synthetic labelled structures shared by the data-layer tests (ASE molecules labelled with EMT)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from symscale.data import Structure

MOLECULES = ("CH4", "H2O", "NH3", "C2H6", "CH3OH", "C2H4", "HCN", "CO2")


def emt_structures(n_conformers: int = 4, seed: int = 0, names=MOLECULES) -> list[Structure]:
    """``n_conformers`` rattled conformers of each molecule in ``names``, labelled with ASE's EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        for _ in range(n_conformers):
            atoms = molecule(name)
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.calc = EMT()
            out.append(Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces(),
                                            mol_id=name))
    return out


def periodic_structures(n: int = 3, seed: int = 1) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        out.append(Structure.from_atoms(atoms, atoms.get_potential_energy(), atoms.get_forces(), mol_id="Cu"))
    return out
