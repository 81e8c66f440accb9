"""Round trips through every reader: write with ASE / numpy, read back with read_structures, compare."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase import units
from data_synth import periodic_structures

from symscale.data import read_structures, write_prepared
from symscale.errors import ConfigError, DataError


def _same(a, b, atol=1e-6):
    assert np.array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)
    assert a.energy == pytest.approx(b.energy, abs=1e-9)
    np.testing.assert_allclose(a.forces, b.forces, atol=atol)


def test_extxyz_calculator_labels_round_trip(tmp_path, structures):
    path = tmp_path / "a.extxyz"
    ase.io.write(path, [s.to_atoms() for s in structures], format="extxyz")
    back = list(read_structures(path))
    assert len(back) == len(structures)
    for a, b in zip(structures, back):
        _same(a, b)
        assert b.mol_id == a.mol_id


def test_extxyz_ref_keys_detected_and_custom_keys(tmp_path, structures):
    frames = []
    for s in structures[:5]:
        atoms = s.to_atoms()
        atoms.calc = None
        atoms.info["REF_energy"] = s.energy
        atoms.arrays["REF_forces"] = s.forces
        atoms.info["my_e"] = s.energy + 1.0
        atoms.arrays["my_f"] = 2 * s.forces
        frames.append(atoms)
    path = tmp_path / "ref.xyz"
    ase.io.write(path, frames, format="extxyz")
    for a, b in zip(structures, read_structures(path)):
        _same(a, b)
    custom = list(read_structures(path, energy_key="my_e", forces_key="my_f"))
    assert custom[0].energy == pytest.approx(structures[0].energy + 1.0)
    np.testing.assert_allclose(custom[0].forces, 2 * structures[0].forces, atol=1e-6)
    with pytest.raises(DataError, match=r"ref.xyz: structure 0: no energy under key 'nope'"):
        list(read_structures(path, energy_key="nope"))


def test_periodic_extxyz_keeps_cell(tmp_path):
    structs = periodic_structures()
    path = tmp_path / "cu.xyz"
    ase.io.write(path, [s.to_atoms() for s in structs], format="extxyz")
    back = list(read_structures(path))
    for a, b in zip(structs, back):
        _same(a, b)
        np.testing.assert_allclose(a.cell, b.cell)
        assert b.pbc.all()


def test_formula_is_the_fallback_identity(tmp_path, structures):
    atoms = structures[0].to_atoms()
    del atoms.info["mol_id"]
    path = tmp_path / "noid.xyz"
    ase.io.write(path, atoms, format="extxyz")
    assert next(iter(read_structures(path))).mol_id == "CH4"


@pytest.mark.parametrize("suffix", [".db", ".aselmdb"])
def test_ase_databases_round_trip(tmp_path, structures, suffix):
    path = tmp_path / f"set{suffix}"
    db = ase.db.connect(str(path))
    for k, s in enumerate(structures):
        atoms = s.to_atoms()
        atoms.info.pop("mol_id")
        if k % 2:  # labels in data under REF keys, identity under another recognised key
            atoms.calc = None
            db.write(atoms, smiles=s.mol_id, data={"REF_energy": s.energy, "REF_forces": s.forces})
        else:
            db.write(atoms, mol_id=s.mol_id)
    if hasattr(db, "close"):
        db.close()
    del db
    back = list(read_structures(path))
    assert len(back) == len(structures)
    for a, b in zip(structures, back):
        _same(a, b)
        assert b.mol_id == a.mol_id
    # a second reader (after the first closed its environment) sees the same data
    assert len(list(read_structures(path))) == len(structures)


def test_npz_kcal_per_mol_converted(tmp_path, structures):
    same = [s for s in structures if s.mol_id == "CH3OH"]
    kcal = units.kcal / units.mol
    path = tmp_path / "rmd17_methanol.npz"
    np.savez(path, nuclear_charges=same[0].numbers, coords=np.stack([s.positions for s in same]),
             energies=np.array([s.energy for s in same]) / kcal, forces=np.stack([s.forces for s in same]) / kcal)
    back = list(read_structures(path, units="kcal/mol"))
    for a, b in zip(same, back):
        _same(a, b)
        assert b.mol_id == "rmd17_methanol"
    raw = list(read_structures(path))  # default eV: no conversion
    assert raw[0].energy == pytest.approx(same[0].energy / kcal)
    with pytest.raises(ConfigError, match="units"):
        read_structures(path, units="hartree")


def test_npz_shape_mismatch(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, nuclear_charges=[1, 1], coords=np.zeros((2, 2, 3)), energies=np.zeros(2),
             forces=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"bad.npz: forces have shape \(2, 3, 3\), expected \(2, 2, 3\)"):
        list(read_structures(path))


def test_directory_and_prepared_sources(tmp_path, structures):
    d = tmp_path / "many"
    d.mkdir()
    ase.io.write(d / "a.xyz", [s.to_atoms() for s in structures[:3]], format="extxyz")
    ase.io.write(d / "b.extxyz", [s.to_atoms() for s in structures[3:7]], format="extxyz")
    back = list(read_structures(d))
    assert len(back) == 7
    for a, b in zip(structures[:7], back):
        _same(a, b)
    prepared = write_prepared(structures, tmp_path / "prep", source="emt")
    again = list(read_structures(prepared))
    for a, b in zip(structures, again):
        _same(a, b, atol=2e-5)  # float32 storage
        assert b.mol_id == a.mol_id


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported format"):
        read_structures(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        read_structures(tmp_path / "nothing.xyz")


def test_batch_from_atoms_finds_labels_like_the_readers():
    """Batch.from_atoms uses the readers' key detection: REF_ keys are found, unlabelled atoms stay
    unlabelled, and an explicitly named key that is missing is an error naming it."""
    from ase.build import molecule

    from symscale.data import Batch
    from symscale.errors import DataError

    a = molecule("H2O")
    a.info["REF_energy"] = -12.5
    a.arrays["REF_forces"] = np.ones((3, 3))
    b = Batch.from_atoms([a], cutoff=3.0)
    assert float(b.energy[0]) == -12.5 and float(b.forces.sum()) == 9.0
    assert Batch.from_atoms([molecule("CH4")], cutoff=3.0).energy is None
    with pytest.raises(DataError, match="dft_e"):
        Batch.from_atoms([a], cutoff=3.0, energy_key="dft_e")
