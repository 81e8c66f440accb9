"""Readers that turn every supported source into :class:`Structure` records in eV / Å.

Supported sources (chosen by suffix, or by ``format=``):

* ``.xyz`` / ``.extxyz``: extended XYZ via ASE;
* ``.db``: ASE SQLite databases; ``.aselmdb``: ASE-LMDB databases (OMol25) via ``ase-db-backends``;
* ``.npz``: rMD17-style arrays (``nuclear_charges``, ``coords``, ``energies``, ``forces``);
* a prepared directory (``metadata.json``), or a directory of the files above (read in sorted order; a
  ``metadata.npz`` beside OMol25 shards is metadata, not a shard: see :mod:`symscale.data.shards`).

Labels are taken from the given keys, else detected: the attached calculator's ``energy`` / ``forces``,
then ``atoms.info`` / ``atoms.arrays`` / database key-value pairs and data under the common names
(``energy``, ``REF_energy``, ...; ``forces``, ``REF_forces``, ...). The molecule identity (``mol_id``) comes
from ``mol_id``, ``molecule_id``, ``smiles`` or ``source`` when present, else the chemical formula (an
``.npz`` file is one molecule named after the file). The total charge and the spin multiplicity are read from
``charge`` and ``spin`` in ``atoms.info`` / key-value pairs / data when present (OMol25 rows keep them in
``data``; they must be integers). ``where`` conditions (:mod:`symscale.data.select`) select structures while
reading: a row left out is neither converted nor validated.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from ase import units as ase_units
from ase.calculators.calculator import all_properties
from ase.db.sqlite import SQLite3Database
from ase.symbols import Symbols

from ..errors import ConfigError, DataError
from .select import Selection
from .shards import list_shards
from .structure import Structure
from .validate import structure_error, validate_structure

ENERGY_KEYS = ("energy", "REF_energy", "Energy", "total_energy", "dft_energy", "free_energy")
FORCES_KEYS = ("forces", "REF_forces", "force", "dft_forces")
MOL_ID_KEYS = ("mol_id", "molecule_id", "smiles", "source")
#: Keys of the total charge and the spin multiplicity (OMol25 keeps them in each row's ``data``).
CHARGE_KEY, SPIN_KEY = "charge", "spin"
#: Energy units accepted by ``units=``; forces are converted with the same factor per Å.
UNITS = {"eV": 1.0, "kcal/mol": ase_units.kcal / ase_units.mol}
_NPZ_KEYS = {"numbers": ("nuclear_charges", "numbers", "z", "Z"), "positions": ("coords", "positions", "R"),
             "energy": ("energies", "energy", "E"), "forces": ("forces", "F")}


def read_structures(path: str | os.PathLike, *, energy_key: str | None = None, forces_key: str | None = None,
                    units: str = "eV", mol_id_key: str | None = None, format: str | None = None,
                    validate: bool = True, require_labels: bool = True,
                    where: Selection | Sequence[str] | None = None) -> Iterator[Structure]:
    """Iterate the structures of ``path``.

    Args:
        path: a file or directory (see the module docstring).
        energy_key, forces_key: where the labels are stored (info / arrays / key-value / data key, or a
            calculator property name); detected when ``None``.
        units: energy unit of the source, ``"eV"`` or ``"kcal/mol"`` (forces then in that unit per Å);
            labels are converted to eV and eV/Å. Positions are always Å.
        mol_id_key: key holding the molecule identity (detected when ``None``).
        format: ``"extxyz"``, ``"db"``, ``"aselmdb"`` or ``"npz"`` to override the suffix.
        validate: check each selected structure (:func:`symscale.data.validate.validate_structure`).
        require_labels: with ``validate``, a structure without energy or forces is an error.
        where: keep only the structures satisfying every condition (:mod:`symscale.data.select`).

    Raises:
        DataError: missing or unreadable file, unsupported format, malformed or invalid structure (the
        message names the file and the structure index).
    """
    opts = reader_options(energy_key=energy_key, forces_key=forces_key, units=units, mol_id_key=mol_id_key,
                          validate=validate, require_labels=require_labels, where=where)
    shards = list_shards(path, format)  # checks the path and every suffix before reading anything
    return (s for shard in shards for _, s in iter_rows(shard.path, shard.fmt, **opts) if s is not None)


def reader_options(*, energy_key: str | None = None, forces_key: str | None = None, units: str = "eV",
                   mol_id_key: str | None = None, validate: bool = True, require_labels: bool = True,
                   where: Selection | Sequence[str] | None = None) -> dict:
    """The keyword arguments of :func:`iter_rows` for the options of :func:`read_structures` (checked)."""
    if units not in UNITS:
        raise ConfigError(f"units: unknown energy unit {units!r} (choose from {', '.join(UNITS)})")
    return dict(energy_key=energy_key, forces_key=forces_key, scale=UNITS[units], mol_id_key=mol_id_key,
                validate=validate, require_labels=require_labels, where=Selection.of(where))


def iter_rows(path: Path, fmt: str, *, energy_key: str | None, forces_key: str | None, scale: float,
              mol_id_key: str | None, validate: bool, require_labels: bool,
              where: Selection) -> Iterator[tuple[int, Structure | None]]:
    """Every row of one shard as ``(index, structure)``, ``structure`` being ``None`` for a row the selection
    leaves out (so a caller can count rows read). Selected structures are validated when ``validate``."""
    reader = {"extxyz": _read_extxyz, "db": _read_db, "aselmdb": _read_db, "npz": _read_npz,
              "prepared": _read_prepared}[fmt]
    labels = dict(energy_key=energy_key, forces_key=forces_key, scale=scale, mol_id_key=mol_id_key)
    for idx, s in reader(Path(path), fmt=fmt, where=where, **labels):
        if s is not None and validate and fmt != "prepared":  # a prepared dataset was validated when written
            validate_structure(s, idx, str(path), require_labels=require_labels)
        yield idx, s


# ---------------------------------------------------------------------------------------------- ASE sources
def _read_extxyz(path: Path, *, fmt: str, where: Selection, **opts) -> Iterator[tuple[int, Structure | None]]:
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
        if where and not where.matches(atoms.numbers, (atoms.info,), str(path), idx):
            yield idx, None
        else:
            yield idx, _from_atoms(atoms, {}, path, idx, **opts)
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


def open_database(path: Path, fmt: str):
    """An ASE database opened read-only (``.db``: SQLite; ``.aselmdb``: LMDB without a lock file), after
    checking that the file is one; any failure is a one-line DataError naming the file."""
    import ase.db

    if fmt == "db":
        check_ase_sqlite(path)
    else:
        _check_lmdb(path)
    try:
        if fmt == "db":
            db = _ReadOnlySQLite(str(path), create_indices=False)
        else:
            db = ase.db.connect(str(path), type=fmt, readonly=True)
        db.count()  # touches the file: a corrupt database fails here, not at the first row
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot open {fmt} database ({type(exc).__name__}: {exc})") from None
    if not hasattr(db, "close"):
        db.close = lambda: None
    return db


def _read_db(path: Path, *, fmt: str, where: Selection, **opts) -> Iterator[tuple[int, Structure | None]]:
    db = open_database(path, fmt)
    try:
        try:
            rows = db.select()
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: cannot open {fmt} database ({type(exc).__name__}: {exc})") from None
        idx = 0
        while True:
            try:
                row = next(rows)
                data = row.get("data") or {}
                kvp = row.key_value_pairs
                if where and not where.matches(row.numbers, (kvp, data), str(path), idx):
                    yield idx, None
                    idx += 1
                    continue
                parts = _row_parts(row)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise structure_error(str(path), idx, f"cannot read row ({type(exc).__name__}: {exc})") from None
            extra = {**data, **kvp}
            yield idx, _from_parts(*parts, {}, extra, path, idx, **opts)
            idx += 1
    finally:
        db.close()


def _row_parts(row) -> tuple:
    """``(numbers, positions, cell, pbc, arrays, results)`` of a database row, as ``row.toatoms()`` would give
    them, without building an ``Atoms`` object and a calculator per row."""
    numbers = np.asarray(row.numbers)
    arrays = {"numbers": numbers, "positions": np.asarray(row.positions)}
    for key in ("initial_magmoms", "initial_charges", "tags", "masses", "momenta"):
        if key in row:
            arrays[key] = np.asarray(row.get(key))
    results = {prop: row[prop] for prop in all_properties if prop in row}
    return numbers, arrays["positions"], np.asarray(row.cell, dtype=np.float64), np.asarray(row.pbc), arrays, results


def check_ase_sqlite(path: Path) -> None:
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


def _from_atoms(atoms, extra: dict, path: Path, idx: int, **opts) -> Structure:
    """A :class:`Structure` from ``ase.Atoms`` (+ database key-value pairs / data in ``extra``)."""
    calc = getattr(atoms, "calc", None)
    results = dict(getattr(calc, "results", {}) or {}) if calc is not None else {}
    return _from_parts(atoms.numbers, atoms.positions, np.asarray(atoms.cell.array, dtype=np.float64), atoms.pbc,
                       atoms.arrays, results, atoms.info, extra, path, idx, **opts)


def _from_parts(numbers, positions, cell, pbc, arrays: dict, results: dict, info: dict, extra: dict, path: Path,
                idx: int, *, energy_key: str | None, forces_key: str | None, scale: float,
                mol_id_key: str | None) -> Structure:
    """A :class:`Structure` from the pieces of an ``Atoms`` (or database row): labels from the given keys or
    detected, the molecule identity, the total charge and the spin multiplicity."""
    if energy_key is not None:
        energy = _lookup(energy_key, info, results, extra)
        if energy is None:
            found = sorted(set(info) | set(results) | set(extra))
            raise structure_error(str(path), idx, f"no energy under key {energy_key!r} (found: {', '.join(found)})")
    else:
        energy = next((v for k in ENERGY_KEYS if (v := _lookup(k, results, info, extra)) is not None), None)
    if forces_key is not None:
        forces = _lookup(forces_key, arrays, results, extra)
        if forces is None:
            found = sorted(set(arrays) | set(results) | set(extra))
            raise structure_error(str(path), idx, f"no forces under key {forces_key!r} (found: {', '.join(found)})")
    else:
        forces = next((v for k in FORCES_KEYS if (v := _lookup(k, results, arrays, extra)) is not None), None)
    try:
        energy = None if energy is None else float(np.asarray(energy, dtype=np.float64).reshape(())) * scale
        forces = None if forces is None else np.asarray(forces, dtype=np.float64) * scale
    except (TypeError, ValueError) as exc:
        raise structure_error(str(path), idx, f"labels are not numeric ({exc})") from None
    if mol_id_key is not None:
        mol_id = _lookup(mol_id_key, info, extra)
    else:
        mol_id = next((v for k in MOL_ID_KEYS if (v := _lookup(k, info, extra)) is not None), None)
    if mol_id is None:
        mol_id = Symbols(numbers).get_chemical_formula()
    periodic = bool(np.any(pbc))
    return Structure(numbers=np.array(numbers), positions=np.array(positions), energy=energy, forces=forces,
                     cell=cell if periodic else None, pbc=np.array(pbc), mol_id=str(mol_id),
                     charge=_integer(CHARGE_KEY, info, extra, path, idx),
                     spin=_integer(SPIN_KEY, info, extra, path, idx))


def _integer(key: str, info: dict, extra: dict, path: Path, idx: int) -> int | None:
    """The integer stored under ``key`` (charge, spin multiplicity), ``None`` when absent."""
    value = _lookup(key, info, extra)
    if value is None:
        return None
    try:
        number = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise structure_error(str(path), idx, f"{key} {value!r} is not a number") from None
    if not number.is_integer():
        raise structure_error(str(path), idx, f"{key} {value!r} is not an integer")
    if abs(number) >= 2**31 - 1:
        raise structure_error(str(path), idx, f"{key} {value!r} is out of range")
    return int(number)


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


def _read_npz(path: Path, *, fmt: str, where: Selection, energy_key: str | None, forces_key: str | None,
              scale: float, mol_id_key: str | None) -> Iterator[tuple[int, Structure | None]]:
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
    keys = ({"mol_id": mol_id},)
    for i in range(n_struct):
        if where and not where.matches(numbers, keys, str(path), i):
            yield i, None
            continue
        yield i, Structure(numbers=numbers, positions=coords[i], energy=float(energies[i]) * scale,
                           forces=forces[i] * scale, mol_id=mol_id)


# ---------------------------------------------------------------------------------------------- prepared
def _read_prepared(path: Path, *, fmt: str, where: Selection, **opts) -> Iterator[tuple[int, Structure | None]]:
    """The structures of a prepared directory; a selection sees ``mol_id``, ``charge`` and ``spin`` (those
    stored) besides ``n_atoms`` and ``elements``. Labels are stored in eV: reader options do not apply."""
    from .prepared import PreparedDataset

    ds = PreparedDataset(path)
    for i in range(len(ds)):
        s = ds.structure(i)
        if where:
            keys = {k: v for k, v in (("mol_id", s.mol_id), ("charge", s.charge), ("spin", s.spin)) if v is not None}
            if not where.matches(s.numbers, (keys,), str(path), i):
                yield i, None
                continue
        yield i, s
