"""``symscale train``, ``symscale eval`` and ``symscale md``: thin argument mapping onto the library."""

from __future__ import annotations

import argparse
import json
import sys

from ..limits import seed_arg
from ..outputs import check_output_file, stamp


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``eval`` and ``md`` sub-commands."""
    p = subparsers.add_parser("train", help="train one model from a run YAML file",
                              description="Train one model from a run YAML file (see docs/training.md).")
    p.add_argument("config", help="run YAML file (see examples/run.yaml)")
    p.add_argument("--out", help="run directory (default: the config's out, else runs/<run_id>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("eval", help="evaluate a checkpoint on a dataset",
                              description="Energy / force errors of a trained checkpoint on a dataset.")
    p.add_argument("checkpoint", help="run directory or checkpoint.pt")
    p.add_argument("data", help="prepared dataset directory or raw structure file")
    p.add_argument("--split", default=None, help="split of a prepared dataset (default: all structures)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-structures", type=int, default=None, help="evaluate only the first N structures")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument("--allow-unseen-elements", action="store_true",
                   help="evaluate structures with elements the model was not trained on (refused by default)")
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("md", help="NVE molecular dynamics with a trained checkpoint",
                              description="Run NVE dynamics with a trained model and report energy drift.")
    p.add_argument("checkpoint", help="run directory or checkpoint.pt")
    p.add_argument("--structure", required=True, help="starting structure (any ASE-readable file)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs")
    p.add_argument("--temperature", type=float, default=300.0, help="initial temperature in K")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the initial velocities")
    p.add_argument("--trajectory", help="write the trajectory to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument("--allow-unseen-elements", action="store_true",
                   help="run a structure with elements the model was not trained on (refused by default)")
    p.add_argument("--max-energy-deviation", type=float, default=None,
                   help="stability bound on max |E_tot - E_tot(0)| per atom in eV (default 0.05)")
    p.add_argument("--max-displacement", type=float, default=None,
                   help="stability bound on any atom's distance from its start in Å (default 10)")
    p.add_argument("--out", help="also write the result, with the total energy of every step, to this JSON file")
    p.set_defaults(func=_md)


def _train(args: argparse.Namespace) -> int:
    from .run import run

    run_dir = run(args.config, out=args.out, resume=args.resume, quiet=args.quiet)
    summary = json.loads((run_dir / "summary.json").read_text())
    line = f"{summary['run_id']}: {summary['status']}, {summary['steps']} steps, {summary['tokens']} atoms"
    if summary.get("final"):
        line += f", val loss {summary['final']['loss']:.4g}"
    if summary.get("reason"):
        line += f" ({summary['reason']})"
    print(f"{line} -> {run_dir}")
    return 0 if summary["status"] == "completed" else 1


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint
    from .guards import resolve_device

    device = resolve_device(args.device, "--device")  # before any work
    if args.out:
        check_output_file(args.out, "eval", flag="--out")
    kwargs = {"batch_size": args.batch_size, "device": device, "max_structures": args.max_structures,
              "allow_unseen_elements": args.allow_unseen_elements}
    if args.split is not None:
        kwargs["split"] = args.split
    result = evaluate_checkpoint(args.checkpoint, args.data, **kwargs)
    _emit(result, args.out)
    return 0


def _md(args: argparse.Namespace) -> int:
    """Exit 0 when the trajectory is stable, 1 when not (the result, with its reason, is still printed)."""
    from .guards import resolve_device
    from .md import run_nve

    device = resolve_device(args.device, "--device")  # before any work
    if args.out:
        check_output_file(args.out, "md", flag="--out")
    bounds = {k: v for k, v in (("max_energy_deviation", args.max_energy_deviation),
                                ("max_displacement", args.max_displacement)) if v is not None}
    result = run_nve(args.checkpoint, args.structure, steps=args.steps, timestep_fs=args.timestep,
                     temperature_K=args.temperature, seed=args.seed, device=device,
                     trajectory=args.trajectory, allow_unseen_elements=args.allow_unseen_elements, **bounds)
    # the per-step energy trace goes to --out only; the terminal gets the summary
    _emit({k: v for k, v in result.items() if k != "energy_total"}, None)
    if args.out:
        from .metrics import write_json_atomic

        write_json_atomic(args.out, stamp(result, "md"))
    return 0 if result["stable"] else 1


def _emit(result: dict, out: str | None) -> None:
    from .metrics import _plain, write_json_atomic

    text = json.dumps(_plain(result), indent=2)
    print(text, file=sys.stdout)
    if out:
        write_json_atomic(out, stamp(result, "eval"))
