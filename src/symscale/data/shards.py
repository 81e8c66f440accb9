"""Shards: the independent pieces a source is prepared in, found without reading a structure.

A *source* is a file, a prepared directory, or a directory of files; each file of a directory is one
*shard* (read in sorted name order, not recursively), and a single file or a prepared directory is one shard.
OMol25 is shipped as directories of many ``.aselmdb`` shards (``train_4M/`` holds ~80), often with a
``metadata.npz`` beside them whose ``natoms`` array holds the atom count of every structure, concatenated
over the shards in sorted name order; that file is metadata, never a shard.

:func:`plan_source` lists the shards with their size and modification time (the stamp that lets an
interrupted preparation reuse a finished shard) and counts their rows where that is cheap: ASE-LMDB and ASE
SQLite databases store their row count, an ``.npz`` file its array shapes, a prepared directory its
metadata; extended XYZ files are not counted (that would mean parsing them). Opening every database here
also means a shard that cannot be opened is reported before any work starts. ``metadata.npz`` gives the
atom totals when its ``natoms`` has one entry per counted row; when it is absent, unreadable or does not
match, the plan says so in ``notes`` and the rows counted stand.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import DataError

SUFFIXES = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "db", ".aselmdb": "aselmdb", ".npz": "npz"}
#: The OMol25 per-structure metadata file that may sit beside the shards (never read as a shard).
METADATA_NPZ = "metadata.npz"


@dataclass(frozen=True)
class Shard:
    """One file (or prepared directory) of a source.

    Attributes:
        index: position in the source (sorted name order).
        path: the file.
        fmt: ``extxyz``, ``db``, ``aselmdb``, ``npz`` or ``prepared``.
        size, mtime_ns: the stamp that identifies this version of the file.
        rows: structures stored (before any selection), or ``None`` when counting would mean reading it.
        atoms: atoms stored, when ``metadata.npz`` (or a prepared directory) says.
    """

    index: int
    path: Path
    fmt: str
    size: int
    mtime_ns: int
    rows: int | None = None
    atoms: int | None = None

    @property
    def stamp(self) -> list:
        """``[name, size, mtime_ns]``: a finished shard is reused only while this is unchanged."""
        return [self.path.name, self.size, self.mtime_ns]


@dataclass
class SourcePlan:
    """The shards of a source and what is known of its size before reading it."""

    source: Path
    shards: list[Shard]
    notes: list[str] = field(default_factory=list)
    metadata_npz: str = "absent"  # absent | used | ignored

    @property
    def rows(self) -> int | None:
        """Structures in the source (before selection), or ``None`` when a shard is not counted."""
        counts = [s.rows for s in self.shards]
        return None if any(c is None for c in counts) else int(sum(counts))

    @property
    def atoms(self) -> int | None:
        counts = [s.atoms for s in self.shards]
        return None if any(c is None for c in counts) else int(sum(counts))


def format_of(path: Path, format: str | None = None) -> str:
    """The format of a source file from ``format`` or its suffix; DataError when unsupported."""
    fmt = format or SUFFIXES.get(path.suffix.lower())
    if fmt not in set(SUFFIXES.values()):
        raise DataError(f"{path}: unsupported format {path.suffix or format!r} "
                        f"(expected {', '.join(SUFFIXES)} or a prepared directory)")
    return fmt


def is_prepared_dir(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.json").is_file()


def source_files(directory: Path) -> list[Path]:
    """The shard files of a directory source: every supported file in it, sorted by name, without
    ``metadata.npz``. DataError when there is none."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES
                   and f.name != METADATA_NPZ)
    if not files:
        raise DataError(f"{directory}: directory holds no prepared dataset and no {'/'.join(SUFFIXES)} files")
    return files


def list_shards(path: str | os.PathLike, format: str | None = None) -> list[Shard]:
    """The shards of ``path`` with their stamps; nothing is opened (see :func:`plan_source` for counts)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if is_prepared_dir(p):
        meta = p / "metadata.json"
        return [Shard(0, p, "prepared", *_stat(meta))]
    if p.is_dir():
        return [Shard(i, f, format_of(f, format), *_stat(f)) for i, f in enumerate(source_files(p))]
    return [Shard(0, p, format_of(p, format), *_stat(p))]


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def source_stamp(path: str | os.PathLike, format: str | None = None) -> list:
    """Stamps of every shard of a source (and of its ``metadata.npz``): equal stamps mean unchanged files."""
    p = Path(path)
    stamps = [s.stamp for s in list_shards(p, format)]
    if p.is_dir() and (p / METADATA_NPZ).is_file():
        stamps.append([METADATA_NPZ, *_stat(p / METADATA_NPZ)])
    return stamps


def plan_source(path: str | os.PathLike, format: str | None = None) -> SourcePlan:
    """The shards of ``path`` with row counts where cheap, and atom counts from ``metadata.npz``.

    Raises:
        DataError: no such path, an unsupported file, or a database shard that cannot be opened (the message
        names the shard).
    """
    p = Path(path)
    shards = [_counted(s) for s in list_shards(p, format)]
    plan = SourcePlan(p, shards)
    if p.is_dir() and not is_prepared_dir(p) and (p / METADATA_NPZ).is_file():
        _use_metadata(plan, p / METADATA_NPZ)
    return plan


def _counted(shard: Shard) -> Shard:
    if shard.fmt == "prepared":
        counts = json.loads((shard.path / "metadata.json").read_text()).get("counts", {})
        return replace(shard, rows=counts.get("structures"), atoms=counts.get("atoms"))
    return replace(shard, rows=count_rows(shard.path, shard.fmt))


def count_rows(path: Path, fmt: str) -> int | None:
    """Rows of one file without reading them (``None`` for extended XYZ); opening failures are DataErrors."""
    if fmt == "aselmdb":
        from .readers import open_database

        db = open_database(path, fmt)
        try:
            return int(db.count())
        finally:
            db.close()
    if fmt == "db":
        from .readers import check_ase_sqlite

        check_ase_sqlite(path)
        try:
            con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                return int(con.execute("SELECT COUNT(*) FROM systems").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise DataError(f"{path}: cannot open db database ({exc})") from None
    if fmt == "npz":
        return _npz_rows(path)
    return None


def _npz_rows(path: Path) -> int | None:
    """Structures of an rMD17-style file from the shape of its coordinates (read from the array header)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            for name in ("coords", "positions", "R"):
                if f"{name}.npy" in zf.namelist():
                    with zf.open(f"{name}.npy") as fh:
                        version = np.lib.format.read_magic(fh)
                        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                else np.lib.format.read_array_header_2_0)
                        shape, _, _ = read(fh)  # the header only, not the array
                    return int(shape[0]) if len(shape) == 3 else 1
    except Exception:  # noqa: BLE001 - the reader reports a broken file with its own message
        return None
    return None


def _use_metadata(plan: SourcePlan, path: Path) -> None:
    """Atom counts per shard from ``metadata.npz``'s ``natoms`` when it matches the rows counted."""
    try:
        with np.load(path, allow_pickle=False) as meta:
            natoms = np.asarray(meta["natoms"], dtype=np.int64).reshape(-1) if "natoms" in meta.files else None
    except Exception as exc:  # noqa: BLE001 - optional metadata: never fatal
        plan.metadata_npz = "ignored"
        plan.notes.append(f"{path}: unreadable ({type(exc).__name__}); rows counted in the shards instead")
        return
    if natoms is None:
        plan.metadata_npz = "ignored"
        plan.notes.append(f"{path}: no 'natoms' array; rows counted in the shards instead")
        return
    rows = plan.rows
    if rows is None or len(natoms) != rows:
        plan.metadata_npz = "ignored"
        plan.notes.append(f"{path}: natoms has {len(natoms)} entries but the shards hold "
                          f"{'an uncounted number of' if rows is None else rows} rows; ignored (rows counted "
                          f"in the shards instead)")
        return
    bounds = np.concatenate([[0], np.cumsum([s.rows for s in plan.shards])])
    plan.shards = [replace(s, atoms=int(natoms[bounds[i]:bounds[i + 1]].sum())) for i, s in enumerate(plan.shards)]
    plan.metadata_npz = "used"
