"""NVE molecular dynamics with a trained model: does the force field conserve energy?

:func:`run_nve` draws Maxwell-Boltzmann velocities, integrates with velocity Verlet
(:class:`ase.md.verlet.VelocityVerlet`) through :class:`symscale.calculator.SymscaleCalculator` and
records the total energy ``E_tot = E_pot + E_kin`` after every step. It reports

* ``drift_ev_per_atom_per_ps``: the least-squares slope of ``E_tot(t) / n_atoms`` against ``t`` (ps);
* ``max_abs_deviation_ev_per_atom``: ``max_t |E_tot(t) - E_tot(0)| / n_atoms``;
* ``conservative``: whether the model's forces are ``-dE/dx`` (``force_mode == "conservative"``);
* ``stable`` and ``reason``: the trajectory is stable when every step ran with finite positions and
  energies, ``max_t |E_tot(t) - E_tot(0)| / n_atoms`` stayed within ``max_energy_deviation``
  (:data:`MAX_ENERGY_DEVIATION` = 0.05 eV/atom by default) and no atom moved farther than
  ``max_displacement`` (:data:`MAX_DISPLACEMENT` = 10 Å) from its starting position. The run stops at
  the first step that breaks one of these, and ``reason`` says which (``None`` when stable).

A direct-force model (the study's choice) is not the gradient of its energy, so velocity Verlet does not
conserve its "total energy" even at a vanishing timestep; the drift then measures how far the learned
forces are from conservative, and the result says so in ``message``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import all_changes
from torch import nn

from ..calculator import SymscaleCalculator
from ..errors import ConfigError, DataError
from ..outputs import check_output_file

__all__ = ["run_nve", "read_first_structure", "MAX_ENERGY_DEVIATION", "MAX_DISPLACEMENT"]

#: Default bound on ``max_t |E_tot(t) - E_tot(0)| / n_atoms`` (eV/atom) of a stable trajectory.
MAX_ENERGY_DEVIATION = 0.05
#: Default bound on any atom's distance from its starting position (Å) in a stable trajectory.
MAX_DISPLACEMENT = 10.0
#: Trajectory file types ``run_nve`` writes (ASE trajectory, extended XYZ).
TRAJECTORY_SUFFIXES = (".traj", ".xyz", ".extxyz")

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
            trajectory: str | os.PathLike | None = None, allow_unseen_elements: bool = False,
            max_energy_deviation: float = MAX_ENERGY_DEVIATION,
            max_displacement: float = MAX_DISPLACEMENT) -> dict[str, Any]:
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
        trajectory: optional ``.traj``/``.xyz``/``.extxyz`` path (checked before the dynamics: a new file
            in a writable directory; an existing file is never replaced); frames are written to a temporary
            file renamed at the end.
        allow_unseen_elements: run a structure holding elements the model never saw in training
            (refused by default).
        max_energy_deviation: bound (eV/atom) on ``|E_tot(t) - E_tot(0)| / n_atoms`` of a stable run.
        max_displacement: bound (Å) on any atom's distance from its starting position.

    Returns:
        ``steps`` (steps run), ``timestep_fs``, ``time_ps``, ``n_atoms``, ``force_mode``,
        ``conservative``, ``temperature_initial_K``, ``temperature_final_K``,
        ``drift_ev_per_atom_per_ps``, ``max_abs_deviation_ev_per_atom``, ``max_displacement_A``,
        ``energy_total`` (list, eV, step 0..steps), ``stable``, ``reason`` (why not stable, else
        ``None``), ``max_energy_deviation_ev_per_atom`` and ``max_displacement_limit_A`` (the bounds
        used) and ``message``.

    Raises:
        ConfigError: bad ``steps`` / ``timestep_fs`` / ``temperature_K`` / bounds, or ``device``.
        DataError: unreadable structure or checkpoint, an atomic number outside 1..118, or an element
            the model was not trained on (unless ``allow_unseen_elements``).
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
    if not max_energy_deviation > 0:
        raise ConfigError(f"max_energy_deviation: must be positive, got {max_energy_deviation}")
    if not max_displacement > 0:
        raise ConfigError(f"max_displacement: must be positive, got {max_displacement}")
    for name, value in (("timestep_fs", timestep_fs), ("temperature_K", temperature_K),
                        ("max_energy_deviation", max_energy_deviation), ("max_displacement", max_displacement)):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be finite, got {value}")
    if trajectory is not None:  # before the dynamics, so a bad path never costs a whole run
        trajectory = check_output_file(trajectory, "md-trajectory", flag="--trajectory",
                                       suffixes=TRAJECTORY_SUFFIXES)
        trajectory.parent.mkdir(parents=True, exist_ok=True)
    from .guards import check_numbers, resolve_device

    device = resolve_device(device)
    given = hasattr(structure_file, "get_positions")
    atoms = structure_file.copy() if given else read_first_structure(structure_file)
    calc = _WatchedCalculator(checkpoint, device=device, dtype=dtype,
                              allow_unseen_elements=allow_unseen_elements)
    check_numbers(atoms.numbers, calc.elements, "structure" if given else str(structure_file),
                  allow_unseen_elements)
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

    e_start = float(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    tmp_traj = None
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    watch = _Watch(dyn, atoms, e_start, n * max_energy_deviation, max_displacement)
    if not np.isfinite(e_start):
        watch.reason = f"non-finite total energy ({e_start}) at step 0"
    calc.watch = watch  # checks every new geometry before the model (and the neighbour list) sees it
    dyn.attach(watch, interval=1)  # records E_tot; raises _Unstable at the first step breaking a bound
    if trajectory is not None:
        from ase.io import Trajectory

        trajectory = Path(trajectory)
        tmp_traj = trajectory.with_name(f".{trajectory.name}.tmp.traj")
        writer = Trajectory(str(tmp_traj), "w", atoms)
        dyn.attach(writer.write, interval=1)
    try:
        if watch.reason is None:
            try:
                dyn.run(steps)
            except _Unstable:
                pass
        energies = watch.energies
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
    stable = watch.reason is None and bool(np.all(np.isfinite(e))) and len(e) == steps + 1
    reason = None if stable else (watch.reason or f"stopped after {len(e) - 1} of {steps} steps")
    t_ps = np.arange(len(e)) * timestep_fs * 1e-3
    finite = np.isfinite(e)
    if finite.sum() >= 2:
        drift = float(np.polyfit(t_ps[finite], e[finite] / n, 1)[0])
        max_dev = float(np.max(np.abs(e[finite] - e[0])) / n)
    else:
        drift, max_dev = float("nan"), float("nan")
    conservative = calc.force_mode == "conservative"
    message = _message(conservative, reason, drift, max_dev, len(e) - 1)
    return {"steps": int(len(e) - 1), "timestep_fs": float(timestep_fs), "time_ps": float(t_ps[-1]),
            "n_atoms": n, "force_mode": calc.force_mode, "conservative": conservative,
            "temperature_initial_K": t0, "temperature_final_K": float(atoms.get_temperature()),
            "drift_ev_per_atom_per_ps": drift, "max_abs_deviation_ev_per_atom": max_dev,
            "max_displacement_A": watch.max_disp, "energy_total": [float(x) for x in e],
            "stable": stable, "reason": reason,
            "max_energy_deviation_ev_per_atom": float(max_energy_deviation),
            "max_displacement_limit_A": float(max_displacement), "message": message}


class _Unstable(Exception):
    pass


class _Watch:
    """Stops the run (``_Unstable``, with ``reason`` set) at the first step that breaks a bound.

    :meth:`check_geometry` runs inside each integration step, before the model evaluates the new
    positions: finite positions, finite (half-step) kinetic energy, no atom beyond ``max_disp`` Å from
    its start. Called as an MD observer after each step, it records ``E_tot`` and checks that it is
    finite and within ``max_dev_total`` eV (whole structure) of ``E_tot(0)``.
    """

    def __init__(self, dyn, atoms, e_start: float, max_dev_total: float, max_disp: float):
        self.dyn, self.atoms, self.e_start = dyn, atoms, e_start
        self.max_dev_total, self.limit = max_dev_total, max_disp
        self.start = atoms.get_positions().copy()
        self.energies: list[float] = []
        self.reason: str | None = None
        self.max_disp = 0.0

    def check_geometry(self, atoms) -> None:
        step = int(self.dyn.nsteps) + 1  # called while step nsteps + 1 computes its forces
        pos = atoms.positions
        if not np.all(np.isfinite(pos)):
            self._stop(f"non-finite atomic positions at step {step}")
        if not np.isfinite(atoms.get_kinetic_energy()):
            self._stop(f"non-finite kinetic energy at step {step}")
        disp = np.linalg.norm(pos - self.start, axis=1)
        k = int(np.argmax(disp))
        self.max_disp = max(self.max_disp, float(disp[k]))
        if disp[k] > self.limit:
            self._stop(f"atom {k} moved {disp[k]:.3g} Å from its start (> {self.limit:g} Å) at step {step}")

    def __call__(self) -> None:
        atoms, step = self.atoms, int(self.dyn.nsteps)
        e = float(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        self.energies.append(e)
        if not np.isfinite(e):
            self._stop(f"non-finite total energy ({e}) at step {step}", recorded=True)
        if abs(e - self.e_start) > self.max_dev_total:
            n = len(atoms)
            self._stop(f"|E_tot - E_tot(0)| = {abs(e - self.e_start) / n:.3g} eV/atom at step {step} exceeds "
                       f"{self.max_dev_total / n:g} eV/atom", recorded=True)

    def _stop(self, reason: str, recorded: bool = False) -> None:
        if not recorded:  # the step ran but its energy was not evaluated
            self.energies.append(float("nan"))
        self.reason = reason
        raise _Unstable


class _WatchedCalculator(SymscaleCalculator):
    """The calculator, with the run's :class:`_Watch` looking at each new geometry first."""

    watch: _Watch | None = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        if self.watch is not None:
            self.watch.check_geometry(atoms if atoms is not None else self.atoms)
        super().calculate(atoms, properties, system_changes)


def _ase_format(path: Path) -> str | None:
    return "extxyz" if path.suffix in (".xyz", ".extxyz") else None


def _message(conservative: bool, reason: str | None, drift: float, max_dev: float, steps: int) -> str:
    head = (f"{steps} NVE steps: total-energy drift {drift:.3g} eV/atom/ps, "
            f"max |E_tot - E_tot(0)| {max_dev:.3g} eV/atom.")
    if reason is not None:
        head += (f" Unstable: {reason} (the model is unstable at this timestep/temperature, or the bounds "
                 f"max_energy_deviation / max_displacement are too tight).")
    if conservative:
        return head + (" Forces are -dE/dx (conservative): drift should shrink as timestep^2; a large"
                       " drift means too long a timestep or a rough potential.")
    return head + (" Forces are predicted directly (not -dE/dx), so the model's energy is not a conserved"
                   " quantity of its own dynamics and some drift is expected at any timestep; it measures"
                   " how far the learned forces are from conservative.")
