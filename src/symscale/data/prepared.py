"""The prepared dataset format: contiguous numpy arrays, memory-mapped on read.

A prepared dataset is a directory (see ``docs/data.md`` for every file and metadata key)::

    metadata.json      format version, source, counts, elements, splits, normalisation, units, command
    numbers.npy        (n_atoms_total,) int8 atomic numbers of all structures, concatenated
    positions.npy      (n_atoms_total, 3) float32 positions in Å
    forces.npy         (n_atoms_total, 3) float32 forces in eV/Å
    energy.npy         (S,) float64 total energies in eV
    offsets.npy        (S + 1,) int64: structure i owns atoms offsets[i]:offsets[i+1]
    mol_index.npy      (S,) int32 index into mol_ids.json (molecule identity of each structure)
    mol_ids.json       list of molecule identities ("" = structure without identity)
    cell.npy, pbc.npy  (S, 3, 3) float64 / (S, 3) bool, only when some structure is periodic
    charge.npy         (S,) int32 total charges, only when the source gives every structure one
    spin.npy           (S,) int32 spin multiplicities, only when the source gives every structure one
    split_<name>.npy   int64 sorted structure indices of each split (train, val, test)

Positions and forces are stored in float32 (≈1e-7 relative precision, far below the label noise) to keep
the embedded default dataset small; energies stay float64 because totals reach 1e4–1e5 eV. The directory
is written under a hidden name beside the target and renamed at the very end, so a failed preparation
leaves nothing that looks finished (:mod:`symscale.data.prepare`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from . import fingerprint
from .splits import SPLIT_NAMES
from .stats import atom_ranges
from .structure import Structure

FORMAT_NAME = "symscale-prepared"
FORMAT_VERSION = 1
POSITION_DTYPE = np.float32
FORCE_DTYPE = np.float32
_REQUIRED = ("numbers.npy", "positions.npy", "forces.npy", "energy.npy", "offsets.npy", "mol_index.npy")


def default_dataset_path() -> Path:
    """Where the embedded default dataset lives (``src/symscale/data/default/``)."""
    return Path(__file__).resolve().parent / "default"


# ---------------------------------------------------------------------------------------------- writing
def write_prepared(structures: Iterable[Structure], out_dir: str | os.PathLike, *, source: str,
                   seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.0,
                   command: str | None = None, reader_options: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Validate ``structures`` and write them as a prepared dataset at ``out_dir`` (atomically).

    The structures are consumed once and written one block at a time (the streaming writer of
    :mod:`symscale.data.prepare`), so an iterable of any length fits in memory. A source on disk is better
    prepared with :func:`symscale.data.prepare.prepare_source` (parallel, resumable, ``where``).

    Args:
        structures: labelled structures (energy and forces are required).
        out_dir: target directory; it must not exist (or be empty) unless ``overwrite``.
        source: name of the origin (a file path), recorded in metadata and used in error messages.
        seed, val_fraction, test_fraction: the split (see :func:`symscale.data.splits.make_splits`).
        command: the creating command line recorded in metadata (default: ``sys.argv``).
        reader_options: reader options recorded in metadata (e.g. energy key, units).
        overwrite: replace an existing ``out_dir``; only a prepared dataset symscale wrote is ever replaced
            (see :mod:`symscale.outputs`).

    Returns:
        The path of the written directory.

    Raises:
        DataError: on an invalid structure (``"<source>: structure <i>: <what>"``) or no structures;
        OutputError: ``out_dir`` cannot be written (checked before reading anything). Nothing is left on
        disk in either case.
    """
    from .prepare import write_structures

    return write_structures(structures, out_dir, source=source, seed=seed, val_fraction=val_fraction,
                            test_fraction=test_fraction, command=command, reader_options=reader_options,
                            overwrite=overwrite)


# ---------------------------------------------------------------------------------------------- reading
class PreparedDataset:
    """A prepared dataset directory, memory-mapped.

    Attributes:
        path: the directory.
        metadata: the parsed ``metadata.json``.
        numbers, positions, forces, energy, offsets, mol_index: the (read-only, memory-mapped) arrays.
        cell, pbc: per-structure cells and periodic flags, or ``None`` for a molecular dataset.
        charge, spin: per-structure total charge and spin multiplicity (int32), or ``None`` when the source
            gave none.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_file = self.path / "metadata.json"
        if not meta_file.is_file():
            raise DataError(f"{self.path}: not a prepared dataset (no metadata.json)")
        try:
            self.metadata: dict = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{meta_file}: unreadable metadata ({exc})") from None
        version = self.metadata.get("format_version")
        if self.metadata.get("format") != FORMAT_NAME or not isinstance(version, int):
            raise DataError(f"{meta_file}: not a {FORMAT_NAME} metadata file")
        if version > FORMAT_VERSION:
            raise DataError(f"{meta_file}: format_version {version} is newer than supported ({FORMAT_VERSION})")
        for name in _REQUIRED:
            if not (self.path / name).is_file():
                raise DataError(f"{self.path}: missing {name}")
        self.numbers = self._load("numbers")
        self.positions = self._load("positions")
        self.forces = self._load("forces")
        self.energy = self._load("energy")
        self.offsets = np.asarray(self._load("offsets"), dtype=np.int64)
        self.mol_index = self._load("mol_index")
        periodic = (self.path / "cell.npy").is_file()
        self.cell = self._load("cell") if periodic else None
        self.pbc = self._load("pbc") if periodic else None
        self.charge = self._load("charge") if (self.path / "charge.npy").is_file() else None
        self.spin = self._load("spin") if (self.path / "spin.npy").is_file() else None
        n_struct, n_at = len(self.energy), len(self.numbers)
        if (len(self.offsets) != n_struct + 1 or self.offsets[-1] != n_at or self.positions.shape != (n_at, 3)
                or self.forces.shape != (n_at, 3) or len(self.mol_index) != n_struct
                or any(a is not None and a.shape != (n_struct,) for a in (self.charge, self.spin))):
            raise DataError(f"{self.path}: inconsistent array shapes (corrupted prepared dataset)")
        self._mol_ids: list[str] | None = None
        self._fingerprint: str | None = None
        self._splits: dict[str, np.ndarray] = {}

    def _load(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path / (name + '.npy')}: unreadable ({exc})") from None

    # ------------------------------------------------------------------ sizes and labels
    def __len__(self) -> int:
        return int(len(self.energy))

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, structures={len(self)}, atoms={len(self.numbers)})"

    @property
    def n_atoms(self) -> np.ndarray:
        """``(S,)`` atoms per structure (int64)."""
        return np.diff(self.offsets)

    @property
    def elements(self) -> list[int]:
        return list(self.metadata.get("elements", []))

    @property
    def normalization(self) -> dict:
        """``{"e0": {Z: eV}, "energy_scale": eV/atom, "force_scale": eV/Å}`` fitted on the training split."""
        norm = self.metadata["normalization"]
        return {"e0": {int(z): float(v) for z, v in norm["e0"].items()},
                "energy_scale": float(norm["energy_scale"]), "force_scale": float(norm["force_scale"])}

    @property
    def fingerprint(self) -> str:
        """SHA-256 content fingerprint, checked against the one recorded at preparation (see
        :mod:`symscale.data.fingerprint`; cheap when no file changed). Raises ``DataError`` when the content
        no longer matches what was prepared."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint.verify(self.path, self.metadata.get("fingerprint"))
        return self._fingerprint

    @property
    def mol_ids(self) -> list[str]:
        if self._mol_ids is None:
            f = self.path / "mol_ids.json"
            self._mol_ids = json.loads(f.read_text()) if f.is_file() else []
        return self._mol_ids

    def split_names(self) -> list[str]:
        return [n for n in SPLIT_NAMES if isinstance(self.metadata.get("splits", {}).get(n), dict)]

    def split(self, name: str) -> np.ndarray:
        """Sorted int64 structure indices of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in self._splits:
            entry = self.metadata.get("splits", {}).get(name)
            if not isinstance(entry, dict):
                raise DataError(f"{self.path}: no split {name!r} (available: {', '.join(self.split_names())})")
            if "indices" in entry:
                idx = np.asarray(entry["indices"], dtype=np.int64)
            else:
                f = self.path / entry["file"]
                if not f.is_file():
                    raise DataError(f"{self.path}: missing {entry['file']}")
                idx = np.asarray(np.load(f, allow_pickle=False), dtype=np.int64)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
                raise DataError(f"{self.path}: split {name!r} has indices outside 0..{len(self) - 1}")
            self._splits[name] = idx
        return self._splits[name]

    # ------------------------------------------------------------------ access
    def structure(self, i: int) -> Structure:
        """Structure ``i`` as a :class:`Structure` (float64 copies of the stored arrays)."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"structure index {i} out of range for {len(self)} structures")
        i %= len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        mol = self.mol_ids[int(self.mol_index[i])] if self.mol_ids else ""
        return Structure(numbers=self.numbers[a:b], positions=self.positions[a:b], energy=float(self.energy[i]),
                         forces=self.forces[a:b], cell=None if self.cell is None else self.cell[i],
                         pbc=np.zeros(3, dtype=bool) if self.pbc is None else self.pbc[i],
                         mol_id=mol or None, charge=None if self.charge is None else int(self.charge[i]),
                         spin=None if self.spin is None else int(self.spin[i]))

    def structures(self, indices: Iterable[int]) -> list[Structure]:
        return [self.structure(i) for i in indices]

    def __iter__(self):
        for i in range(len(self)):
            yield self.structure(i)

    def atom_indices(self, indices: np.ndarray) -> np.ndarray:
        """Concatenated atom indices of the structures ``indices`` (vectorised)."""
        return atom_ranges(self.offsets, indices)


def open_dataset(path: str | os.PathLike | PreparedDataset | None = None, **reader_options) -> PreparedDataset:
    """Open a dataset for training.

    Args:
        path: a prepared directory, a raw source (``.xyz``/``.extxyz``/``.db``/``.aselmdb``/``.npz`` or a
            directory of them), an already open :class:`PreparedDataset`, or ``None`` for the embedded
            default dataset.
        reader_options: options of :func:`symscale.data.prepare.prepare_source` for a raw source: the reader
            options, ``where``, the split options ``seed``, ``val_fraction``, ``test_fraction``, ``workers``.

    A raw source is prepared into a temporary directory that lives as long as the returned object. With a
    non-empty ``where`` any source, a prepared directory or the default dataset included, is prepared again
    into a temporary directory holding the selected structures only.
    """
    if isinstance(path, PreparedDataset) and not reader_options.get("where"):
        return path
    if path is None or isinstance(path, PreparedDataset):
        path = default_dataset_path() if path is None else path.path
        if not (Path(path) / "metadata.json").is_file():
            raise DataError(f"{path}: the embedded default dataset is missing "
                            "(create it with `symscale data generate` or pass a dataset path)")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir() and (p / "metadata.json").is_file() and not reader_options.get("where"):
        return PreparedDataset(p)
    from .prepare import temporary_prepare

    reader_options.setdefault("note", lambda line: print(f"note: {line}", file=sys.stderr))
    out, tmp = temporary_prepare(p, **reader_options)
    ds = PreparedDataset(out)
    ds._tmpdir = tmp  # removed when the dataset is garbage-collected
    return ds
