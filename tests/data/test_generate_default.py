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
    # Not bit for bit: the dataset was made on another machine, and the last bits depend on the CPU and
    # thread count (numpy's AVX-512 exp differs by an ulp from libm's; tblite reduces with OpenMP and calls
    # glibc's libmvec). These ~115 fs of Langevin MD barely amplify that: <= 2e-15 relative in the energy.
    # A changed seed or setting still fails: the friction changed by 1e-5 relative already moves the energies
    # by > 2e-9 relative (>> 1e-12); positions and forces only carry float32 storage rounding (< 6e-8 relative).
    for s, i in zip(res.structures, stored):
        t = ds.structure(i)
        assert s.energy == pytest.approx(t.energy, rel=1e-12, abs=0)
        np.testing.assert_allclose(s.positions, t.positions, rtol=1e-6, atol=1e-6)  # Å, stored in float32
        np.testing.assert_allclose(s.forces, t.forces, rtol=1e-6, atol=1e-6)  # eV/Å, stored in float32
