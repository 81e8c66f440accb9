"""symscale.data.generate: the SMILES list, xTB labels against finite differences, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from symscale.data import PreparedDataset
from symscale.data.generate import (SCFError, XTBLabeller, generate, generate_structures, load_smiles,
                                    min_distance, sample_molecule, select_molecules)
from symscale.data.generate import sampling as sampling_mod
from symscale.data.generate.__main__ import main as generate_main
from symscale.data.generate.molecules import ALLOWED_ELEMENTS, Molecule, default_smiles_path
from symscale.data.generate.sampling import SamplingSettings
from symscale.errors import ConfigError, DataError

TINY = dict(structures_per_molecule=4, temperatures=(300.0, 1000.0), stride=4, equilibration_steps=8)


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("smi") / "tiny.smi"
    path.write_text("# two small molecules\nCCO\tethanol\nCCl\tchloromethane\n")
    return path


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, smiles_file):
    out = tmp_path_factory.mktemp("gen") / "ds"
    return PreparedDataset(generate(out, n_molecules=2, workers=1, seed=7, smiles_file=smiles_file, **TINY))


def test_shipped_smiles_list_is_valid():
    from rdkit import Chem

    molecules = load_smiles()
    assert len(molecules) >= 150
    canonical = set()
    for m in molecules:
        mol = Chem.MolFromSmiles(m.smiles)
        assert mol is not None, m.name
        mol = Chem.AddHs(mol)
        assert Chem.GetFormalCharge(mol) == 0, m.name
        assert sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms()) == 0, m.name
        assert sum(a.GetAtomicNum() for a in mol.GetAtoms()) % 2 == 0, m.name  # closed shell
        symbols = {a.GetSymbol() for a in mol.GetAtoms()}
        assert symbols <= ALLOWED_ELEMENTS and "C" in symbols, m.name
        assert 3 <= mol.GetNumAtoms() <= 30, m.name
        canonical.add(Chem.MolToSmiles(Chem.RemoveHs(mol)))
    assert len(canonical) == len(molecules)  # distinct molecules
    assert len({m.name for m in molecules}) == len(molecules)
    assert default_smiles_path().is_file()


def test_bad_smiles_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.smi"
    bad.write_text("CCO\tethanol\nC1CC\tbroken\n")
    with pytest.raises(DataError, match=r"bad\.smi:2: RDKit cannot parse"):
        load_smiles(bad)
    charged = tmp_path / "ion.smi"
    charged.write_text("C[NH3+]\tmethylammonium\n")
    with pytest.raises(DataError, match=r"ion\.smi:1: .*neutral closed-shell"):
        load_smiles(charged)
    dup = tmp_path / "dup.smi"
    dup.write_text("CCO\tx\nCO\tx\n")
    with pytest.raises(DataError, match=r"dup\.smi:2: duplicate"):
        load_smiles(dup)


def test_selection():
    mols = [Molecule("C" * (i + 1), f"m{i}") for i in range(10)]
    assert [m.name for m in select_molecules(mols, 3, "first")] == ["m0", "m1", "m2"]
    assert [m.name for m in select_molecules(mols, 3, "spread")] == ["m0", "m4", "m9"]
    with pytest.raises(ConfigError, match="selection"):
        select_molecules(mols, 3, "random")


def test_labeller_units_match_ase_conversion():
    # H2 at 0.74 Å: E in eV = E(Hartree) * 27.211..., force along the bond, equal and opposite.
    from ase.units import Hartree

    lab = XTBLabeller([1, 1], [[0, 0, 0], [0, 0, 0.74]])
    energy, forces = lab(np.array([[0, 0, 0], [0, 0, 0.74]]))
    assert -1.2 * Hartree < energy < -0.8 * Hartree
    np.testing.assert_allclose(forces[0], -forces[1], atol=1e-8)
    assert np.allclose(forces[:, :2], 0.0, atol=1e-8)
    assert min_distance(np.array([[0, 0, 0], [0, 0, 0.74], [0, 1, 0]])) == pytest.approx(0.74)


def test_tiny_generate_forces_equal_finite_differences(tiny_dataset):
    ds = tiny_dataset
    assert len(ds) == 8 and sorted(set(ds.mol_ids)) == ["chloromethane", "ethanol"]
    info = ds.metadata["reader_options"]["generator"]
    assert info["structure_temperatures_K"] == {"300": 4, "1000": 4}
    assert info["singlepoints"] >= 8 * TINY["stride"]
    h = 1e-3  # Å, central differences of a tightly converged SCF (accuracy 0.01)
    for index in (0, len(ds) - 1):  # one structure of each molecule
        s = ds.structure(index)
        lab = XTBLabeller(s.numbers, s.positions, accuracy=0.01, reuse_wavefunction=False)
        energy, _ = lab(s.positions)
        assert abs(energy - s.energy) < 1e-4  # eV
        fd = np.zeros_like(s.positions)
        for i in range(s.n_atoms):
            for k in range(3):
                x = s.positions.copy()
                x[i, k] += h
                e_plus, _ = lab(x)
                x[i, k] -= 2 * h
                e_minus, _ = lab(x)
                fd[i, k] = -(e_plus - e_minus) / (2 * h)
        assert np.abs(s.forces).max() > 0.1  # MD geometries are off-equilibrium
        np.testing.assert_allclose(s.forces, fd, atol=1e-3, rtol=0)


def test_same_seed_identical_any_worker_count(smiles_file, tiny_dataset):
    again = generate_structures(n_molecules=2, workers=1, seed=7, smiles_file=smiles_file, **TINY)
    parallel = generate_structures(n_molecules=2, workers=2, seed=7, smiles_file=smiles_file, **TINY)
    other = generate_structures(n_molecules=2, workers=1, seed=8, smiles_file=smiles_file, **TINY)
    for run in (again, parallel):
        assert len(run.structures) == len(tiny_dataset)
        assert run.n_singlepoints == tiny_dataset.metadata["reader_options"]["generator"]["singlepoints"]
        for i, s in enumerate(run.structures):
            t = tiny_dataset.structure(i)
            assert s.mol_id == t.mol_id
            assert s.energy == t.energy
            np.testing.assert_array_equal(s.positions.astype(np.float32), t.positions.astype(np.float32))
            np.testing.assert_array_equal(s.forces.astype(np.float32), t.forces.astype(np.float32))
    for a, b in zip(again.structures, parallel.structures):  # full float64 equality across worker counts
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.forces, b.forces)
    assert not np.allclose(other.structures[0].positions, again.structures[0].positions)


def test_rejections_and_scf_failures_are_counted(monkeypatch):
    molecule = Molecule("CO", "methanol")
    never = SamplingSettings(temperatures=(300.0,), structures_per_molecule=2, min_distance=5.0, max_failures=3)
    res = sample_molecule(molecule, never, seed=0)
    assert res.structures == [] and res.n_rejected == 4 and res.n_abandoned == 1
    assert res.n_singlepoints == 1  # only the starting conformer was labelled

    real_call = XTBLabeller.__call__
    calls = {"n": 0}

    def flaky(self, positions):
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            self.n_singlepoints += 1
            raise SCFError("SCF did not converge")
        return real_call(self, positions)

    monkeypatch.setattr(sampling_mod.XTBLabeller, "__call__", flaky)
    settings = SamplingSettings(temperatures=(300.0,), structures_per_molecule=3, stride=2, equilibration_steps=4)
    res = sample_molecule(molecule, settings, seed=0)
    assert len(res.structures) == 3 and res.n_abandoned == 0
    assert res.n_scf_failures == calls["n"] // 5 > 0
    assert res.n_singlepoints == calls["n"]


def test_config_errors(smiles_file, tmp_path, capsys):
    with pytest.raises(ConfigError, match="molecules: 5 requested"):
        generate_structures(n_molecules=5, structures_per_molecule=2, smiles_file=smiles_file)
    with pytest.raises(ConfigError, match="temperatures"):
        generate_structures(n_molecules=1, structures_per_molecule=2, temperatures=(-5.0,), smiles_file=smiles_file)
    with pytest.raises(ConfigError, match="workers"):
        generate_structures(n_molecules=1, structures_per_molecule=2, workers=0, smiles_file=smiles_file)
    assert generate_main(["--out", str(tmp_path / "x"), "--molecules", "0", "--smiles", str(smiles_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symscale: error: molecules:") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset(smiles_file, tmp_path):
    out = tmp_path / "cli"
    assert generate_main(["--out", str(out), "--molecules", "1", "--per-molecule", "2", "--temperatures", "500",
                          "--stride", "2", "--equilibration", "2", "--smiles", str(smiles_file), "--seed", "3",
                          "--no-progress"]) == 0
    ds = PreparedDataset(out)
    assert len(ds) == 2 and ds.mol_ids == ["ethanol"]
    assert ds.metadata["reader_options"]["generator"]["settings"]["temperatures"] == [500.0]
    assert generate_main(["--out", str(out), "--molecules", "1", "--per-molecule", "2",
                          "--smiles", str(smiles_file), "--no-progress"]) == 2  # exists, no --overwrite
    (out / "README.md").write_text("keep me\n")
    assert generate_main(["--out", str(out), "--molecules", "1", "--per-molecule", "3", "--temperatures", "500",
                          "--stride", "2", "--equilibration", "2", "--smiles", str(smiles_file),
                          "--no-progress", "--overwrite"]) == 0
    assert len(PreparedDataset(out)) == 3 and (out / "README.md").read_text() == "keep me\n"


def test_symscale_data_generate_entry_point(smiles_file, tmp_path, capsys):
    from symscale.cli import main

    out = tmp_path / "via-cli"
    assert main(["data", "generate", "--out", str(out), "--molecules", "2", "--per-molecule", "2",
                 "--temperatures", "400", "--stride", "2", "--equilibration", "2", "--smiles", str(smiles_file),
                 "--selection", "first", "--no-progress"]) == 0
    assert PreparedDataset(out).mol_ids == ["ethanol", "chloromethane"]
    assert main(["data", "generate", "--out", str(tmp_path / "y"), "--smiles", str(tmp_path / "missing.smi")]) == 2
    assert "missing.smi: cannot read SMILES file" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_molecules_workers_invariance_slow():
    kwargs = dict(n_molecules=4, structures_per_molecule=6, temperatures=(300.0, 600.0, 1000.0), seed=11,
                  stride=5, equilibration_steps=10)
    one = generate_structures(workers=1, **kwargs)
    three = generate_structures(workers=3, **kwargs)
    assert len(one.structures) == len(three.structures) == 24
    assert one.n_scf_failures == three.n_scf_failures
    for a, b in zip(one.structures, three.structures):
        assert a.mol_id == b.mol_id and a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
