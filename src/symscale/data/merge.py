"""Merging parts into the arrays of a prepared dataset, in memory bounded by one block.

:func:`merge_parts` turns the parts of a source (one per shard, in shard order) into the files of the
prepared format (``docs/data.md``) inside an existing directory:

1. per-structure numbers only are held in memory (atoms per structure, energies are not): the offsets, the
   molecule hashes and from them the molecule index (``numpy.unique``; identities numbered in order of first
   appearance, as :func:`symscale.data.splits.mol_labels` numbers them), and the splits
   (:func:`symscale.data.splits.make_splits`, unchanged). That is a few tens of bytes per structure;
2. the per-atom arrays are copied part by part, in blocks of bytes, behind a ``.npy`` header written first
   (the files are byte for byte what ``numpy.save`` writes); ``mol_ids.json`` is written name by name;
3. the normalisation is fitted in two streaming passes over the parts
   (:func:`symscale.data.stats.fit_normalization_streaming`).

A prepared dataset stores the charge (spin) of every structure or of none: when only some structures carry
one, the merge stops with an error naming the first shard and row without one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from ..errors import DataError
from .parts import FILES, read_names, read_part
from .splits import make_splits
from .stats import fit_normalization_streaming

#: Bytes copied at a time, and the largest block of atoms / structures the normalisation passes read.
COPY_BYTES = 1 << 24
BLOCK_ATOMS = 1 << 20
BLOCK_STRUCTURES = 1 << 15
#: The prepared arrays copied from the parts, with their stored shapes per atom / structure.
_COPIED = {"numbers": (), "positions": (3,), "forces": (3,), "energy": ()}


def merge_parts(parts: list[tuple[Path, dict]], out: Path, *, source: str, seed: int, val_fraction: float,
                test_fraction: float, selected_from: str = "") -> dict:
    """Write the prepared arrays of ``parts`` (``(directory, summary)`` in shard order) into ``out``.

    Returns the metadata entries that depend on the data: ``dtypes``, ``counts``, ``elements``,
    ``element_symbols``, ``periodic``, ``splits`` and ``normalization``.

    Raises:
        DataError: no structures (``selected_from`` says how many rows the selection saw), or a charge / spin
        given for some structures only.
    """
    n_struct = sum(int(s["structures"]) for _, s in parts)
    if n_struct == 0:
        raise DataError(f"{source}: no structures found{selected_from}")
    stored = {key: _stored(parts, key, n_struct) for key in ("charge", "spin")}
    n_atoms = np.concatenate([read_part(d, "n_atoms") for d, _ in parts]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    named = sum(int(s["named"]) for _, s in parts)
    mol_index, n_identities = _molecules(parts, out / "mol_ids.json")
    splits, method = make_splits(n_struct, mol_index if named else None, val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
    periodic = any(bool(s["periodic"]) for _, s in parts)
    dtypes: dict[str, str] = {}
    for name, width in _COPIED.items():
        count = int(offsets[-1]) if FILES[name][2] == "atom" else n_struct
        dtypes[name] = _copy(parts, name, out / f"{name}.npy", (count, *width))
    dtypes["offsets"] = _save(out / "offsets.npy", offsets)
    dtypes["mol_index"] = _save(out / "mol_index.npy", mol_index.astype(np.int32))
    if periodic:
        dtypes["cell"] = _copy(parts, "cell", out / "cell.npy", (n_struct, 3, 3))
        dtypes["pbc"] = _copy(parts, "pbc", out / "pbc.npy", (n_struct, 3))
    for key, keep in stored.items():
        if keep:
            dtypes[key] = _copy(parts, key, out / f"{key}.npy", (n_struct,))
    for name, idx in splits.items():
        np.save(out / f"split_{name}.npy", np.asarray(idx, dtype=np.int64))
    elements = sorted({int(z) for _, s in parts for z in s["elements"]})
    train = np.zeros(n_struct, dtype=bool)
    train[splits["train"]] = True
    norm = fit_normalization_streaming(lambda forces: _blocks(parts, train, forces), np.asarray(elements),
                                       int(train.sum()))
    return {
        "dtypes": dtypes,
        "counts": {"structures": n_struct, "atoms": int(offsets[-1]), "molecules": n_identities - (n_struct - named),
                   "min_atoms": int(n_atoms.min()), "max_atoms": int(n_atoms.max())},
        "elements": elements,
        "element_symbols": [chemical_symbols[z] for z in elements],
        "periodic": periodic,
        "splits": {"method": method, "seed": int(seed), "val_fraction": float(val_fraction),
                   "test_fraction": float(test_fraction),
                   **{name: {"file": f"split_{name}.npy", "count": int(len(idx)), "atoms": int(n_atoms[idx].sum())}
                      for name, idx in splits.items()}},
        "normalization": {"e0": {str(z): v for z, v in norm["e0"].items()},
                          "energy_scale": norm["energy_scale"], "force_scale": norm["force_scale"],
                          "fitted_on": "train", "force_scale_kind": "rms_of_components",
                          "energy_scale_kind": "rms_of_per_atom_residual", "notes": norm["notes"]},
    }


def _stored(parts: list[tuple[Path, dict]], key: str, n_struct: int) -> bool:
    """Whether ``key`` (charge or spin) is stored: every structure has one (True) or none has (False)."""
    present = sum(int(s["present"][key]) for _, s in parts)
    if present in (0, n_struct):
        return present > 0
    _, first = next((d, s) for d, s in parts if s["first_missing"][key] is not None)
    raise DataError(f"{first['path']}: structure {first['first_missing'][key]}: no {key}, although {present} of "
                    f"the {n_struct} structures have one (a prepared dataset stores the {key} of every structure "
                    f"or of none)")


def _molecules(parts: list[tuple[Path, dict]], names_file: Path) -> tuple[np.ndarray, int]:
    """The molecule index of every structure (identities numbered in order of first appearance) and the
    number of identities; writes ``mol_ids.json`` (the identities in that order) name by name."""
    hashes = np.concatenate([read_part(d, "mol_hash") for d, _ in parts])
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    del hashes
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    del first
    emitted = np.zeros(len(uniq), dtype=bool)
    written = 0
    with open(names_file, "w", encoding="utf-8") as fh:
        fh.write("[")
        for d, _ in parts:
            pairs = list(read_names(d))
            if not pairs:
                continue
            u = np.searchsorted(uniq, np.array([h for h, _ in pairs], dtype=np.uint64))
            new = ~emitted[u]
            emitted[u[new]] = True
            if not np.array_equal(rank[u[new]], np.arange(written, written + int(new.sum()))):
                raise DataError(f"{d}: molecule identities out of order (a corrupted part: prepare again)")
            for (_, name), is_new in zip(pairs, new):
                if is_new:
                    fh.write((", " if written else "") + json.dumps(name))
                    written += 1
        fh.write("]")
    return rank[inverse.reshape(-1)], len(uniq)


def _header(fh, dtype, shape: tuple) -> None:
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": tuple(int(x) for x in shape)})


def _save(path: Path, arr: np.ndarray) -> str:
    np.save(path, np.ascontiguousarray(arr))
    return str(arr.dtype)


def _copy(parts: list[tuple[Path, dict]], name: str, path: Path, shape: tuple) -> str:
    """Write ``path`` as a ``.npy`` of ``shape`` whose data are the part files ``name.bin`` concatenated."""
    dtype = np.dtype(FILES[name][0])
    expected = int(np.prod(shape)) * dtype.itemsize
    with open(path, "wb") as out:
        _header(out, dtype, shape)
        start = out.tell()
        for d, _ in parts:
            with open(Path(d) / f"{name}.bin", "rb") as fh:
                while chunk := fh.read(COPY_BYTES):
                    out.write(chunk)
        if out.tell() - start != expected:
            raise DataError(f"{path.parent}: {name}: {out.tell() - start} bytes from the parts, expected {expected} "
                            f"(a corrupted part: prepare again)")
    return str(dtype)


def _blocks(parts: list[tuple[Path, dict]], train: np.ndarray, with_forces: bool):
    """Consecutive blocks ``(numbers, n_atoms, energy, forces | None, train)`` of every part, each at most
    :data:`BLOCK_STRUCTURES` structures and (beyond its first structure) :data:`BLOCK_ATOMS` atoms."""
    g = 0  # index of the part's first structure in the dataset
    for d, _ in parts:
        n_atoms = read_part(d, "n_atoms")
        local = np.concatenate([[0], np.cumsum(n_atoms)])
        s0 = 0
        while s0 < len(n_atoms):
            s1 = int(np.searchsorted(local, local[s0] + BLOCK_ATOMS, side="right")) - 1
            s1 = min(max(s1, s0 + 1), s0 + BLOCK_STRUCTURES, len(n_atoms))
            a0, a1 = int(local[s0]), int(local[s1])
            yield (read_part(d, "numbers", a0, a1 - a0), n_atoms[s0:s1], read_part(d, "energy", s0, s1 - s0),
                   read_part(d, "forces", a0, a1 - a0) if with_forces else None, train[g + s0:g + s1])
            s0 = s1
        g += len(n_atoms)
