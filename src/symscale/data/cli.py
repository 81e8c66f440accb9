"""``symscale data``: prepare datasets and describe them.

* ``symscale data prepare SRC --out DIR``: read, validate, split, fit E0 / scales, write the prepared format.
* ``symscale data info PATH``: counts, elements, label statistics, splits and normalisation of a raw
  source or a prepared directory (``--json`` for machine-readable output).
* ``symscale data generate``: registered by :mod:`symscale.data.generate` when that module is present.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from .prepared import PreparedDataset, write_prepared
from .readers import UNITS, read_structures


def register(subparsers) -> None:
    """Add the ``data`` command group to the top-level ``symscale`` sub-parsers."""
    data = subparsers.add_parser("data", help="prepare and inspect datasets",
                                 description="Prepare and inspect atomistic datasets (eV, Å).")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 0)[1])

    prep = sub.add_parser("prepare", help="convert a source into the prepared (memory-mapped) format",
                          description="Read SRC (.xyz/.extxyz/.db/.aselmdb/.npz or a directory), validate "
                                      "every structure, split it, fit E0 and scales, and write DIR atomically.")
    prep.add_argument("src", help="source file or directory")
    prep.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    _reader_args(prep)
    prep.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default 0.1)")
    prep.add_argument("--test-fraction", type=float, default=0.0, help="test fraction (default 0)")
    prep.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    prep.set_defaults(func=_prepare)

    info = sub.add_parser("info", help="describe a raw source or a prepared directory")
    info.add_argument("path", nargs="?", default=None,
                      help="source file, directory or prepared directory (default: the embedded dataset)")
    _reader_args(info)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(func=_info)

    from .generate import register as register_generate

    register_generate(sub)


def _reader_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--energy-key", help="key of the energy label (default: detected)")
    parser.add_argument("--forces-key", help="key of the force label (default: detected)")
    parser.add_argument("--mol-id-key", help="key of the molecule identity (default: detected)")
    parser.add_argument("--units", choices=sorted(UNITS), default="eV",
                        help="energy unit of the source; forces in that unit per Å (default eV)")


def _reader_options(args) -> dict:
    return {k: v for k, v in (("energy_key", args.energy_key), ("forces_key", args.forces_key),
                              ("mol_id_key", args.mol_id_key), ("units", args.units)) if v is not None}


def _prepare(args) -> int:
    options = _reader_options(args)
    command = "symscale data prepare " + " ".join(shlex.quote(a) for a in _argv_of(args))
    out = write_prepared(read_structures(args.src, **options), args.out, source=str(args.src), seed=args.seed,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction, command=command,
                         reader_options=options, overwrite=args.overwrite)
    ds = PreparedDataset(out)
    c = ds.metadata["counts"]
    sp = ds.metadata["splits"]
    print(f"wrote {out}: {c['structures']} structures, {c['atoms']} atoms, elements "
          f"{' '.join(ds.metadata['element_symbols'])}; split {sp['method']}: "
          + ", ".join(f"{n} {sp[n]['count']}" for n in ("train", "val", "test")))
    return 0


def _argv_of(args) -> list[str]:
    argv = [str(args.src), "--out", str(args.out)]
    for flag in ("energy_key", "forces_key", "mol_id_key"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    argv += ["--units", args.units, "--val-fraction", str(args.val_fraction),
             "--test-fraction", str(args.test_fraction), "--seed", str(args.seed)]
    return argv + (["--overwrite"] if args.overwrite else [])


# ---------------------------------------------------------------------------------------------- info
def describe(path: str | Path, **reader_options) -> dict:
    """A JSON-serialisable description of a raw source or prepared directory (what ``data info`` prints)."""
    p = Path(path)
    if p.is_dir() and (p / "metadata.json").is_file():
        ds = PreparedDataset(p)
        numbers, offsets = np.asarray(ds.numbers), ds.offsets
        energy, forces = np.asarray(ds.energy), np.asarray(ds.forces)
        desc = {"path": str(p), "kind": "prepared", "format_version": ds.metadata["format_version"],
                "source": ds.metadata.get("source"), "fingerprint": ds.fingerprint,
                "fingerprint_recorded": "fingerprint" in ds.metadata}
        mol_ids = [m for m in ds.mol_ids if m]
        splits = {k: v for k, v in ds.metadata["splits"].items()}
        normalization = ds.metadata["normalization"]
    else:
        numbers_l, counts, energies, forces_l, ids = [], [], [], [], []
        for s in read_structures(p, require_labels=False, **reader_options):
            numbers_l.append(s.numbers)
            counts.append(s.n_atoms)
            energies.append(np.nan if s.energy is None else s.energy)
            forces_l.append(np.full((s.n_atoms, 3), np.nan) if s.forces is None else s.forces)
            ids.append(s.mol_id)
        if not counts:
            from ..errors import DataError

            raise DataError(f"{p}: no structures found")
        numbers = np.concatenate(numbers_l)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        energy, forces = np.asarray(energies), np.concatenate(forces_l)
        desc = {"path": str(p), "kind": "raw"}
        mol_ids = [m for m in ids if m]
        splits = normalization = None
    n_atoms = np.diff(offsets)
    z, zc = np.unique(numbers, return_counts=True)
    labelled = np.isfinite(energy)
    f_ok = np.isfinite(forces).all(axis=1)
    per_atom = energy[labelled] / n_atoms[labelled]
    fnorm = np.linalg.norm(forces[f_ok], axis=1)
    desc.update({
        "structures": int(len(n_atoms)), "atoms": int(n_atoms.sum()),
        "atoms_per_structure": {"min": int(n_atoms.min()), "mean": float(n_atoms.mean()), "max": int(n_atoms.max())},
        "molecules": len(set(mol_ids)),
        "elements": {chemical_symbols[int(a)]: int(c) for a, c in zip(z, zc)},
        "labelled_energy": int(labelled.sum()), "labelled_forces_atoms": int(f_ok.sum()),
        "energy_per_atom_eV": _summary(per_atom),
        "force_component_rms_eV_per_A": float(np.sqrt(np.mean(forces[f_ok] ** 2))) if f_ok.any() else None,
        "force_norm_max_eV_per_A": float(fnorm.max()) if len(fnorm) else None,
    })
    if splits is not None:
        desc["splits"] = splits
        desc["normalization"] = normalization
    return desc


def _summary(x: np.ndarray) -> dict | None:
    if len(x) == 0:
        return None
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def _info(args) -> int:
    path = args.path
    if path is None:
        from .prepared import default_dataset_path

        path = default_dataset_path()
    desc = describe(path, **_reader_options(args))
    if args.json:
        print(json.dumps(desc, indent=1, ensure_ascii=False))
        return 0
    lines = [f"{desc['path']} ({desc['kind']}{', from ' + str(desc['source']) if desc.get('source') else ''})",
             f"  structures   {desc['structures']}   atoms {desc['atoms']}   molecules {desc['molecules']}",
             "  atoms/struct min {min}  mean {mean:.1f}  max {max}".format(**desc["atoms_per_structure"]),
             "  elements     " + "  ".join(f"{k}:{v}" for k, v in desc["elements"].items()),
             f"  labelled     energy {desc['labelled_energy']}/{desc['structures']} structures, "
             f"forces {desc['labelled_forces_atoms']}/{desc['atoms']} atoms"]
    e = desc["energy_per_atom_eV"]
    if e:
        lines.append(f"  E/atom (eV)  mean {e['mean']:.4f}  std {e['std']:.4f}  min {e['min']:.4f}  max {e['max']:.4f}")
    if desc["force_component_rms_eV_per_A"] is not None:
        lines.append(f"  forces       rms {desc['force_component_rms_eV_per_A']:.4f} eV/Å   "
                     f"max |F| {desc['force_norm_max_eV_per_A']:.4f} eV/Å")
    if desc.get("fingerprint"):
        how = ("matches the record made when it was prepared" if desc["fingerprint_recorded"]
               else "computed now: prepared before fingerprints were recorded")
        lines.append(f"  fingerprint  sha256 {desc['fingerprint'][:16]}… ({how})")
    if "splits" in desc:
        sp = desc["splits"]
        lines.append(f"  splits       {sp['method']} (seed {sp['seed']}): " + ", ".join(
            f"{n} {sp[n]['count']} ({sp[n]['atoms']} atoms)" for n in ("train", "val", "test") if n in sp))
        norm = desc["normalization"]
        lines.append(f"  scales       energy {norm['energy_scale']:.4g} eV/atom   force {norm['force_scale']:.4g} eV/Å")
        lines.append("  E0 (eV)      " + "  ".join(f"{chemical_symbols[int(k)]}:{v:.4f}"
                                                  for k, v in norm["e0"].items()))
        for note in norm.get("notes", []):
            lines.append(f"  note         {note}")
    print("\n".join(lines))
    return 0
