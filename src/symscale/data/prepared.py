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
    split_<name>.npy   int64 sorted structure indices of each split (train, val, test)

Positions and forces are stored in float32 (≈1e-7 relative precision, far below the label noise) to keep
the embedded default dataset small; energies stay float64 because totals reach 1e4–1e5 eV. The directory
is written under a temporary name beside the target and renamed at the very end, so a failed
preparation leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ase.data import chemical_symbols

from ..atomic import apply_umask
from ..errors import DataError
from ..outputs import check_output_dir, mark_dir
from . import fingerprint
from .splits import SPLIT_NAMES, make_splits, mol_labels
from .stats import atom_ranges, fit_normalization
from .structure import Structure
from .validate import validate_structure

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
    out = check_output_dir(out_dir, "prepared", overwrite=overwrite, sources=(source,))
    numbers, positions, forces, energy, counts, mol_ids, cells, pbcs = [], [], [], [], [], [], [], []
    for idx, s in enumerate(structures):
        validate_structure(s, idx, source)
        numbers.append(s.numbers)
        positions.append(s.positions)
        forces.append(s.forces)
        energy.append(float(s.energy))
        counts.append(s.n_atoms)
        mol_ids.append(s.mol_id)
        cells.append(s.cell if s.cell is not None else np.zeros((3, 3)))
        pbcs.append(s.pbc if s.cell is not None else np.zeros(3, dtype=bool))
    if not counts:
        raise DataError(f"{source}: no structures found")
    arrays: dict[str, np.ndarray] = {
        "numbers": np.concatenate(numbers).astype(np.int8),
        "positions": np.concatenate(positions).astype(POSITION_DTYPE),
        "forces": np.concatenate(forces).astype(FORCE_DTYPE),
        "energy": np.asarray(energy, dtype=np.float64),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    }
    mol_index, mol_names = mol_labels(mol_ids)
    arrays["mol_index"] = mol_index.astype(np.int32)
    periodic = bool(np.any(pbcs))
    if periodic:
        arrays["cell"] = np.asarray(cells, dtype=np.float64)
        arrays["pbc"] = np.asarray(pbcs, dtype=bool)
    has_ids = any(m is not None for m in mol_ids)
    splits, method = make_splits(len(counts), mol_index if has_ids else None, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
    norm = fit_normalization(arrays["numbers"], arrays["offsets"], arrays["energy"], arrays["forces"],
                             splits["train"])
    n_atoms = np.diff(arrays["offsets"])
    elements = sorted(int(z) for z in np.unique(arrays["numbers"]))
    metadata: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "reader_options": dict(reader_options or {}),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å"},
        "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
        "counts": {"structures": len(counts), "atoms": int(n_atoms.sum()),
                   "molecules": len({m for m in mol_ids if m is not None}),
                   "min_atoms": int(n_atoms.min()), "max_atoms": int(n_atoms.max())},
        "elements": elements,
        "element_symbols": [chemical_symbols[z] for z in elements],
        "periodic": periodic,
        "splits": {"method": method, "seed": int(seed), "val_fraction": float(val_fraction),
                   "test_fraction": float(test_fraction),
                   **{name: {"file": f"split_{name}.npy", "count": int(len(idx)),
                             "atoms": int(n_atoms[idx].sum())} for name, idx in splits.items()}},
        "normalization": {"e0": {str(z): v for z, v in norm["e0"].items()},
                          "energy_scale": norm["energy_scale"], "force_scale": norm["force_scale"],
                          "fitted_on": "train", "force_scale_kind": "rms_of_components",
                          "energy_scale_kind": "rms_of_per_atom_residual", "notes": norm["notes"]},
    }
    _atomic_write(out, arrays, splits, mol_names, metadata, overwrite)
    return out


def _atomic_write(out: Path, arrays: dict[str, np.ndarray], splits: dict[str, np.ndarray],
                  mol_names: list[str], metadata: dict, overwrite: bool) -> None:
    created_parents = [p for p in reversed(out.absolute().parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    trash: Path | None = None
    try:
        apply_umask(tmp, directory=True)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        for name, idx in splits.items():
            np.save(tmp / f"split_{name}.npy", np.asarray(idx, dtype=np.int64))
        (tmp / "mol_ids.json").write_text(json.dumps(mol_names))
        metadata["fingerprint"] = fingerprint.record(tmp)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
        mark_dir(tmp, "prepared")
        if out.exists():
            if any(out.iterdir()):
                check_output_dir(out, "prepared", overwrite=overwrite)  # again: it may have changed meanwhile
                trash = out.parent / f".{out.name}.old-{os.getpid()}"
                os.rename(out, trash)
            else:
                out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None and not out.exists():
            os.rename(trash, out)
            trash = None
        for p in reversed(created_parents):
            try:
                p.rmdir()
            except OSError:
                break
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reading
class PreparedDataset:
    """A prepared dataset directory, memory-mapped.

    Attributes:
        path: the directory.
        metadata: the parsed ``metadata.json``.
        numbers, positions, forces, energy, offsets, mol_index: the (read-only, memory-mapped) arrays.
        cell, pbc: per-structure cells and periodic flags, or ``None`` for a molecular dataset.
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
        n_struct, n_at = len(self.energy), len(self.numbers)
        if (len(self.offsets) != n_struct + 1 or self.offsets[-1] != n_at or self.positions.shape != (n_at, 3)
                or self.forces.shape != (n_at, 3) or len(self.mol_index) != n_struct):
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
                         mol_id=mol or None)

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
        path: a prepared directory, a raw source (``.xyz``/``.extxyz``/``.db``/``.aselmdb``/``.npz``), an
            already open :class:`PreparedDataset`, or ``None`` for the embedded default dataset.
        reader_options: passed to :func:`symscale.data.readers.read_structures` for a raw source, plus the
            split options ``seed``, ``val_fraction``, ``test_fraction``.

    A raw source is prepared into a temporary directory that lives as long as the returned object.
    """
    if isinstance(path, PreparedDataset):
        return path
    if path is None:
        default = default_dataset_path()
        if not (default / "metadata.json").is_file():
            raise DataError(f"{default}: the embedded default dataset is missing "
                            "(create it with `symscale data generate` or pass a dataset path)")
        return PreparedDataset(default)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir() and (p / "metadata.json").is_file():
        return PreparedDataset(p)
    from .readers import read_structures

    split_opts = {k: reader_options.pop(k) for k in ("seed", "val_fraction", "test_fraction")
                  if k in reader_options}
    tmp = tempfile.TemporaryDirectory(prefix="symscale-prepared-")
    try:
        out = write_prepared(read_structures(p, **reader_options), Path(tmp.name) / "data", source=str(p),
                             reader_options=reader_options, **split_opts)
        ds = PreparedDataset(out)
    except BaseException:
        tmp.cleanup()
        raise
    ds._tmpdir = tmp  # removed when the dataset is garbage-collected
    return ds
