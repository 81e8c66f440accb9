"""The prepared format: round trip, memory mapping, metadata, atomic writes, splits and E0 fits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_synth import periodic_structures

from symscale.data import PreparedDataset, Structure, open_dataset, write_prepared
from symscale.data.splits import make_splits
from symscale.data.stats import atom_ranges, composition_matrix, fit_normalization
from symscale.errors import ConfigError, DataError


def test_round_trip_and_memory_mapping(prepared, structures):
    ds = PreparedDataset(prepared)
    assert len(ds) == len(structures)
    assert isinstance(ds.positions, np.memmap) and isinstance(ds.energy, np.memmap)
    assert ds.numbers.dtype == np.int8 and ds.positions.dtype == np.float32 and ds.energy.dtype == np.float64
    np.testing.assert_array_equal(ds.n_atoms, [s.n_atoms for s in structures])
    for i, s in enumerate(structures):
        t = ds.structure(i)
        np.testing.assert_array_equal(t.numbers, s.numbers)
        np.testing.assert_allclose(t.positions, s.positions, atol=1e-5)
        np.testing.assert_allclose(t.forces, s.forces, atol=1e-5)
        assert t.energy == s.energy  # float64, exact
        assert t.mol_id == s.mol_id and t.cell is None


def test_metadata_contents(prepared, structures):
    meta = json.loads((prepared / "metadata.json").read_text())
    assert meta["format"] == "symscale-prepared" and meta["format_version"] == 1
    assert meta["source"] == "emt" and meta["units"]["energy"] == "eV"
    assert meta["counts"]["structures"] == len(structures)
    assert meta["counts"]["atoms"] == sum(s.n_atoms for s in structures)
    assert meta["counts"]["molecules"] == 8
    assert meta["elements"] == [1, 6, 7, 8]
    assert set(meta["normalization"]["e0"]) == {"1", "6", "7", "8"}
    sp = meta["splits"]
    assert sp["seed"] == 3 and sp["method"] == "by_molecule"
    assert sp["train"]["count"] + sp["val"]["count"] + sp["test"]["count"] == len(structures)
    assert not any(p.name.startswith(".") for p in prepared.parent.iterdir())  # no temp dir left


def test_molecule_split_keeps_validation_molecules_unseen(prepared):
    ds = PreparedDataset(prepared)
    train, val = ds.split("train"), ds.split("val")
    assert len(val) > 0 and len(np.intersect1d(train, val)) == 0
    train_mols = {ds.structure(i).mol_id for i in train}
    val_mols = {ds.structure(i).mol_id for i in val}
    assert train_mols.isdisjoint(val_mols)
    assert len(val) == 8  # 25 % of 32 structures = two molecules of four conformers
    with pytest.raises(DataError, match="no split 'holdout'"):
        ds.split("holdout")


def test_splits_are_seeded_and_fall_back_to_random():
    mol = np.repeat(np.arange(20), 5)
    a, method = make_splits(100, mol, val_fraction=0.2, test_fraction=0.1, seed=1)
    b, _ = make_splits(100, mol, val_fraction=0.2, test_fraction=0.1, seed=1)
    c, _ = make_splits(100, mol, val_fraction=0.2, test_fraction=0.1, seed=2)
    assert method == "by_molecule"
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["val"], c["val"])
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 20, 10)
    assert set(mol[a["val"]]).isdisjoint(mol[a["train"]]) and set(mol[a["test"]]).isdisjoint(mol[a["train"]])
    one, method = make_splits(50, np.zeros(50, dtype=int), val_fraction=0.2, seed=0)  # one molecule (rMD17)
    assert method == "random" and len(one["val"]) == 10 and len(one["train"]) == 40
    with pytest.raises(ConfigError, match="val_fraction"):
        make_splits(10, None, val_fraction=1.5)


def test_e0_fit_recovers_known_references():
    rng = np.random.default_rng(0)
    e0 = {1: -13.6, 6: -1029.5, 8: -2041.3, 9: -2700.0}
    structures = []
    for k in range(60):
        n = int(rng.integers(2, 12))
        z = rng.choice([1, 6, 8], size=n)
        energy = sum(e0[int(x)] for x in z) + rng.normal(scale=0.02) * n
        structures.append(Structure(z, rng.uniform(0, 20, (n, 3)), energy, rng.normal(scale=0.5, size=(n, 3))))
    numbers = np.concatenate([s.numbers for s in structures])
    offsets = np.concatenate([[0], np.cumsum([s.n_atoms for s in structures])])
    energy = np.array([s.energy for s in structures])
    forces = np.concatenate([s.forces for s in structures])
    # fluorine appears only outside the training split
    numbers = numbers.copy()
    numbers[offsets[-2]] = 9
    norm = fit_normalization(numbers, offsets, energy, forces, np.arange(59))
    for z in (1, 6, 8):
        assert norm["e0"][z] == pytest.approx(e0[z], abs=0.05)
    assert norm["e0"][9] == 0.0 and any("Z=9" in n for n in norm["notes"])
    assert norm["energy_scale"] == pytest.approx(0.02, rel=0.35)
    assert norm["force_scale"] == pytest.approx(0.5, rel=0.1)


def test_composition_and_atom_ranges_are_vectorised_correctly():
    numbers = np.array([1, 1, 8, 6, 1, 1, 1, 1, 8])
    offsets = np.array([0, 3, 8, 9])
    comp = composition_matrix(numbers, offsets, np.array([1, 6, 8]), np.array([2, 0]))
    np.testing.assert_array_equal(comp, [[0, 0, 1], [2, 0, 1]])
    np.testing.assert_array_equal(atom_ranges(offsets, np.array([2, 0, 1])), [8, 0, 1, 2, 3, 4, 5, 6, 7])


def test_periodic_structures_store_cells(tmp_path):
    structs = periodic_structures()
    ds = PreparedDataset(write_prepared(structs, tmp_path / "cu", source="cu", val_fraction=0.0))
    assert ds.metadata["periodic"] and ds.cell is not None
    np.testing.assert_allclose(ds.structure(1).cell, structs[1].cell)
    assert ds.structure(1).pbc.all()


def test_failed_write_leaves_nothing(tmp_path, structures):
    bad = list(structures[:5]) + [Structure([1, 1], [[0, 0, 0], [0, 0, 0.05]], 1.0, np.zeros((2, 3)))]
    target = tmp_path / "sub" / "out"
    with pytest.raises(DataError, match=r"src.xyz: structure 5: atom 0 overlaps atom 1"):
        write_prepared(bad, target, source="src.xyz")
    assert not (tmp_path / "sub").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="no structures"):
        write_prepared([], tmp_path / "empty", source="nothing")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_unless_overwrite(tmp_path, structures):
    out = write_prepared(structures[:8], tmp_path / "ds", source="a")
    with pytest.raises(DataError, match="already exists"):
        write_prepared(structures[:8], out, source="b")
    write_prepared(structures, out, source="b", overwrite=True)
    assert PreparedDataset(out).metadata["source"] == "b" and len(PreparedDataset(out)) == len(structures)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_open_dataset_prepares_raw_sources(tmp_path, structures, monkeypatch):
    import ase.io

    path = tmp_path / "raw.xyz"
    ase.io.write(path, [s.to_atoms() for s in structures], format="extxyz")
    ds = open_dataset(path, val_fraction=0.25, seed=3)
    assert len(ds) == len(structures) and ds.metadata["source"] == str(path)
    tmp = ds.path
    assert tmp.exists()
    del ds
    import gc

    gc.collect()
    assert not tmp.exists()  # the temporary preparation is removed with the dataset
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "missing.xyz")
    import symscale.data.prepared as prepared_mod

    monkeypatch.setattr(prepared_mod, "default_dataset_path", lambda: tmp_path / "no-default")
    with pytest.raises(DataError, match="embedded default dataset is missing"):
        open_dataset(None)


def test_corrupted_prepared_directory(tmp_path, structures):
    out = write_prepared(structures[:8], tmp_path / "ds", source="a")
    os.remove(out / "forces.npy")
    with pytest.raises(DataError, match="missing forces.npy"):
        PreparedDataset(out)
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset(tmp_path)


@pytest.mark.slow
def test_default_sized_dataset_fits_in_5_mb(tmp_path):
    rng = np.random.default_rng(0)
    structs = []
    for k in range(4000):  # ~4,000 molecules of 3-30 atoms, as the embedded default dataset
        n = int(rng.integers(3, 31))
        pos = np.stack(np.meshgrid(*[np.arange(4)] * 3), -1).reshape(-1, 3)[:n] * 1.5 + rng.normal(0, .05, (n, 3))
        structs.append(Structure(rng.choice([1, 6, 7, 8], n), pos, float(rng.normal()), rng.normal(size=(n, 3)),
                                 mol_id=f"m{k // 4}"))
    out = write_prepared(structs, tmp_path / "ds", source="synthetic")
    size = sum(f.stat().st_size for f in out.iterdir())
    assert size < 5 * 2**20


def test_periodic_validation_errors():
    from symscale.data.validate import validate_structure

    flat = Structure([29], [[0, 0, 0]], 1.0, np.zeros((1, 3)), cell=np.zeros((3, 3)), pbc=[True] * 3)
    with pytest.raises(DataError, match=r"cu.xyz: structure 2: periodic structure with a degenerate"):
        validate_structure(flat, 2, "cu.xyz")
    tiny = Structure([29], [[0, 0, 0]], 1.0, np.zeros((1, 3)), cell=np.eye(3) * 0.05, pbc=[True] * 3)
    with pytest.raises(DataError, match="atom 0 overlaps its periodic image"):
        validate_structure(tiny, 0, "cu.xyz")
    ok = Structure([29], [[0, 0, 0]], 1.0, np.zeros((1, 3)), cell=np.eye(3) * 2.5, pbc=[True] * 3)
    validate_structure(ok, 0, "cu.xyz")
    unlabelled = Structure([1, 1], [[0, 0, 0], [0, 0, 0.74]])
    validate_structure(unlabelled, 0, "h2.xyz", require_labels=False)
    with pytest.raises(DataError, match="h2.xyz: structure 0: missing energy"):
        validate_structure(unlabelled, 0, "h2.xyz")
