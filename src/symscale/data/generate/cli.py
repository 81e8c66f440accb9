"""``symscale data generate``: the command-line face of :func:`symscale.data.generate.generate`."""

from __future__ import annotations

import argparse

from ...errors import ConfigError
from ...limits import seed_arg


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        temps = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated kelvin values, got {text!r}") from None
    if not temps:
        raise argparse.ArgumentTypeError("need at least one temperature")
    return temps


def register(data_subparsers) -> None:
    """Add the ``generate`` sub-command to the ``symscale data`` sub-parser group."""
    p = data_subparsers.add_parser(
        "generate", help="generate a GFN2-xTB labelled dataset (ETKDG conformers + Langevin MD)",
        description=("Sample geometries of real molecules with GFN2-xTB Langevin MD (tblite) at several "
                     "temperatures and label them with xTB energies and forces; writes the prepared format."))
    p.add_argument("--out", required=True, help="output directory of the prepared dataset")
    p.add_argument("--molecules", type=int, default=50, help="number of molecules (default 50)")
    p.add_argument("--per-molecule", type=int, default=60, help="structures kept per molecule (default 60)")
    p.add_argument("--temperatures", type=_temperatures, default=(300.0, 600.0, 1000.0),
                   help="comma-separated Langevin temperatures in K (default 300,600,1000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, one thread each (default 1)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--smiles", default=None, help="SMILES<TAB>name file (default: the shipped list)")
    p.add_argument("--selection", choices=("spread", "first"), default="spread",
                   help="which molecules: evenly spread over the list (default) or the first N")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset at --out (Markdown files there are kept)")
    p.add_argument("--stride", type=int, default=10, help="MD steps between kept frames (default 10)")
    p.add_argument("--equilibration", type=int, default=40,
                   help="MD steps discarded at the start of each trajectory (default 40)")
    p.add_argument("--timestep", type=float, default=0.5, help="MD time step in fs (default 0.5)")
    p.add_argument("--accuracy", type=float, default=1.0,
                   help="tblite SCF accuracy factor, smaller is tighter (default 1.0)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from . import generate

    if args.accuracy <= 0:
        raise ConfigError(f"accuracy: must be > 0, got {args.accuracy}")
    path = generate(args.out, n_molecules=args.molecules, structures_per_molecule=args.per_molecule,
                    temperatures=args.temperatures, workers=args.workers, seed=args.seed,
                    smiles_file=args.smiles, selection=args.selection, overwrite=args.overwrite, progress=not args.no_progress, stride=args.stride,
                    equilibration_steps=args.equilibration, timestep_fs=args.timestep, accuracy=args.accuracy)
    print(f"wrote {path}")
    return 0
