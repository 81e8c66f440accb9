"""Real-chemistry training data: ETKDG conformers, GFN2-xTB Langevin MD, xTB energies and forces.

``generate`` samples the first ``n_molecules`` of a SMILES list (the shipped ``molecules.smi`` by default)
in parallel worker processes, one thread each, work split by molecule, and writes the prepared format with
:func:`symscale.data.write_prepared`. The same seed gives identical output for any worker count.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ..structure import Structure
from .molecules import Molecule, default_smiles_path, embed_conformers, load_smiles, molecule_seed
from .sampling import MoleculeResult, SamplingSettings, sample_molecule
from .xtb import SCFError, XTBLabeller, min_distance

__all__ = [
    "GenerationResult", "Molecule", "MoleculeResult", "SCFError", "SamplingSettings", "XTBLabeller",
    "default_smiles_path", "embed_conformers", "generate", "generate_structures", "load_smiles",
    "min_distance", "molecule_seed", "register", "sample_molecule", "select_molecules",
]


@dataclass
class GenerationResult:
    """Structures of a generation run in molecule order, plus counts and timings.

    ``wall_seconds`` is the whole run (pool start-up included); ``worker_seconds`` the summed per-molecule
    sampling time; ``xtb_seconds`` the summed time inside tblite.
    """

    structures: list[Structure] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    molecules: list[str] = field(default_factory=list)
    n_singlepoints: int = 0
    n_scf_failures: int = 0
    n_rejected: int = 0
    n_abandoned: int = 0
    wall_seconds: float = 0.0
    worker_seconds: float = 0.0
    xtb_seconds: float = 0.0

    @property
    def singlepoints_per_second(self) -> float:
        """xTB single points per wall-clock second, all workers together."""
        return self.n_singlepoints / self.wall_seconds if self.wall_seconds > 0 else 0.0


def select_molecules(molecules: list[Molecule], n: int, selection: str = "spread") -> list[Molecule]:
    """Choose ``n`` molecules: ``"first"`` = the first ``n`` in file order; ``"spread"`` = ``n`` evenly spaced
    over the whole list (the shipped list is grouped by chemistry, so this covers every group)."""
    if selection == "first":
        return molecules[:n]
    if selection == "spread":
        idx = np.unique(np.round(np.linspace(0, len(molecules) - 1, n)).astype(int))
        return [molecules[i] for i in idx]
    raise ConfigError(f"selection: expected 'spread' or 'first', got {selection!r}")


def _run_task(task: tuple[Molecule, SamplingSettings, int]) -> MoleculeResult:
    molecule, settings, seed = task
    return sample_molecule(molecule, settings, seed)


def _largest_first(tasks: list) -> list:
    """Dispatch order for the pool: biggest molecules first, so no worker is left with a long tail.
    (Output order is fixed separately, so this never changes the result.)"""
    from rdkit import Chem

    size = {t[0].name: Chem.AddHs(Chem.MolFromSmiles(t[0].smiles)).GetNumAtoms() for t in tasks}
    return sorted(tasks, key=lambda t: -size[t[0].name])


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def _worker_context():
    """Forkserver (workers fork from a clean server that imported the sampler once) or, where that is
    unavailable, spawn. Never plain fork: the parent may hold OpenMP / torch threads."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["symscale.data.generate.sampling", "tblite.interface"])
        return ctx
    return multiprocessing.get_context("spawn")


def _check(n_molecules: int, structures_per_molecule: int, temperatures, workers: int,
           available: int, smiles_path: Path) -> tuple[float, ...]:
    if int(n_molecules) < 1:
        raise ConfigError(f"molecules: must be >= 1, got {n_molecules}")
    if int(n_molecules) > available:
        raise ConfigError(f"molecules: {n_molecules} requested but {smiles_path} has only {available}")
    if int(structures_per_molecule) < 1:
        raise ConfigError(f"per-molecule: must be >= 1, got {structures_per_molecule}")
    if int(workers) < 1:
        raise ConfigError(f"workers: must be >= 1, got {workers}")
    temps = tuple(float(t) for t in temperatures)
    if not temps or any(not (0.0 < t < 1e5) for t in temps):
        raise ConfigError(f"temperatures: need one or more temperatures in K in (0, 1e5), got {list(temps)}")
    return temps


def generate_structures(*, n_molecules: int, structures_per_molecule: int,
                        temperatures=(300.0, 600.0, 1000.0), workers: int = 1, seed: int = 0,
                        smiles_file: str | Path | None = None, selection: str = "spread",
                        progress: bool = False, **settings) -> GenerationResult:
    """Sample and label the first ``n_molecules`` molecules of ``smiles_file``; see :func:`generate`.

    ``settings`` are further :class:`SamplingSettings` fields (``stride``, ``equilibration_steps``,
    ``timestep_fs``, ``friction_per_fs``, ``accuracy``, ``min_distance``, ``max_failures``).
    """
    smiles_path = Path(smiles_file) if smiles_file is not None else default_smiles_path()
    molecules = load_smiles(smiles_path)
    temps = _check(n_molecules, structures_per_molecule, temperatures, workers, len(molecules), smiles_path)
    try:
        config = SamplingSettings(temperatures=temps, structures_per_molecule=int(structures_per_molecule),
                                  **settings)
    except TypeError as exc:
        raise ConfigError(f"generate: unknown sampling setting ({exc})") from None
    if config.stride < 1 or config.equilibration_steps < 0 or config.timestep_fs <= 0:
        raise ConfigError("stride/equilibration_steps/timestep_fs: need stride >= 1, equilibration >= 0, dt > 0")
    chosen = select_molecules(molecules, int(n_molecules), selection)
    tasks = [(m, config, int(seed)) for m in chosen]
    results: dict[str, MoleculeResult] = {}
    start = time.perf_counter()
    with _progress(progress, len(tasks)) as advance:
        if int(workers) == 1 and os.environ.get("OMP_NUM_THREADS") == "1":
            for task in tasks:
                res = _run_task(task)
                results[res.name] = res
                advance(res)
        else:
            saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            _init_worker()  # spawned children inherit the environment at start-up
            try:
                ctx = _worker_context()
                with ctx.Pool(processes=min(int(workers), len(tasks)), initializer=_init_worker) as pool:
                    for res in pool.imap_unordered(_run_task, _largest_first(tasks), chunksize=1):
                        results[res.name] = res
                        advance(res)
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    out = GenerationResult(wall_seconds=time.perf_counter() - start)
    for molecule in chosen:  # molecule order, whatever order the workers finished in
        res = results[molecule.name]
        out.structures.extend(res.structures)
        out.temperatures.extend(res.temperatures)
        out.molecules.append(res.name)
        out.n_singlepoints += res.n_singlepoints
        out.n_scf_failures += res.n_scf_failures
        out.n_rejected += res.n_rejected
        out.n_abandoned += res.n_abandoned
        out.worker_seconds += res.seconds
        out.xtb_seconds += res.xtb_seconds
    return out


class _progress:
    """A rich progress bar over molecules (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("xTB sampling"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("molecules", total=self.total, info="")
            self._n = 0
        return self._advance

    def _advance(self, res: MoleculeResult) -> None:
        if self._bar is not None:
            self._n += len(res.structures)
            self._bar.update(self._task, advance=1, info=f"{self._n} structures, last {res.name}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def generate(out_dir: str | Path, *, n_molecules: int, structures_per_molecule: int,
             temperatures=(300.0, 600.0, 1000.0), workers: int = 1, seed: int = 0,
             smiles_file: str | Path | None = None, selection: str = "spread", progress: bool = False,
             overwrite: bool = False, **settings) -> Path:
    """Generate a GFN2-xTB labelled dataset and write it in the prepared format.

    Args:
        out_dir: destination directory (written atomically by :func:`symscale.data.write_prepared`).
        n_molecules: how many molecules of the SMILES list to use (see ``selection``).
        structures_per_molecule: structures kept per molecule, split evenly over the temperatures.
        temperatures: Langevin temperatures in K (one trajectory each).
        workers: worker processes (one thread each); the output does not depend on it.
        seed: the run seed (conformers, velocities, thermostat noise, prepared-format splits).
        smiles_file: a ``SMILES<TAB>name`` file; ``None`` = the shipped list.
        selection: ``"spread"`` (evenly over the list) or ``"first"`` (file order).
        progress: show a progress bar.
        overwrite: replace an existing dataset at ``out_dir``; Markdown files there (e.g. a README) are kept.
        **settings: further :class:`SamplingSettings` fields (e.g. ``stride``, ``accuracy``).

    Returns:
        The path of the prepared dataset. Sampling settings and counts (single points, SCF failures,
        rejected geometries) are recorded under ``metadata["reader_options"]["generator"]``.
    """
    from ...outputs import check_output_dir
    from .. import write_prepared

    check_output_dir(out_dir, "prepared", overwrite=overwrite)  # before the (long) labelling
    result = generate_structures(n_molecules=n_molecules, structures_per_molecule=structures_per_molecule,
                                 temperatures=temperatures, workers=workers, seed=seed, smiles_file=smiles_file,
                                 selection=selection, progress=progress, **settings)
    if not result.structures:
        raise ConfigError("generate: every trajectory failed; no structures to write")
    config = SamplingSettings(temperatures=tuple(float(t) for t in temperatures),
                              structures_per_molecule=int(structures_per_molecule), **settings)
    info = {"generator": {
        "method": "GFN2-xTB (tblite), BAOAB Langevin MD from RDKit ETKDGv3 conformers",
        "smiles_file": str(smiles_file) if smiles_file is not None else "symscale/data/resources/molecules.smi",
        "selection": selection, "molecules": result.molecules, "seed": int(seed),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "structure_temperatures_K": {f"{t:g}": result.temperatures.count(t) for t in sorted(set(result.temperatures))},
        "singlepoints": result.n_singlepoints, "scf_failures": result.n_scf_failures,
        "rejected_close_contacts": result.n_rejected, "abandoned_trajectories": result.n_abandoned,
        "wall_seconds": round(result.wall_seconds, 2), "workers": int(workers)}}
    temps = ",".join(f"{t:g}" for t in temperatures)
    source = f"xtb-generate: GFN2-xTB Langevin MD at {temps} K, {len(result.molecules)} molecules"
    out = Path(out_dir)
    kept = {p.name: p.read_bytes() for p in out.glob("*.md")} if overwrite and out.is_dir() else {}
    path = Path(write_prepared(result.structures, out, source=source, seed=int(seed), reader_options=info,
                               overwrite=overwrite))
    for name, data in kept.items():
        if not (path / name).exists():
            (path / name).write_bytes(data)
    return path


from .cli import register  # noqa: E402  (the CLI needs generate defined first)
