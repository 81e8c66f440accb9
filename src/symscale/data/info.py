"""What ``symscale data info`` reports, computed in one streaming pass (memory independent of the size).

:func:`describe` reads a raw source structure by structure (selection applied, structures validated but not
required to carry labels) or a prepared directory block by block (arrays read, not memory-mapped), and
returns counts, atoms per structure, element counts, labelled fractions, per-atom energy statistics
(mean and standard deviation merged block by block, Chan et al.), force RMS and maximum, the distributions
of the total charge and the spin multiplicity, and for a prepared directory its fingerprint, splits and
normalisation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from ..errors import DataError
from .parts import mol_hash
from .prepared import PreparedDataset
from .readers import iter_rows, reader_options
from .select import Selection
from .shards import is_prepared_dir, list_shards

#: Structures (raw sources) or atoms (prepared arrays) gathered before they are added to the statistics.
BLOCK_STRUCTURES = 4096
BLOCK_ATOMS = 1 << 20


class _Stats:
    """Running statistics over blocks of structures."""

    def __init__(self):
        self.n_struct = 0
        self.atoms = 0
        self.min_atoms, self.max_atoms = None, 0
        self.elements = np.zeros(119, dtype=np.int64)
        self.e_count, self.e_mean, self.e_m2 = 0, 0.0, 0.0
        self.e_min, self.e_max = np.inf, -np.inf
        self.f_atoms, self.f_sq, self.f_comp, self.f_max = 0, 0.0, 0, None
        self.charge: Counter = Counter()
        self.spin: Counter = Counter()

    def add(self, numbers: np.ndarray, n_atoms: np.ndarray, energy: np.ndarray, forces: np.ndarray,
            charge: Sequence, spin: Sequence) -> None:
        """One block: concatenated ``numbers``, ``n_atoms`` per structure, ``energy`` (NaN: unlabelled),
        ``forces`` (NaN rows: unlabelled), ``charge`` / ``spin`` per structure (``None``: not given)."""
        if len(n_atoms) == 0:
            return
        self.n_struct += len(n_atoms)
        self.atoms += int(n_atoms.sum())
        lo = int(n_atoms.min())
        self.min_atoms = lo if self.min_atoms is None else min(self.min_atoms, lo)
        self.max_atoms = max(self.max_atoms, int(n_atoms.max()))
        self.elements += np.bincount(numbers, minlength=119)[:119]
        ok = np.isfinite(energy)
        if ok.any():
            x = energy[ok] / n_atoms[ok]
            n, mean = len(x), float(x.mean())
            m2 = float(np.sum((x - mean) ** 2))
            total = self.e_count + n
            delta = mean - self.e_mean
            self.e_m2 += m2 + delta ** 2 * self.e_count * n / total
            self.e_mean += delta * n / total
            self.e_count = total
            self.e_min, self.e_max = min(self.e_min, float(x.min())), max(self.e_max, float(x.max()))
        f_ok = np.isfinite(forces).all(axis=1)
        f = np.asarray(forces[f_ok], dtype=np.float64)
        self.f_atoms += int(f_ok.sum())
        self.f_sq += float(np.sum(f * f))
        self.f_comp += f.size
        if len(f):
            norm = float(np.linalg.norm(f, axis=1).max())
            self.f_max = norm if self.f_max is None else max(self.f_max, norm)
        self.charge.update(charge)
        self.spin.update(spin)

    def result(self) -> dict:
        symbols = {chemical_symbols[z]: int(c) for z, c in enumerate(self.elements) if c}
        energy = None if self.e_count == 0 else {"mean": self.e_mean, "std": float(np.sqrt(self.e_m2 / self.e_count)),
                                                  "min": self.e_min, "max": self.e_max}
        return {
            "structures": self.n_struct, "atoms": self.atoms,
            "atoms_per_structure": {"min": int(self.min_atoms), "mean": self.atoms / self.n_struct,
                                    "max": int(self.max_atoms)},
            "elements": symbols, "labelled_energy": self.e_count, "labelled_forces_atoms": self.f_atoms,
            "energy_per_atom_eV": energy,
            "force_component_rms_eV_per_A": float(np.sqrt(self.f_sq / self.f_comp)) if self.f_comp else None,
            "force_norm_max_eV_per_A": self.f_max,
            "charge": _distribution(self.charge), "spin": _distribution(self.spin),
        }


def _distribution(counts: Counter) -> dict | None:
    """``{"value": count}`` in numerical order (``"missing"``: structures without one); ``None`` when no
    structure has one."""
    if not any(k is not None for k in counts):
        return None
    out = {str(k): int(counts[k]) for k in sorted(k for k in counts if k is not None)}
    if counts.get(None):
        out["missing"] = int(counts[None])
    return out


def describe(path: str | Path, where: Selection | Sequence[str] | None = None, **options) -> dict:
    """A JSON-serialisable description of a raw source or prepared directory (what ``data info`` prints).

    With ``where`` a prepared directory is read as a source (only the selected structures are described;
    ``rows`` says how many were read)."""
    p = Path(path)
    selection = Selection.of(where)
    if is_prepared_dir(p) and not selection:
        return _describe_prepared(p)
    opts = reader_options(validate=True, require_labels=False, where=selection, **options)
    stats, ids = _Stats(), []  # ids: one array of molecule-identity hashes per block
    buf: list = []
    rows = 0
    for shard in list_shards(p):
        for _, s in iter_rows(shard.path, shard.fmt, **opts):
            rows += 1
            if s is None:
                continue
            buf.append(s)
            if len(buf) >= BLOCK_STRUCTURES:
                _add_structures(stats, buf, ids)
    _add_structures(stats, buf, ids)
    if stats.n_struct == 0:
        why = f" ({rows} rows read, none satisfies where {' and '.join(selection.texts)})" if selection else ""
        raise DataError(f"{p}: no structures found{why}")
    hashes = np.concatenate(ids)
    desc = {"path": str(p), "kind": "prepared" if is_prepared_dir(p) else "raw"}
    if selection:
        desc.update({"where": selection.texts, "rows": rows})
    result = stats.result()
    result["molecules"] = int(len(np.unique(hashes[hashes != 0])))
    return {**desc, **_ordered(result)}


def _add_structures(stats: _Stats, buf: list, ids: list) -> None:
    if not buf:
        return
    ids.append(np.array([mol_hash(s.mol_id) if s.mol_id else 0 for s in buf], dtype=np.uint64))
    stats.add(np.concatenate([s.numbers for s in buf]), np.array([s.n_atoms for s in buf]),
              np.array([np.nan if s.energy is None else s.energy for s in buf]),
              np.concatenate([np.full((s.n_atoms, 3), np.nan) if s.forces is None else s.forces for s in buf]),
              [s.charge for s in buf], [s.spin for s in buf])
    buf.clear()


def _describe_prepared(p: Path) -> dict:
    ds = PreparedDataset(p)
    desc = {"path": str(p), "kind": "prepared", "format_version": ds.metadata["format_version"],
            "source": ds.metadata.get("source"), "fingerprint": ds.fingerprint,
            "fingerprint_recorded": "fingerprint" in ds.metadata}
    stats = _Stats()
    offsets = np.asarray(ds.offsets)
    s0 = 0
    while s0 < len(ds):
        s1 = int(np.searchsorted(offsets, offsets[s0] + BLOCK_ATOMS, side="right")) - 1
        s1 = min(max(s1, s0 + 1), len(ds))
        a0, a1 = int(offsets[s0]), int(offsets[s1])
        none = [None] * (s1 - s0)
        stats.add(_read(p, "numbers", a0, a1), np.diff(offsets[s0:s1 + 1]), _read(p, "energy", s0, s1),
                  _read(p, "forces", a0, a1), none if ds.charge is None else _read(p, "charge", s0, s1).tolist(),
                  none if ds.spin is None else _read(p, "spin", s0, s1).tolist())
        s0 = s1
    result = stats.result()
    result["molecules"] = int(ds.metadata.get("counts", {}).get("molecules", len({m for m in ds.mol_ids if m})))
    return {**desc, **_ordered(result), "splits": dict(ds.metadata["splits"]),
            "normalization": ds.metadata["normalization"]}


def _read(directory: Path, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``<name>.npy`` read from the file (no memory map)."""
    with open(directory / f"{name}.npy", "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        width = int(np.prod(shape[1:]))
        fh.seek(start * width * dtype.itemsize, 1)
        arr = np.fromfile(fh, dtype=dtype, count=(stop - start) * width)
    return arr.reshape(-1, *shape[1:])


_ORDER = ("structures", "atoms", "atoms_per_structure", "molecules", "elements", "labelled_energy",
          "labelled_forces_atoms", "energy_per_atom_eV", "force_component_rms_eV_per_A", "force_norm_max_eV_per_A",
          "charge", "spin")


def _ordered(result: dict) -> dict:
    return {k: result[k] for k in _ORDER}
