"""Geometry sampling for one molecule: GFN2-xTB Langevin MD at several temperatures.

Each temperature gets its own trajectory started from its own ETKDG conformer, with Maxwell-Boltzmann
velocities. The integrator is BAOAB Langevin (one force call per step); after ``equilibration_steps`` every
``stride``-th frame is kept, labelled with the energy and forces the integrator just computed, so a kept
structure costs no extra single point. Everything random comes from :func:`molecule_seed`, so a molecule's
structures depend only on (seed, name, settings), never on which worker ran it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from ase.data import atomic_masses
from ase.units import fs, kB

from ..structure import Structure
from .molecules import Molecule, embed_conformers, molecule_seed
from .xtb import SCFError, XTBLabeller, min_distance


@dataclass(frozen=True)
class SamplingSettings:
    """How one molecule is sampled.

    Attributes:
        temperatures: Langevin bath temperatures in K, one trajectory each.
        structures_per_molecule: structures kept per molecule, split as evenly as possible over temperatures.
        stride: MD steps between kept frames.
        equilibration_steps: MD steps discarded at the start of each trajectory.
        timestep_fs: MD time step in fs.
        friction_per_fs: Langevin friction in 1/fs.
        accuracy: tblite SCF accuracy factor (1.0 = default, smaller = tighter).
        min_distance: geometries with two atoms closer than this (Å) are rejected.
        max_failures: consecutive rejected / SCF-failed steps after which a trajectory is abandoned.
    """

    temperatures: tuple[float, ...] = (300.0, 600.0, 1000.0)
    structures_per_molecule: int = 60
    stride: int = 10
    equilibration_steps: int = 40
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    accuracy: float = 1.0
    min_distance: float = 0.5
    max_failures: int = 20

    def frames_per_temperature(self) -> list[int]:
        """Kept frames per temperature: ``structures_per_molecule`` split evenly, remainder to the first."""
        n, k = len(self.temperatures), int(self.structures_per_molecule)
        return [k // n + (1 if i < k % n else 0) for i in range(n)]


@dataclass
class MoleculeResult:
    """What sampling one molecule produced, with its bookkeeping."""

    name: str
    structures: list[Structure] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    n_singlepoints: int = 0
    n_scf_failures: int = 0
    n_rejected: int = 0
    n_abandoned: int = 0
    seconds: float = 0.0
    xtb_seconds: float = 0.0


def _maxwell_boltzmann(rng: np.random.Generator, masses: np.ndarray, kT: float) -> np.ndarray:
    """Velocities (ASE units) at temperature ``kT`` (eV) with the centre-of-mass motion removed."""
    v = rng.normal(size=(len(masses), 3)) * np.sqrt(kT / masses)[:, None]
    if len(masses) > 1:
        v -= (masses[:, None] * v).sum(0) / masses.sum()
    return v


def sample_molecule(molecule: Molecule, settings: SamplingSettings, seed: int) -> MoleculeResult:
    """Run one Langevin trajectory per temperature and return the kept, labelled frames (in that order)."""
    start = time.perf_counter()
    result = MoleculeResult(name=molecule.name)
    frames = settings.frames_per_temperature()
    seq = molecule_seed(seed, molecule.name)
    embed_seed = int(seq.generate_state(1)[0] & 0x7FFFFFFF)
    rng = np.random.default_rng(seq)
    numbers, conformers = embed_conformers(molecule.smiles, len(settings.temperatures), embed_seed)
    masses = atomic_masses[numbers]
    dt = settings.timestep_fs * fs
    # a scalar through libm, not numpy (whose AVX-512 exp differs from libm by one ulp on ~5 % of inputs)
    c1 = math.exp(-settings.friction_per_fs * settings.timestep_fs)
    c2 = np.sqrt(1.0 - c1 * c1)
    labeller = XTBLabeller(numbers, conformers[0], accuracy=settings.accuracy)

    for t_index, (temperature, n_keep) in enumerate(zip(settings.temperatures, frames)):
        if n_keep == 0:
            continue
        kT = kB * float(temperature)
        noise_scale = c2 * np.sqrt(kT / masses)[:, None]
        labeller.reset()
        pos = conformers[t_index % len(conformers)].copy()
        try:
            energy, forces = labeller(pos)
        except SCFError:
            result.n_scf_failures += 1
            result.n_abandoned += 1
            continue
        vel = _maxwell_boltzmann(rng, masses, kT)
        step = kept = failures = 0
        while kept < n_keep:
            if failures > settings.max_failures:
                result.n_abandoned += 1
                break
            v_half = vel + 0.5 * dt * forces / masses[:, None]
            x_half = pos + 0.5 * dt * v_half
            v_new = c1 * v_half + noise_scale * rng.normal(size=pos.shape)
            x_new = x_half + 0.5 * dt * v_new
            if min_distance(x_new) < settings.min_distance:
                result.n_rejected += 1
                failures += 1
                vel = _maxwell_boltzmann(rng, masses, kT)  # restart from the last good frame
                continue
            try:
                new_energy, new_forces = labeller(x_new)
            except SCFError:
                result.n_scf_failures += 1
                failures += 1
                vel = _maxwell_boltzmann(rng, masses, kT)
                continue
            failures = 0
            pos, energy, forces = x_new, new_energy, new_forces
            vel = v_new + 0.5 * dt * forces / masses[:, None]
            step += 1
            if step > settings.equilibration_steps and (step - settings.equilibration_steps) % settings.stride == 0:
                result.structures.append(Structure(numbers=numbers.copy(), positions=pos.copy(), energy=energy,
                                                   forces=forces.copy(), mol_id=molecule.name))
                result.temperatures.append(float(temperature))
                kept += 1
    result.n_singlepoints = labeller.n_singlepoints
    result.xtb_seconds = labeller.seconds
    result.seconds = time.perf_counter() - start
    return result
