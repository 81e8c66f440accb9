"""run_nve: energy conservation of a conservative model, honest reporting for a direct-force model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write

from symscale.errors import ConfigError, DataError
from symscale.train.md import read_first_structure, run_nve

from toy_models import PairModel


def make(forces="conservative"):
    torch.manual_seed(0)
    m = PairModel(forces=forces)
    m.set_normalization({1: -13.6, 6: -1030.0, 8: -2040.0}, 0.05, 0.5)
    return m


@pytest.fixture
def xyz(tmp_path):
    a = molecule("CH3CH2OH")
    a.rattle(0.03, seed=0)
    path = tmp_path / "ethanol.xyz"
    write(path, a)
    return path


def test_nve_conservative_model_conserves_energy(xyz):
    model = make()
    res = run_nve(model, xyz, steps=100, timestep_fs=0.25, temperature_K=300, seed=0)
    assert res["conservative"] and res["force_mode"] == "conservative" and res["stable"]
    assert res["steps"] == 100 and len(res["energy_total"]) == 101 and res["n_atoms"] == 9
    assert res["temperature_initial_K"] > 50
    assert res["max_abs_deviation_ev_per_atom"] < 1e-3
    assert abs(res["drift_ev_per_atom_per_ps"]) < 1e-2
    # velocity Verlet: the energy error shrinks about as dt^2
    coarse = run_nve(model, xyz, steps=50, timestep_fs=0.5, temperature_K=300, seed=0)
    ratio = coarse["max_abs_deviation_ev_per_atom"] / res["max_abs_deviation_ev_per_atom"]
    assert 2.0 < ratio < 8.0
    assert "conservative" in res["message"]
    # same seed, same trajectory
    again = run_nve(model, xyz, steps=5, timestep_fs=0.25, seed=0)
    np.testing.assert_allclose(again["energy_total"], res["energy_total"][:6], rtol=0, atol=1e-9)


def test_nve_direct_model_reports_drift_honestly(xyz, tmp_path):
    res = run_nve(make("direct"), xyz, steps=40, timestep_fs=0.25, temperature_K=300, seed=1,
                  trajectory=tmp_path / "traj.xyz")
    assert not res["conservative"] and res["force_mode"] == "direct"
    assert np.isfinite(res["drift_ev_per_atom_per_ps"])
    assert "not -dE/dx" in res["message"]
    frames = read_first_structure(tmp_path / "traj.xyz")
    assert len(frames) == 9
    assert not list(tmp_path.glob(".*tmp*"))


def test_nve_errors(tmp_path, xyz):
    with pytest.raises(DataError, match="not found"):
        run_nve(make(), tmp_path / "missing.xyz", steps=2)
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="bad.xyz"):
        run_nve(make(), bad, steps=2)
    with pytest.raises(ConfigError, match="timestep_fs"):
        run_nve(make(), xyz, steps=2, timestep_fs=0)


class Exploding(PairModel):
    """Finite energy, forces that blow up: the integrator must stop cleanly and say so."""

    def compute(self, batch, pos):
        e, f = super().compute(batch, pos)
        return e, f * 1e200


def test_nve_unstable_model_stops_and_reports(xyz):
    torch.manual_seed(0)
    model = Exploding(forces="direct")
    res = run_nve(model, xyz, steps=30, timestep_fs=0.5)
    assert not res["stable"] and res["steps"] < 30
    assert "non-finite" in res["message"]
