"""SymscaleCalculator: same numbers as the model, molecules and periodic cells, usable in ASE MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

from symscale.calculator import SymscaleCalculator
from symscale.data.batch import Batch
from symscale.errors import DataError

from toy_models import CUTOFF, PairModel


def make(forces="conservative", seed=0):
    torch.manual_seed(seed)
    m = PairModel(forces=forces)
    m.set_normalization({1: -13.6, 6: -1030.0, 8: -2040.0, 14: -100.0}, 0.05, 1.0)
    return m


def distorted(name="CH3CH2OH", seed=0):
    a = molecule(name)
    a.rattle(0.05, seed=seed)
    return a


@pytest.mark.parametrize("forces", ["conservative", "direct"])
def test_calculator_matches_model_on_molecule(forces):
    model = make(forces)
    atoms = distorted()
    atoms.calc = SymscaleCalculator(model)
    ref = model.double()(Batch.from_atoms([atoms], cutoff=CUTOFF, dtype=torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"][0].detach()), abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].detach().numpy(), atol=1e-10)
    assert atoms.calc.force_mode == forces


def test_calculator_periodic_forces_are_energy_gradient():
    model = make("conservative")
    a = bulk("Si", "diamond", a=5.43)
    a.rattle(0.05, seed=1)
    a.calc = SymscaleCalculator(model)
    f = a.get_forces()
    assert np.abs(f).max() > 1e-4
    # central finite differences of the periodic energy (images through the cell included)
    h = 1e-5
    for atom, comp in [(0, 0), (1, 2)]:
        plus, minus = a.copy(), a.copy()
        plus.positions[atom, comp] += h
        minus.positions[atom, comp] -= h
        plus.calc = minus.calc = a.calc
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert fd == pytest.approx(f[atom, comp], abs=1e-6)
    # periodic images matter: the same atoms without pbc give a different energy
    iso = a.copy()
    iso.pbc = False
    iso.calc = a.calc
    assert abs(iso.get_potential_energy() - a.get_potential_energy()) > 1e-3


def test_calculator_in_ase_md_conserves_energy():
    atoms = distorted("H2O", seed=2)
    atoms.calc = SymscaleCalculator(make("conservative"))
    atoms.set_momenta(np.random.default_rng(0).normal(scale=0.05, size=(len(atoms), 3)))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.1 * units.fs).run(20)
    assert abs(atoms.get_total_energy() - e0) < 1e-3
    assert not np.allclose(atoms.positions, distorted("H2O", seed=2).positions)


def test_calculator_does_not_modify_callers_model():
    model = make()
    SymscaleCalculator(model)
    assert next(model.parameters()).dtype == torch.float32


def test_calculator_bad_path_is_data_error(tmp_path):
    with pytest.raises(DataError, match="no checkpoint"):
        SymscaleCalculator(tmp_path / "nope")


def test_calculator_from_frame_averaged_checkpoint(tmp_path):
    from symscale.models import build
    from symscale.train.checkpoint import model_spec, save_checkpoint
    from symscale.train.symmetry import FrameAveraging

    torch.manual_seed(0)
    model = build("mpnn", 8, cutoff=CUTOFF)
    model.set_normalization({1: -13.6, 6: -1030.0, 8: -2040.0}, 0.05, 0.5)
    save_checkpoint(tmp_path / "run" / "checkpoint.pt",
                    {"model": model_spec("mpnn", 8, {"cutoff": CUTOFF}, frame_averaging=True),
                     "model_state": model.state_dict()})
    calc = SymscaleCalculator(tmp_path / "run")
    assert isinstance(calc.model, FrameAveraging) and calc.cutoff == CUTOFF
    atoms = distorted()
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = FrameAveraging(model).double()(Batch.from_atoms([atoms], cutoff=CUTOFF, dtype=torch.float64))
    assert e == pytest.approx(float(ref["energy"][0].detach()), abs=1e-9)
    np.testing.assert_allclose(f, ref["forces"].detach().numpy(), atol=1e-9)
    # rotation-invariant energy and equivariant forces through the calculator
    turned = atoms.copy()
    turned.rotate(73.0, (0.3, -1.0, 0.4), center="COM")
    turned.calc = calc
    assert turned.get_potential_energy() == pytest.approx(e, abs=1e-8)
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(np.deg2rad(73.0) * np.array([0.3, -1.0, 0.4]) / np.linalg.norm([0.3, -1.0, 0.4]))
    np.testing.assert_allclose(turned.get_forces(), f @ rot.as_matrix().T, atol=1e-8)
