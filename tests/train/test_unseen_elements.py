"""Elements a model never saw in training are refused by eval, md and the calculator (or explicitly
allowed); atomic numbers outside 1..118 always are, with a one-line error instead of an IndexError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.io import write

from symscale.calculator import SymscaleCalculator
from symscale.cli import main
from symscale.errors import DataError
from symscale.train.checkpoint import load_checkpoint, load_model
from symscale.train.evaluate import evaluate_checkpoint
from symscale.train.guards import model_elements
from symscale.train.md import run_nve

HCNO = (1, 6, 7, 8)


def with_copper(name="H2O"):
    a = molecule(name) + Atoms("Cu", positions=[[2.4, 0.0, 0.3]])
    return a


@pytest.fixture(scope="module")
def mixed_xyz(tmp_path_factory):
    """Six EMT-labelled structures; structure 3 (0-based) holds a Cu atom, the others only H, C, N, O."""
    frames = []
    rng = np.random.default_rng(0)
    for k, name in enumerate(["H2O", "CH4", "NH3", "CH3OH", "H2O", "CH4"]):
        a = with_copper(name) if k == 3 else molecule(name)
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
        a.calc = EMT()
        a.get_potential_energy()
        frames.append(a)
    path = tmp_path_factory.mktemp("mixed") / "mixed.xyz"
    write(path, frames)
    return path


def test_training_records_its_elements(tiny_run):
    assert load_checkpoint(tiny_run)["elements"] == list(HCNO)
    model = load_model(tiny_run)
    assert model.trained_elements == HCNO and model_elements(model) == HCNO


def test_eval_refuses_unseen_element_naming_dataset_structure_and_element(tiny_run, mixed_xyz, capsys):
    with pytest.raises(DataError) as info:
        evaluate_checkpoint(tiny_run, mixed_xyz)
    msg = str(info.value)
    assert msg.startswith(f"{mixed_xyz} structure 3: element Cu (Z=29, atom ")
    assert "trained on (H, C, N, O)" in msg and "allow_unseen_elements=True" in msg and "\n" not in msg
    # a selection without the structure passes; the explicit opt-in evaluates everything
    assert evaluate_checkpoint(tiny_run, mixed_xyz, max_structures=3)["n_structures"] == 3
    allowed = evaluate_checkpoint(tiny_run, mixed_xyz, allow_unseen_elements=True)
    assert allowed["n_structures"] == 6 and np.isfinite(allowed["force_mae"])
    # command line
    assert main(["eval", str(tiny_run), str(mixed_xyz)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"symscale: error: {mixed_xyz} structure 3: element Cu") and err.count("\n") == 1
    assert main(["eval", str(tiny_run), str(mixed_xyz), "--allow-unseen-elements"]) == 0
    capsys.readouterr()


def test_calculator_refuses_unseen_element_unless_allowed(tiny_run):
    atoms = with_copper()
    atoms.calc = SymscaleCalculator(tiny_run)
    assert atoms.calc.elements == HCNO
    with pytest.raises(DataError, match=r"^SymscaleCalculator: element Cu \(Z=29, atom 3\) is not among"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError):  # DataError is a ValueError for ASE-level callers
        atoms.get_forces()
    atoms.calc = SymscaleCalculator(tiny_run, allow_unseen_elements=True)
    assert np.isfinite(atoms.get_potential_energy()) and np.all(np.isfinite(atoms.get_forces()))
    water = molecule("H2O")
    water.calc = SymscaleCalculator(tiny_run)
    assert np.isfinite(water.get_potential_energy())


@pytest.mark.parametrize("z", [0, 119, 200])
def test_atomic_numbers_outside_the_table_are_refused_even_when_allowed(tiny_run, z):
    atoms = molecule("H2O")
    atoms.numbers[1] = z
    for allow in (False, True):
        atoms.calc = SymscaleCalculator(tiny_run, allow_unseen_elements=allow)
        with pytest.raises(DataError, match=rf"^SymscaleCalculator: atomic number {z} \(atom 1\) is outside "
                                            r"1\.\.118$"):
            atoms.get_potential_energy()


def test_md_refuses_unseen_element_unless_allowed(tiny_run, tmp_path, capsys):
    path = tmp_path / "h2o_cu.xyz"
    write(path, with_copper())
    with pytest.raises(DataError, match=rf"^{path}: element Cu \(Z=29, atom 3\)"):
        run_nve(tiny_run, path, steps=2)
    assert main(["md", str(tiny_run), "--structure", str(path), "--steps", "2"]) == 2
    assert capsys.readouterr().err.startswith(f"symscale: error: {path}: element Cu")
    res = run_nve(tiny_run, path, steps=2, timestep_fs=0.1, temperature_K=10, allow_unseen_elements=True,
                  max_energy_deviation=1e6)
    assert res["steps"] == 2 and res["n_atoms"] == 4


def test_model_instances_and_old_checkpoints_use_their_reference_energies(tmp_path):
    """Without a recorded element list, the elements with a non-zero e0 are the trained ones."""
    from symscale.models import build
    from symscale.train.checkpoint import model_spec, save_checkpoint

    torch.manual_seed(0)
    model = build("mpnn", 8, cutoff=4.0)
    model.set_normalization({1: -13.6, 6: -1030.0, 8: -2040.0}, 0.05, 0.5)
    assert model_elements(model) == (1, 6, 8)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": model_spec("mpnn", 8, {"cutoff": 4.0}),
                                                 "model_state": model.state_dict()})
    ammonia = molecule("NH3")
    for source in (model, tmp_path):
        ammonia.calc = SymscaleCalculator(source)
        with pytest.raises(DataError, match=r"element N \(Z=7, atom 0\) .*\(H, C, O\)"):
            ammonia.get_potential_energy()
    fresh = build("mpnn", 8, cutoff=4.0)  # never normalised: no known element set, nothing refused
    assert model_elements(fresh) is None
    ammonia.calc = SymscaleCalculator(fresh)
    assert np.isfinite(ammonia.get_potential_energy())
