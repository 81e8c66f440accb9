"""`stable` means stable: finite, energy within a bound, no atom flying off; else `symscale md` exits 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write

from symscale.cli import main
from symscale.errors import ConfigError
from symscale.train.md import MAX_DISPLACEMENT, MAX_ENERGY_DEVIATION, run_nve

from toy_models import PairModel


def pair(forces="conservative", force_scale=0.5):
    torch.manual_seed(0)
    m = PairModel(forces=forces)
    m.set_normalization({1: -13.6, 6: -1030.0, 8: -2040.0}, 0.05, force_scale)
    return m


@pytest.fixture
def ethanol():
    a = molecule("CH3CH2OH")
    a.rattle(0.03, seed=0)
    return a


def test_good_model_is_stable(ethanol):
    res = run_nve(pair(), ethanol, steps=60, timestep_fs=0.25, temperature_K=300)
    assert res["stable"] and res["reason"] is None and res["steps"] == 60
    assert res["max_abs_deviation_ev_per_atom"] < 1e-3
    assert 0 < res["max_displacement_A"] < 1.0
    assert res["max_energy_deviation_ev_per_atom"] == MAX_ENERGY_DEVIATION == 0.05
    assert res["max_displacement_limit_A"] == MAX_DISPLACEMENT == 10.0
    assert "Unstable" not in res["message"]


def test_finite_but_exploding_energy_is_unstable(ethanol):
    """Untrained direct forces (not the gradient of the model's energy): every number stays finite but the
    total energy runs away (the '8.7e5 eV/atom and stable: true' report); the run stops at the first step
    beyond the bound."""
    res = run_nve(pair("direct"), ethanol, steps=200, timestep_fs=0.5, temperature_K=300)
    assert not res["stable"] and res["steps"] < 200
    assert "eV/atom" in res["reason"] and "exceeds 0.05 eV/atom" in res["reason"]
    e = np.asarray(res["energy_total"])
    assert np.all(np.isfinite(e))
    assert abs(e[-1] - e[0]) / res["n_atoms"] > 0.05
    assert np.all(np.abs(e[:-1] - e[0]) / res["n_atoms"] <= 0.05)  # stopped at the first violation
    assert res["max_abs_deviation_ev_per_atom"] > 0.05
    assert f"Unstable: {res['reason']}" in res["message"]
    # a looser bound lets the same model run longer
    loose = run_nve(pair("direct"), ethanol, steps=200, timestep_fs=0.5, max_energy_deviation=1e3)
    assert loose["steps"] > res["steps"]


def test_flying_atom_is_unstable(ethanol):
    res = run_nve(pair("direct", force_scale=5.0), ethanol, steps=400, timestep_fs=0.5,
                  max_energy_deviation=1e12, max_displacement=3.0)
    assert not res["stable"]
    assert "from its start (> 3 Å)" in res["reason"], res["reason"]
    assert res["max_displacement_A"] > 3.0


def test_bounds_must_be_positive(ethanol):
    with pytest.raises(ConfigError, match="max_energy_deviation"):
        run_nve(pair(), ethanol, steps=2, max_energy_deviation=0)
    with pytest.raises(ConfigError, match="max_displacement"):
        run_nve(pair(), ethanol, steps=2, max_displacement=-1)


def test_md_command_exits_1_when_unstable(tiny_run, tmp_path, capsys):
    """A real trained checkpoint, and the same checkpoint with its force scale multiplied by 1e4."""
    from symscale.train.checkpoint import load_checkpoint, save_checkpoint

    write(tmp_path / "h2o.xyz", molecule("H2O"))
    args = ["--structure", str(tmp_path / "h2o.xyz"), "--steps", "20", "--timestep", "0.25",
            "--temperature", "100"]
    assert main(["md", str(tiny_run)] + args) == 0
    good = json.loads(capsys.readouterr().out)
    assert good["stable"] is True and good["reason"] is None and good["steps"] == 20
    assert good["max_abs_deviation_ev_per_atom"] < 0.05
    # the bounds are options: an absurdly tight one makes the same run unstable
    assert main(["md", str(tiny_run)] + args + ["--max-displacement", "1e-6"]) == 1
    assert "from its start (> 1e-06 Å) at step 1" in json.loads(capsys.readouterr().out)["reason"]

    data = load_checkpoint(tiny_run)
    data["model_state"]["force_scale"] = data["model_state"]["force_scale"] * 1e4
    broken = tmp_path / "broken.pt"
    save_checkpoint(broken, {k: v for k, v in data.items() if not k.endswith("_sha256")})
    assert main(["md", str(broken)] + args + ["--out", str(tmp_path / "md.json")]) == 1
    bad = json.loads(capsys.readouterr().out)
    assert bad["stable"] is False and bad["steps"] < 20 and "exceeds 0.05 eV/atom" in bad["reason"]
    saved = json.loads((tmp_path / "md.json").read_text())
    assert saved["reason"] == bad["reason"] and len(saved["energy_total"]) == bad["steps"] + 1
