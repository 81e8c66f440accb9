"""A small real dataset for the training-engine tests: g2 molecules (H, C, N, O), rattled, EMT labels."""

from __future__ import annotations

import numpy as np
import pytest


def emt_structures(n_conformers: int = 4, seed: int = 0, max_atoms: int = 10):
    from ase.build import molecule
    from ase.calculators.emt import EMT
    from ase.collections import g2

    from symscale.data import Structure

    rng = np.random.default_rng(seed)
    out = []
    for name in sorted(g2.names):
        atoms = molecule(name)
        if len(atoms) < 3 or len(atoms) > max_atoms or not set(atoms.get_chemical_symbols()) <= {"H", "C", "N", "O"}:
            continue
        for k in range(n_conformers):
            a = atoms.copy()
            a.positions += rng.normal(scale=0.08, size=a.positions.shape)
            a.calc = EMT()
            out.append(Structure.from_atoms(a, energy=a.get_potential_energy(), forces=a.get_forces(),
                                            mol_id=name))
    return out


@pytest.fixture(scope="session")
def emt_dataset(tmp_path_factory):
    """Path of a prepared dataset (~50 molecules x 4 conformers, 20 % of molecules in val)."""
    from symscale.data.prepared import write_prepared

    out = tmp_path_factory.mktemp("emt") / "data"
    return write_prepared(emt_structures(), out, source="emt-g2", seed=0, val_fraction=0.2)


@pytest.fixture(scope="session")
def tiny_run(emt_dataset, tmp_path_factory):
    """Run directory of a tiny trained model (mpnn, width 8, 300 atoms) on ``emt_dataset``."""
    from symscale.train.run import run

    cfg = {"data": {"path": str(emt_dataset), "val_size": 16}, "batch_size": 8, "tokens": 300,
           "model": {"family": "mpnn", "width": 8, "options": {"num_layers": 1}}, "evaluation": {"points": 3},
           "name": "tiny"}
    return run(cfg, out=tmp_path_factory.mktemp("tiny") / "run")
