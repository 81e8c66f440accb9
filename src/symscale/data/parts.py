"""Parts: one shard's structures converted to flat arrays, written in blocks, merged later.

Preparing a dataset converts every shard into a *part*, a directory of raw little-endian binary files that
grow by appending one block at a time (so converting a shard of any size holds one block in memory):

=============== ========= ============ ===========================================================
file            dtype     per          content
=============== ========= ============ ===========================================================
numbers.bin     int8      atom         atomic numbers
positions.bin   float32   atom × 3     positions, Å
forces.bin      float32   atom × 3     forces, eV/Å
energy.bin      float64   structure    total energies, eV
n_atoms.bin     int64     structure    atoms of each structure
mol_hash.bin    uint64    structure    64-bit BLAKE2b of the molecule identity (see below)
charge.bin      int32     structure    total charge, :data:`MISSING` where the source gives none
spin.bin        int32     structure    spin multiplicity, :data:`MISSING` where the source gives none
cell.bin        float64   structure×9  cell (zeros for a molecule)
pbc.bin         bool      structure×3  periodic flags (all false for a molecule)
row.bin         int64     structure    index of the structure's row in the shard (for messages)
mol_names.jsonl           molecule     ``[hash, identity]`` of each identity, in order of first use
done.json                              written last: the part is complete (:meth:`PartWriter.finish`)
=============== ========= ============ ===========================================================

Molecule identities are strings that can be as many as the structures (OMol25's ``source``), so a part
stores a 64-bit hash per structure and each distinct identity once; the merge finds the dataset's molecules
with ``numpy.unique`` over the hashes. A structure without identity gets a hash of its own (from the shard
and row) and the identity ``""``. Two identities within one shard with the same hash are an error; across
shards a collision (probability about 3·10⁻⁵ for 34 million distinct identities) would merge two molecules
in the split.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text
from ..errors import DataError
from .prepared import FORCE_DTYPE, POSITION_DTYPE
from .structure import Structure

#: ``name: (dtype, values per atom or structure, "atom" | "structure")``.
FILES = {
    "numbers": (np.int8, 1, "atom"), "positions": (POSITION_DTYPE, 3, "atom"), "forces": (FORCE_DTYPE, 3, "atom"),
    "energy": (np.float64, 1, "structure"), "n_atoms": (np.int64, 1, "structure"),
    "mol_hash": (np.uint64, 1, "structure"), "charge": (np.int32, 1, "structure"),
    "spin": (np.int32, 1, "structure"), "cell": (np.float64, 9, "structure"), "pbc": (np.bool_, 3, "structure"),
    "row": (np.int64, 1, "structure"),
}
#: Charge / spin of a structure whose source gives none.
MISSING = int(np.iinfo(np.int32).min)
DONE = "done.json"
PART_VERSION = 1
#: Atoms buffered before a block is appended to the files.
BLOCK_ATOMS = 1 << 18


def mol_hash(name: str) -> int:
    """The 64-bit hash of a molecule identity."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class PartWriter:
    """Append structures to a part directory (created empty), one block at a time.

    Args:
        directory: the part directory; anything in it is removed first.
        source: the shard's name in messages and in the hashes of structures without identity.
        block_atoms: atoms buffered before they are written.
    """

    def __init__(self, directory: Path, source: str, block_atoms: int = BLOCK_ATOMS):
        self.directory = Path(directory)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self.source = source
        self.block_atoms = int(block_atoms)
        self._files = {name: open(self.directory / f"{name}.bin", "wb") for name in FILES}
        self._buf: dict[str, list] = {name: [] for name in FILES}
        self._buffered = 0
        self._names: dict[str, int] = {}  # identity -> hash, in order of first use
        self._hashes: set[int] = set()
        self.structures = self.atoms = self.named = 0
        self.elements = np.zeros(119, dtype=bool)
        self.periodic = False
        self.first_missing = {"charge": None, "spin": None}  # first row without one, and count with one
        self.present = {"charge": 0, "spin": 0}

    def add(self, s: Structure, row: int) -> None:
        """Buffer one (validated) structure read from row ``row`` of the shard."""
        n = s.n_atoms
        b = self._buf
        b["numbers"].append(s.numbers.astype(np.int8))
        b["positions"].append(s.positions.astype(POSITION_DTYPE))
        b["forces"].append(np.asarray(s.forces).astype(FORCE_DTYPE))
        b["energy"].append(float(s.energy))
        b["n_atoms"].append(n)
        b["mol_hash"].append(self._identity(s.mol_id, row))
        for key in ("charge", "spin"):
            value = getattr(s, key)
            if value is None:
                if self.first_missing[key] is None:
                    self.first_missing[key] = row
                value = MISSING
            else:
                self.present[key] += 1
            b[key].append(value)
        periodic = s.cell is not None
        b["cell"].append(s.cell if periodic else np.zeros((3, 3)))
        b["pbc"].append(s.pbc if periodic else np.zeros(3, dtype=bool))
        b["row"].append(row)
        self.periodic |= bool(np.any(s.pbc)) if periodic else False
        self.elements[s.numbers] = True
        self.structures += 1
        self.atoms += n
        self._buffered += n
        if self._buffered >= self.block_atoms:
            self.flush()

    def _identity(self, mol_id: str | None, row: int) -> int:
        if mol_id is None:  # each structure without identity is a molecule of its own
            h = mol_hash(f"\0no identity\0{self.source}\0{row}")
            self._names[f"\0{row}"] = h  # written as the identity ""
            return h
        self.named += 1
        h = self._names.get(mol_id)
        if h is None:
            h = mol_hash(mol_id)
            if h in self._hashes:
                raise DataError(f"{self.source}: structure {row}: molecule identity {mol_id!r} has the same 64-bit "
                                f"hash as another identity in this shard")
            self._hashes.add(h)
            self._names[mol_id] = h
        return h

    def flush(self) -> None:
        """Append the buffered block to the files."""
        for name, values in self._buf.items():
            if not values:
                continue
            dtype = FILES[name][0]
            arr = np.concatenate(values) if FILES[name][2] == "atom" else np.asarray(values, dtype=dtype)
            self._files[name].write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
            values.clear()
        self._buffered = 0

    def finish(self, info: dict[str, Any]) -> dict:
        """Write the last block, the identities and the ``done.json`` marker (last, atomically); return
        the part's summary (``info`` is stored in it, e.g. the shard's stamp and the rows read)."""
        self.flush()
        for fh in self._files.values():
            fh.close()
        with open(self.directory / "mol_names.jsonl", "w", encoding="utf-8") as fh:
            for name, h in self._names.items():
                fh.write(json.dumps([h, "" if name.startswith("\0") else name]) + "\n")
        summary = {"version": PART_VERSION, **info, "structures": self.structures, "atoms": self.atoms,
                   "named": self.named, "identities": len(self._names),
                   "elements": [int(z) for z in np.flatnonzero(self.elements)], "periodic": self.periodic,
                   "present": self.present, "first_missing": self.first_missing}
        write_text(self.directory / DONE, json.dumps(summary) + "\n")
        return summary

    def abort(self) -> None:
        """Close the files and remove the directory (an incomplete part is never reused)."""
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def read_summary(directory: Path) -> dict | None:
    """The summary of a complete part, or ``None`` (no marker, unreadable, or another part version)."""
    try:
        summary = json.loads((Path(directory) / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("version") == PART_VERSION else None


def read_part(directory: Path, name: str, start: int = 0, count: int = -1) -> np.ndarray:
    """Values ``start:start+count`` (in atoms or structures, as the file counts) of one part file, read into
    memory (not memory-mapped, so reading never grows the process's resident memory beyond the block)."""
    dtype, width, _ = FILES[name]
    itemsize = np.dtype(dtype).itemsize * width
    arr = np.fromfile(Path(directory) / f"{name}.bin", dtype=dtype, count=-1 if count < 0 else count * width,
                      offset=start * itemsize)
    return arr.reshape(-1, width) if width > 1 else arr


def read_names(directory: Path):
    """``(hash, identity)`` pairs of a part, in order of first use."""
    with open(Path(directory) / "mol_names.jsonl", encoding="utf-8") as fh:
        for line in fh:
            h, name = json.loads(line)
            yield int(h), name
