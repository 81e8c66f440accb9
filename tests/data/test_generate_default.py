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
