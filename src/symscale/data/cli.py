"""``symscale data``: prepare datasets and describe them.

* ``symscale data prepare SRC --out DIR``: read (selecting with ``--where``), validate, split, fit E0 / scales
  and write the prepared format, shard by shard in parallel and resumably (:mod:`symscale.data.prepare`).
* ``symscale data info PATH``: counts, elements, label statistics, charge and spin distributions, splits and
  normalisation of a raw source or a prepared directory (``--json`` for machine-readable output).
* ``symscale data generate``: registered by :mod:`symscale.data.generate` when that module is present.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ase.data import chemical_symbols

from ..limits import seed_arg
from .info import describe
from .prepared import PreparedDataset
from .readers import UNITS


def register(subparsers) -> None:
    """Add the ``data`` command group to the top-level ``symscale`` sub-parsers."""
    data = subparsers.add_parser("data", help="prepare and inspect datasets",
                                 description="Prepare and inspect atomistic datasets (eV, Å).")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 0)[1])

    prep = sub.add_parser("prepare", help="convert a source into the prepared (memory-mapped) format",
                          description="Read SRC (.xyz/.extxyz/.db/.aselmdb/.npz, a directory of such shards, or a "
                                      "prepared directory), keep the structures satisfying every --where, validate "
                                      "them, split, fit E0 and scales, and write DIR atomically. Shards are converted "
                                      "in parallel and in bounded memory; an interrupted run continues from its "
                                      "finished shards when run again.")
    prep.add_argument("src", help="source file or directory")
    prep.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    _reader_args(prep)
    prep.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction (default 0.1)")
    prep.add_argument("--test-fraction", type=float, default=0.0, help="test fraction (default 0)")
    prep.add_argument("--seed", type=seed_arg, default=0, help="split seed (default 0)")
    prep.add_argument("--workers", type=int, default=None,
                      help="shards converted at once (default: the CPU count, capped by the number of shards; "
                           "with --backend ray: the cluster's CPUs)")
    prep.add_argument("--backend", choices=("local", "ray"), default="local",
                      help="local worker processes (default) or one Ray task per shard")
    prep.add_argument("--address", default=None, help="Ray cluster address (auto, host:port); default: a private "
                                                      "local Ray instance")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.add_argument("--quiet", action="store_true", help="no progress bar, notes or summary line")
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
    parser.add_argument("--where", action="append", default=[], metavar="COND",
                        help="keep only structures with KEY OP VALUE (OP: == != < <= > >= ~), e.g. 'charge==0'; "
                             "repeat for several conditions, all of which must hold (see docs/data.md)")


def _reader_options(args) -> dict:
    return {k: v for k, v in (("energy_key", args.energy_key), ("forces_key", args.forces_key),
                              ("mol_id_key", args.mol_id_key), ("units", args.units)) if v is not None}


def _prepare(args) -> int:
    from .prepare import prepare_source

    command = "symscale data prepare " + " ".join(shlex.quote(a) for a in _argv_of(args))
    note = (lambda line: None) if args.quiet else (lambda line: print(f"note: {line}", file=sys.stderr))
    try:
        out = prepare_source(args.src, args.out, where=args.where, seed=args.seed, val_fraction=args.val_fraction,
                             test_fraction=args.test_fraction, workers=args.workers, backend=args.backend,
                             address=args.address, progress=not (args.quiet or args.no_progress),
                             overwrite=args.overwrite, command=command, note=note, **_reader_options(args))
    except KeyboardInterrupt:
        print(f"interrupted: run `{command}` again to continue from the shards already prepared", file=sys.stderr)
        return 130
    if not args.quiet:
        ds = PreparedDataset(out)
        c, sp, sel = ds.metadata["counts"], ds.metadata["splits"], ds.metadata.get("selection", {})
        chosen = (f" (selected from {sel['rows']} rows by {' and '.join(sel['where'])})" if sel.get("where") else "")
        print(f"wrote {out}: {c['structures']} structures{chosen}, {c['atoms']} atoms, elements "
              f"{' '.join(ds.metadata['element_symbols'])}; split {sp['method']}: "
              + ", ".join(f"{n} {sp[n]['count']}" for n in ("train", "val", "test")))
    return 0


def _argv_of(args) -> list[str]:
    argv = [str(args.src), "--out", str(args.out)]
    for flag in ("energy_key", "forces_key", "mol_id_key"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    for cond in args.where:
        argv += ["--where", cond]
    argv += ["--units", args.units, "--val-fraction", str(args.val_fraction),
             "--test-fraction", str(args.test_fraction), "--seed", str(args.seed)]
    return argv + (["--overwrite"] if args.overwrite else [])


# ---------------------------------------------------------------------------------------------- info
def _info(args) -> int:
    path = args.path
    if path is None:
        from .prepared import default_dataset_path

        path = default_dataset_path()
    desc = describe(path, where=args.where, **_reader_options(args))
    if args.json:
        print(json.dumps(desc, indent=1, ensure_ascii=False))
        return 0
    lines = [f"{desc['path']} ({desc['kind']}{', from ' + str(desc['source']) if desc.get('source') else ''})",
             *([f"  where        {' and '.join(desc['where'])}: {desc['structures']} of {desc['rows']} rows"]
               if desc.get("where") else []),
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
    for key in ("charge", "spin"):
        if desc.get(key):
            lines.append(f"  {key:<12} " + "  ".join(f"{v}:{n}" for v, n in desc[key].items()))
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
