"""NVE molecular dynamics with a trained model: does the force field conserve energy?

:func:`run_nve` draws Maxwell-Boltzmann velocities, integrates with velocity Verlet
(:class:`ase.md.verlet.VelocityVerlet`) through :class:`symscale.calculator.SymscaleCalculator` and
records the total energy ``E_tot = E_pot + E_kin`` after every step. It reports

* ``drift_ev_per_atom_per_ps``: the least-squares slope of ``E_tot(t) / n_atoms`` against ``t`` (ps);
* ``max_abs_deviation_ev_per_atom``: ``max_t |E_tot(t) - E_tot(0)| / n_atoms``;
* ``conservative``: whether the model's forces are ``-dE/dx`` (``force_mode == "conservative"``).

A direct-force model (the study's choice) is not the gradient of its energy, so velocity Verlet does not
conserve its "total energy" even at a vanishing timestep; the drift then measures how far the learned
forces are from conservative, and the result says so in ``message``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calculator import SymscaleCalculator
from ..errors import ConfigError, DataError

__all__ = ["run_nve", "read_first_structure"]

_SYMSCALE_FORMATS = (".aselmdb", ".lmdb", ".npz", ".db")


def read_first_structure(path: str | os.PathLike):
    """The first structure of a file as :class:`ase.Atoms` (ASE formats, or any symscale data source:
    ``.aselmdb``, ``.db``, ``.npz``, prepared directory). Raises ``DataError`` naming the file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: structure file not found")
    try:
        if p.is_dir() or p.suffix.lower() in _SYMSCALE_FORMATS:
            from ..data import read_structures

            structure = next(iter(read_structures(p)), None)
            if structure is None:
                raise DataError(f"{p}: contains no structure")
            atoms = structure.to_atoms()
            atoms.calc = None
            return atoms
        from ase.io import read

        return read(str(p), index=0)
    except DataError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{p}: cannot read a structure ({msg})") from None


def run_nve(checkpoint: str | os.PathLike | nn.Module, structure_file, steps: int = 200,
            timestep_fs: float = 0.5, temperature_K: float = 300.0, seed: int = 0,
            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
            trajectory: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run NVE dynamics and report energy conservation.

    Args:
        checkpoint: run directory, checkpoint file, or a model instance.
        structure_file: a structure file (first frame is used) or an :class:`ase.Atoms` (copied).
        steps: velocity-Verlet steps.
        timestep_fs: timestep in fs.
        temperature_K: temperature of the initial Maxwell-Boltzmann velocities (centre-of-mass motion
            removed; rotation removed for non-periodic structures).
        seed: seeds the velocities.
        device, dtype: evaluation device and precision.
        trajectory: optional ``.traj``/``.xyz`` path; frames are written to a temporary file renamed at
            the end.

    Returns:
        ``steps``, ``timestep_fs``, ``time_ps``, ``n_atoms``, ``force_mode``, ``conservative``,
        ``temperature_initial_K``, ``temperature_final_K``, ``drift_ev_per_atom_per_ps``,
        ``max_abs_deviation_ev_per_atom``, ``energy_total`` (list, eV, step 0..steps), ``stable``
        (all energies finite) and ``message``.
    """
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    if steps < 1:
        raise ConfigError(f"steps: must be >= 1, got {steps}")
    if not timestep_fs > 0:
        raise ConfigError(f"timestep_fs: must be positive, got {timestep_fs}")
    if temperature_K < 0:
        raise ConfigError(f"temperature_K: must be >= 0, got {temperature_K}")
    atoms = structure_file.copy() if hasattr(structure_file, "get_positions") else \
        read_first_structure(structure_file)
    calc = SymscaleCalculator(checkpoint, device=device, dtype=dtype)
    atoms.calc = calc
    n = len(atoms)
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:  # pragma: no cover - older ASE
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    if not any(atoms.pbc) and n > 2:
        vd.ZeroRotation(atoms)
    t0 = float(atoms.get_temperature())

    energies: list[float] = []

    def record() -> None:
        if not np.all(np.isfinite(atoms.positions)):  # never hand NaN positions to the neighbour list
            energies.append(float("nan"))
            return
        energies.append(float(atoms.get_potential_energy() + atoms.get_kinetic_energy()))

    e_start = float(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    tmp_traj = None
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dyn.attach(record, interval=1)
    dyn.attach(_stop_if_nonfinite(energies), interval=1)  # after record: checks the newest energy
    if trajectory is not None:
        from ase.io import Trajectory

        trajectory = Path(trajectory)
        tmp_traj = trajectory.with_name(f".{trajectory.name}.tmp.traj")
        writer = Trajectory(str(tmp_traj), "w", atoms)
        dyn.attach(writer.write, interval=1)
    try:
        try:
            dyn.run(steps)
        except _NonFinite:
            pass
        if len(energies) == 0 or energies[0] != e_start:  # ASE versions that skip observers at step 0
            energies.insert(0, e_start)
        if tmp_traj is not None:
            writer.close()
            if trajectory.suffix == ".traj":
                os.replace(tmp_traj, trajectory)
            else:
                from ase.io import read, write

                frames = read(str(tmp_traj), index=":")
                tmp_out = trajectory.with_name(f".{trajectory.name}.tmp")
                write(str(tmp_out), frames, format=_ase_format(trajectory))
                os.replace(tmp_out, trajectory)
                os.unlink(tmp_traj)
    finally:
        if tmp_traj is not None and tmp_traj.exists():
            os.unlink(tmp_traj)

    e = np.asarray(energies, dtype=np.float64)
    stable = bool(np.all(np.isfinite(e))) and len(e) == steps + 1
    t_ps = np.arange(len(e)) * timestep_fs * 1e-3
    finite = np.isfinite(e)
    if finite.sum() >= 2:
        drift = float(np.polyfit(t_ps[finite], e[finite] / n, 1)[0])
        max_dev = float(np.max(np.abs(e[finite] - e[0])) / n)
    else:
        drift, max_dev = float("nan"), float("nan")
    conservative = calc.force_mode == "conservative"
    message = _message(conservative, stable, drift, max_dev, len(e) - 1)
    return {"steps": int(len(e) - 1), "timestep_fs": float(timestep_fs), "time_ps": float(t_ps[-1]),
            "n_atoms": n, "force_mode": calc.force_mode, "conservative": conservative,
            "temperature_initial_K": t0, "temperature_final_K": float(atoms.get_temperature()),
            "drift_ev_per_atom_per_ps": drift, "max_abs_deviation_ev_per_atom": max_dev,
            "energy_total": [float(x) for x in e], "stable": stable, "message": message}


class _NonFinite(Exception):
    pass


def _stop_if_nonfinite(energies: list[float]):
    def check() -> None:
        if energies and not np.isfinite(energies[-1]):
            raise _NonFinite
    return check


def _ase_format(path: Path) -> str | None:
    return "extxyz" if path.suffix in (".xyz", ".extxyz") else None


def _message(conservative: bool, stable: bool, drift: float, max_dev: float, steps: int) -> str:
    head = (f"{steps} NVE steps: total-energy drift {drift:.3g} eV/atom/ps, "
            f"max |E_tot - E_tot(0)| {max_dev:.3g} eV/atom.")
    if not stable:
        head += " The trajectory became non-finite (the model is unstable at this timestep/temperature)."
    if conservative:
        return head + (" Forces are -dE/dx (conservative): drift should shrink as timestep^2; a large"
                       " drift means too long a timestep or a rough potential.")
    return head + (" Forces are predicted directly (not -dE/dx), so the model's energy is not a conserved"
                   " quantity of its own dynamics and some drift is expected at any timestep; it measures"
                   " how far the learned forces are from conservative.")
