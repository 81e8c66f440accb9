"""The embedded default dataset: present, small, diverse, and really GFN2-xTB labelled."""

from __future__ import annotations

import numpy as np
import pytest

from symscale.data import default_dataset_path, open_dataset
from symscale.data.generate import XTBLabeller

ALLOWED = {1, 6, 7, 8, 9, 16, 17}


@pytest.fixture(scope="module")
def ds():
    return open_dataset(None)


def test_default_dataset_shape_and_size(ds):
    path = default_dataset_path()
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size <= 5 * 1024 * 1024
    assert 3500 <= len(ds) <= 6000
    assert len(set(ds.mol_ids)) >= 50
    assert set(int(z) for z in np.unique(ds.numbers)) == ALLOWED  # every element of the list appears
    info = ds.metadata["reader_options"]["generator"]
    assert len(info["structure_temperatures_K"]) >= 3
    assert info["singlepoints"] > len(ds)
    assert len(ds.split("train")) + len(ds.split("val")) == len(ds)
    train_mols = {ds.mol_ids[int(ds.mol_index[i])] for i in ds.split("train")}
    val_mols = {ds.mol_ids[int(ds.mol_index[i])] for i in ds.split("val")}
    assert train_mols and val_mols and not train_mols & val_mols  # split by molecule


def test_default_dataset_readme_gives_the_command(ds):
    readme = (default_dataset_path() / "README.md").read_text()
    recorded = ds.metadata["command"].split(" ", 1)[1]  # the options the dataset was made with
    assert recorded in readme


def test_default_dataset_labels_are_gfn2_xtb(ds):
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ds), size=4, replace=False):
        s = ds.structure(int(i))
        energy, forces = XTBLabeller(s.numbers, s.positions, reuse_wavefunction=False)(s.positions)
        assert abs(energy - s.energy) < 1e-3
        np.testing.assert_allclose(s.forces, forces, atol=2e-3, rtol=0)


def test_default_dataset_is_reproducible_from_its_metadata(ds):
    """Re-running the sampler for the smallest molecule with the recorded settings gives the stored arrays."""
    from symscale.data.generate import SamplingSettings, load_smiles, sample_molecule

    info = ds.metadata["reader_options"]["generator"]
    settings = info["settings"]
    settings = SamplingSettings(**{**settings, "temperatures": tuple(settings["temperatures"])})
    by_name = {m.name: m for m in load_smiles()}
    sizes = {name: int(ds.n_atoms[int(np.argmax(np.asarray(ds.mol_index) == k))])
             for k, name in enumerate(ds.mol_ids)}
    name = min(info["molecules"], key=lambda n: (sizes[n], n))
    res = sample_molecule(by_name[name], settings, seed=info["seed"])
    stored = [i for i in range(len(ds)) if ds.mol_ids[int(ds.mol_index[i])] == name]
    assert len(res.structures) == len(stored) == settings.structures_per_molecule
    for s, i in zip(res.structures, stored):
        t = ds.structure(i)
        assert s.energy == t.energy
        np.testing.assert_array_equal(s.positions.astype(np.float32), t.positions.astype(np.float32))
        np.testing.assert_array_equal(s.forces.astype(np.float32), t.forces.astype(np.float32))
