"""Readers that turn every supported source into :class:`Structure` records in eV / Å.

Supported sources (chosen by suffix, or by ``format=``):

* ``.xyz`` / ``.extxyz``: extended XYZ via ASE;
* ``.db``: ASE SQLite databases; ``.aselmdb``: ASE-LMDB databases (OMol25) via ``ase-db-backends``;
* ``.npz``: rMD17-style arrays (``nuclear_charges``, ``coords``, ``energies``, ``forces``);
* a prepared directory (``metadata.json``), or a directory of the files above (read in sorted order).

Labels are taken from the given keys, else detected: the attached calculator's ``energy`` / ``forces``,
then ``atoms.info`` / ``atoms.arrays`` / database key-value pairs and data under the common names
(``energy``, ``REF_energy``, ...; ``forces``, ``REF_forces``, ...). The molecule identity (``mol_id``) comes
from ``mol_id``, ``molecule_id``, ``smiles`` or ``source`` when present, else the chemical formula (an
``.npz`` file is one molecule named after the file).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from ase import units as ase_units
from ase.db.sqlite import SQLite3Database

from ..errors import ConfigError, DataError
from .structure import Structure
from .validate import structure_error, validate_structure

ENERGY_KEYS = ("energy", "REF_energy", "Energy", "total_energy", "dft_energy", "free_energy")
FORCES_KEYS = ("forces", "REF_forces", "force", "dft_forces")
MOL_ID_KEYS = ("mol_id", "molecule_id", "smiles", "source")
#: Energy units accepted by ``units=``; forces are converted with the same factor per Å.
UNITS = {"eV": 1.0, "kcal/mol": ase_units.kcal / ase_units.mol}
SUFFIXES = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "db", ".aselmdb": "aselmdb", ".npz": "npz"}
_NPZ_KEYS = {"numbers": ("nuclear_charges", "numbers", "z", "Z"), "positions": ("coords", "positions", "R"),
             "energy": ("energies", "energy", "E"), "forces": ("forces", "F")}


def read_structures(path: str | os.PathLike, *, energy_key: str | None = None, forces_key: str | None = None,
                    units: str = "eV", mol_id_key: str | None = None, format: str | None = None,
                    validate: bool = True, require_labels: bool = True) -> Iterator[Structure]:
    """Iterate the structures of ``path``.

    Args:
        path: a file or directory (see the module docstring).
        energy_key, forces_key: where the labels are stored (info / arrays / key-value / data key, or a
            calculator property name); detected when ``None``.
        units: energy unit of the source, ``"eV"`` or ``"kcal/mol"`` (forces then in that unit per Å);
            labels are converted to eV and eV/Å. Positions are always Å.
        mol_id_key: key holding the molecule identity (detected when ``None``).
        format: ``"extxyz"``, ``"db"``, ``"aselmdb"`` or ``"npz"`` to override the suffix.
        validate: check each structure (:func:`symscale.data.validate.validate_structure`).
        require_labels: with ``validate``, a structure without energy or forces is an error.

    Raises:
        DataError: missing or unreadable file, unsupported format, malformed or invalid structure (the
        message names the file and the structure index).
    """
    if units not in UNITS:
        raise ConfigError(f"units: unknown energy unit {units!r} (choose from {', '.join(UNITS)})")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    opts = dict(energy_key=energy_key, forces_key=forces_key, scale=UNITS[units], mol_id_key=mol_id_key,
                validate=validate, require_labels=require_labels)
    if p.is_dir():
        if (p / "metadata.json").is_file():
            from .prepared import PreparedDataset

            return iter(PreparedDataset(p))
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{p}: directory holds no prepared dataset and no {'/'.join(SUFFIXES)} files")
        return (s for f in files for s in _read_file(f, SUFFIXES[f.suffix.lower()], opts))
    fmt = format or SUFFIXES.get(p.suffix.lower())
    if fmt not in set(SUFFIXES.values()):
        raise DataError(f"{p}: unsupported format {p.suffix or format!r} "
                        f"(expected {', '.join(SUFFIXES)} or a prepared directory)")
    return _read_file(p, fmt, opts)


def _read_file(path: Path, fmt: str, opts: dict) -> Iterator[Structure]:
    reader = {"extxyz": _read_extxyz, "db": _read_db, "aselmdb": _read_db, "npz": _read_npz}[fmt]
    opts = dict(opts)
    validate, require = opts.pop("validate"), opts.pop("require_labels")
    for idx, s in enumerate(reader(path, fmt=fmt, **opts)):
        if validate:
            validate_structure(s, idx, str(path), require_labels=require)
        yield s


# ---------------------------------------------------------------------------------------------- ASE sources
def _read_extxyz(path: Path, *, fmt: str, **opts) -> Iterator[Structure]:
    import ase.io

    _check_complete_text(path)
    frames = ase.io.iread(str(path), index=":", format="extxyz")
    idx = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except KeyError as exc:  # ASE's message for an unknown chemical symbol is the bare symbol
            raise structure_error(str(path), idx, f"unknown element symbol {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any parser failure becomes a one-line DataError
            raise structure_error(str(path), idx, f"cannot parse ({type(exc).__name__}: {exc})") from None
        yield _from_atoms(atoms, {}, path, idx, **opts)
        idx += 1


def _check_complete_text(path: Path) -> None:
    """Refuse a text file whose last line is cut: ASE reads a frame whose last number lost its final digits
    as a complete (wrong) structure. Every writer ends a frame with a newline; a file that does not was
    truncated (an interrupted copy or write)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            raise DataError(f"{path}: empty file (no structures)")
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
    if last not in (b"\n", b"\r"):
        raise DataError(f"{path}: the file ends inside a frame (no newline after its last line: truncated?)")


def _read_db(path: Path, *, fmt: str, **opts) -> Iterator[Structure]:
    import ase.db

    if fmt == "db":
        _check_ase_sqlite(path)
    else:
        _check_lmdb(path)
    try:
        if fmt == "db":
            db = _ReadOnlySQLite(str(path), create_indices=False)
        else:
            db = ase.db.connect(str(path), type=fmt, readonly=True)
        db.count()  # touches the file: a corrupt database fails here, not at the first row
        rows = db.select()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot open {fmt} database ({type(exc).__name__}: {exc})") from None
    try:
        idx = 0
        while True:
            try:
                row = next(rows)
                atoms = row.toatoms()
                extra = dict(row.get("data") or {})
                extra.update(row.key_value_pairs)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001
                raise structure_error(str(path), idx, f"cannot read row ({type(exc).__name__}: {exc})") from None
            yield _from_atoms(atoms, extra, path, idx, **opts)
            idx += 1
    finally:
        if hasattr(db, "close"):
            db.close()


def _check_ase_sqlite(path: Path) -> None:
    """Refuse a ``.db`` file that is not an ASE SQLite database, without writing to it (ASE's own
    ``connect`` would turn an empty or foreign SQLite file into an ASE database)."""
    with open(path, "rb") as fh:
        header = fh.read(16)
    if not header:
        raise DataError(f"{path}: cannot open db database (empty file)")
    if header != b"SQLite format 3\x00":
        raise DataError(f"{path}: cannot open db database (not an SQLite file)")
    try:
        con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open db database ({exc})") from None
    if "systems" not in tables:
        raise DataError(f"{path}: cannot open db database (an SQLite file without ASE's 'systems' table)")


def _check_lmdb(path: Path) -> None:
    """Refuse a file LMDB cannot open, before ase-db-backends builds a database object around it (whose
    destructor then fails again, printing a traceback after the error)."""
    import lmdb

    if path.stat().st_size == 0:
        raise DataError(f"{path}: cannot open aselmdb database (empty file)")
    try:
        lmdb.open(str(path), subdir=False, readonly=True, lock=False).close()
    except lmdb.Error as exc:
        raise DataError(f"{path}: cannot open aselmdb database ({type(exc).__name__}: {exc})") from None


class _ReadOnlySQLite(SQLite3Database):
    """ASE's SQLite backend with every connection opened read-only: reading never changes the file."""

    def _connect(self):
        return sqlite3.connect(f"{Path(self.filename).absolute().as_uri()}?mode=ro", uri=True, timeout=20)


def structure_from_atoms(atoms, *, energy_key: str | None = None, forces_key: str | None = None,
                         source: str = "<atoms>", index: int = 0) -> Structure:
    """A :class:`Structure` from one ``ase.Atoms`` with the readers' label detection: the given keys, else
    a calculator's results, else the common keys (``energy``/``REF_energy``, ``forces``/``REF_forces``, ...).
    Unlabelled atoms give ``energy=None`` / ``forces=None``; an explicitly named key that is missing is a
    :class:`DataError` naming ``source`` and ``index``."""
    return _from_atoms(atoms, {}, Path(source), index, energy_key=energy_key, forces_key=forces_key,
                       scale=1.0, mol_id_key=None)


def _lookup(key: str, *sources: dict) -> Any:
    for src in sources:
        if key in src and src[key] is not None:
            return src[key]
    return None


def _from_atoms(atoms, extra: dict, path: Path, idx: int, *, energy_key: str | None, forces_key: str | None,
                scale: float, mol_id_key: str | None) -> Structure:
    """A :class:`Structure` from ``ase.Atoms`` (+ database key-value pairs / data in ``extra``)."""
    calc = getattr(atoms, "calc", None)
    results = dict(getattr(calc, "results", {}) or {}) if calc is not None else {}
    if energy_key is not None:
        energy = _lookup(energy_key, atoms.info, results, extra)
        if energy is None:
            found = sorted(set(atoms.info) | set(results) | set(extra))
            raise structure_error(str(path), idx, f"no energy under key {energy_key!r} (found: {', '.join(found)})")
    else:
        energy = next((v for k in ENERGY_KEYS if (v := _lookup(k, results, atoms.info, extra)) is not None), None)
    if forces_key is not None:
        forces = _lookup(forces_key, atoms.arrays, results, extra)
        if forces is None:
            found = sorted(set(atoms.arrays) | set(results) | set(extra))
            raise structure_error(str(path), idx, f"no forces under key {forces_key!r} (found: {', '.join(found)})")
    else:
        forces = next((v for k in FORCES_KEYS if (v := _lookup(k, results, atoms.arrays, extra)) is not None),
                      None)
    try:
        energy = None if energy is None else float(np.asarray(energy, dtype=np.float64).reshape(())) * scale
        forces = None if forces is None else np.asarray(forces, dtype=np.float64) * scale
    except (TypeError, ValueError) as exc:
        raise structure_error(str(path), idx, f"labels are not numeric ({exc})") from None
    if mol_id_key is not None:
        mol_id = _lookup(mol_id_key, atoms.info, extra)
    else:
        mol_id = next((v for k in MOL_ID_KEYS if (v := _lookup(k, atoms.info, extra)) is not None), None)
    if mol_id is None:
        mol_id = atoms.get_chemical_formula()
    return Structure.from_atoms(atoms, energy, forces, mol_id=str(mol_id))


# ---------------------------------------------------------------------------------------------- npz
def _npz_array(data, path: Path, role: str, key: str | None) -> np.ndarray:
    names = (key,) if key is not None else _NPZ_KEYS[role]
    for name in names:
        if name in data.files:
            try:
                return np.asarray(data[name])
            except ValueError as exc:  # object (pickled) arrays are never loaded
                raise DataError(f"{path}: array {name!r} cannot be read ({exc})") from None
    raise DataError(f"{path}: no {role} array (looked for {', '.join(names)}; found {', '.join(data.files)})")


def _read_npz(path: Path, *, fmt: str, energy_key: str | None, forces_key: str | None, scale: float,
              mol_id_key: str | None) -> Iterator[Structure]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read npz ({type(exc).__name__}: {exc})") from None
    with data:
        numbers = _npz_array(data, path, "numbers", None).astype(np.int64).reshape(-1)
        coords = _npz_array(data, path, "positions", None).astype(np.float64)
        energies = _npz_array(data, path, "energy", energy_key).astype(np.float64).reshape(-1)
        forces = _npz_array(data, path, "forces", forces_key).astype(np.float64)
        mol_id = str(data[mol_id_key]) if mol_id_key is not None and mol_id_key in data.files else path.stem
    n = len(numbers)
    if coords.ndim == 2:
        coords = coords[None]
    if coords.ndim != 3 or coords.shape[1:] != (n, 3):
        raise DataError(f"{path}: coords have shape {coords.shape}, expected (S, {n}, 3) for {n} nuclear charges")
    n_struct = coords.shape[0]
    if energies.shape != (n_struct,):
        raise DataError(f"{path}: energies have shape {energies.shape}, expected ({n_struct},)")
    if forces.shape != (n_struct, n, 3):
        raise DataError(f"{path}: forces have shape {forces.shape}, expected ({n_struct}, {n}, 3)")
    for i in range(n_struct):
        yield Structure(numbers=numbers, positions=coords[i], energy=float(energies[i]) * scale,
                        forces=forces[i] * scale, mol_id=mol_id)
