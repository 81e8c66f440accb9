"""The streaming writer gives what the in-memory writer gave: the same arrays (byte for byte), splits,
molecule identities and normalisation (to rounding), whatever the block sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_synth import emt_structures, periodic_structures

import symscale.data.merge as merge_mod
import symscale.data.parts as parts_mod
from symscale.data import PreparedDataset, Structure, write_prepared
from symscale.data.splits import make_splits, mol_labels
from symscale.data.stats import fit_normalization


def reference(structures, seed=0, val_fraction=0.1, test_fraction=0.0):
    """The writer before it streamed: everything in lists, then arrays, splits and one least-squares fit."""
    numbers, positions, forces, energy, counts, mol_ids, cells, pbcs = [], [], [], [], [], [], [], []
    for s in structures:
        numbers.append(s.numbers)
        positions.append(s.positions)
        forces.append(s.forces)
        energy.append(float(s.energy))
        counts.append(s.n_atoms)
        mol_ids.append(s.mol_id)
        cells.append(s.cell if s.cell is not None else np.zeros((3, 3)))
        pbcs.append(s.pbc if s.cell is not None else np.zeros(3, dtype=bool))
    arrays = {"numbers": np.concatenate(numbers).astype(np.int8),
              "positions": np.concatenate(positions).astype(np.float32),
              "forces": np.concatenate(forces).astype(np.float32),
              "energy": np.asarray(energy, dtype=np.float64),
              "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)}
    mol_index, names = mol_labels(mol_ids)
    arrays["mol_index"] = mol_index.astype(np.int32)
    if np.any(pbcs):
        arrays["cell"] = np.asarray(cells, dtype=np.float64)
        arrays["pbc"] = np.asarray(pbcs, dtype=bool)
    has_ids = any(m is not None for m in mol_ids)
    splits, method = make_splits(len(counts), mol_index if has_ids else None, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
    norm = fit_normalization(arrays["numbers"], arrays["offsets"], arrays["energy"], arrays["forces"],
                             splits["train"])
    molecules = len({m for m in mol_ids if m is not None})
    return arrays, splits, method, names, norm, molecules


def assert_same_as_reference(out, structures, **split):
    arrays, splits, method, names, norm, molecules = reference(structures, **split)
    meta = json.loads((out / "metadata.json").read_text())
    for name, arr in arrays.items():
        stored = np.load(out / f"{name}.npy")
        assert stored.dtype == arr.dtype and np.array_equal(stored, arr), name
        ref_bytes = out.parent / f"ref-{name}.npy"
        np.save(ref_bytes, arr)
        assert (out / f"{name}.npy").read_bytes() == ref_bytes.read_bytes(), name  # what numpy.save writes
        assert meta["dtypes"][name] == str(arr.dtype)
    assert ("cell" in arrays) == (out / "cell.npy").exists()
    for name, idx in splits.items():
        assert np.array_equal(np.load(out / f"split_{name}.npy"), idx), name
    assert meta["splits"]["method"] == method
    assert json.loads((out / "mol_ids.json").read_text()) == names
    assert meta["counts"]["molecules"] == molecules
    stored = meta["normalization"]
    assert stored["notes"] == norm["notes"]
    assert stored["energy_scale"] == pytest.approx(norm["energy_scale"], rel=1e-9)
    assert stored["force_scale"] == pytest.approx(norm["force_scale"], rel=1e-9)
    for z, value in norm["e0"].items():
        assert stored["e0"][str(z)] == pytest.approx(value, rel=1e-9, abs=1e-9)


def with_missing_identities(structures):
    """Every third structure without identity (each then forms a molecule of its own)."""
    return [Structure(s.numbers, s.positions, s.energy, s.forces, s.cell, s.pbc, None if k % 3 == 0 else s.mol_id)
            for k, s in enumerate(structures)]


@pytest.mark.parametrize("case", ["molecules", "missing ids", "periodic", "one molecule"])
def test_streamed_writer_equals_the_in_memory_reference(tmp_path, case):
    structures = {"molecules": emt_structures(),
                  "missing ids": with_missing_identities(emt_structures(seed=1)),
                  "periodic": emt_structures(2, seed=2) + periodic_structures(4),
                  "one molecule": emt_structures(12, names=("CH3OH",))}[case]
    split = {"seed": 5, "val_fraction": 0.2, "test_fraction": 0.1}
    out = write_prepared(structures, tmp_path / "ds", source="emt", **split)
    assert_same_as_reference(out, structures, **split)


def test_tiny_blocks_give_the_same_dataset(tmp_path, monkeypatch):
    """Blocks of a few atoms everywhere (part buffers, byte copies, normalisation passes): the same content
    fingerprint as the default block sizes, so nothing depends on a block holding everything."""
    structures = with_missing_identities(emt_structures(3, seed=4)) + periodic_structures(3)
    default = PreparedDataset(write_prepared(structures, tmp_path / "default", source="emt", seed=2))
    monkeypatch.setattr(parts_mod, "BLOCK_ATOMS", 7)
    monkeypatch.setattr(merge_mod, "BLOCK_ATOMS", 5)
    monkeypatch.setattr(merge_mod, "BLOCK_STRUCTURES", 3)
    monkeypatch.setattr(merge_mod, "COPY_BYTES", 13)
    tiny = PreparedDataset(write_prepared(structures, tmp_path / "tiny", source="emt", seed=2))
    assert tiny.fingerprint == default.fingerprint
    assert tiny.normalization["energy_scale"] == pytest.approx(default.normalization["energy_scale"], rel=1e-9)
    for z, v in default.normalization["e0"].items():
        assert tiny.normalization["e0"][z] == pytest.approx(v, rel=1e-9, abs=1e-9)


def test_write_prepared_consumes_a_generator_once(tmp_path):
    structures = emt_structures(2)
    consumed = []

    def gen():
        for s in structures:
            consumed.append(1)
            yield s

    out = write_prepared(gen(), tmp_path / "ds", source="gen")
    assert len(consumed) == len(structures) and len(PreparedDataset(out)) == len(structures)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no working directory left


def test_charge_and_spin_are_stored_when_every_structure_has_them(tmp_path):
    structures = emt_structures(2)
    for k, s in enumerate(structures):
        s.charge, s.spin = k % 3 - 1, 1 + k % 2
    ds = PreparedDataset(write_prepared(structures, tmp_path / "ds", source="emt"))
    assert ds.charge.dtype == np.int32 and list(ds.charge) == [k % 3 - 1 for k in range(len(structures))]
    assert list(ds.spin) == [1 + k % 2 for k in range(len(structures))]
    assert ds.structure(4).charge == 0 and ds.structure(4).spin == 1
    assert ds.metadata["dtypes"]["charge"] == "int32"
    plain = PreparedDataset(write_prepared(emt_structures(2), tmp_path / "plain", source="emt"))
    assert plain.charge is None and plain.spin is None and plain.structure(0).charge is None
