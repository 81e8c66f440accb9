"""xTB labelling throughput: raw tblite single points vs ``symscale.data.generate``.

Usage (the figures in docs/benchmarks.md, section "Data generation"):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xtb_throughput.py --molecules 8 --per-molecule 30 \
        --workers 1 --repeats 3

Each repeat (1) runs the generator (ETKDG, BAOAB Langevin MD, GFN2-xTB forces at every step, the worker
pool) and counts its xTB single points per wall-clock second, start-up included; then (2) re-labels the
geometries the generator kept with raw tblite in this one process (one ``Calculator`` per molecule,
``update`` + ``singlepoint``), once from the default guess and once restarting from the previous
geometry's wavefunction. Efficiency = generator rate / (workers x raw rate). The generator also times
its own tblite calls: "tblite share" = time inside tblite / (workers x wall time) is its rate relative to
raw tblite on exactly the geometries it visited with the same SCF restarts (1 - share = overhead). Repeats alternate
generator and raw runs so both see the same machine load; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ase.units import Bohr  # noqa: E402

from symscale.data.generate import generate_structures  # noqa: E402


def raw_rate(structures, restart: bool, passes: int) -> float:
    """Single points per second of bare tblite on ``structures`` in this process."""
    from tblite.interface import Calculator

    by_mol: dict[str, list] = {}
    for s in structures:
        by_mol.setdefault(s.mol_id, []).append(s)
    n, seconds = 0, 0.0
    for group in by_mol.values():
        calc = Calculator("GFN2-xTB", group[0].numbers, group[0].positions / Bohr)
        calc.set("verbosity", 0)
        start = time.perf_counter()
        for _ in range(passes):
            res = None
            for s in group:
                calc.update(positions=s.positions / Bohr)
                res = calc.singlepoint(res) if (restart and res is not None) else calc.singlepoint()
                res.get("energy"), res.get("gradient")
                n += 1
        seconds += time.perf_counter() - start
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecules", type=int, default=8)
    ap.add_argument("--per-molecule", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3, help="passes over the kept geometries per raw timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the medians as JSON here")
    args = ap.parse_args()

    gen, fresh, restart, kept, share, busy = [], [], [], [], [], []
    for r in range(args.repeats):
        result = generate_structures(n_molecules=args.molecules, structures_per_molecule=args.per_molecule,
                                     workers=args.workers, seed=args.seed)
        gen.append(result.singlepoints_per_second)
        kept.append(len(result.structures) / result.wall_seconds)
        share.append(result.xtb_seconds / (args.workers * result.wall_seconds))
        busy.append(result.worker_seconds / (args.workers * result.wall_seconds))
        fresh.append(raw_rate(result.structures, restart=False, passes=args.passes))
        restart.append(raw_rate(result.structures, restart=True, passes=args.passes))
        print(f"repeat {r}: generator {gen[-1]:.1f} SP/s ({result.n_singlepoints} SP, {len(result.structures)} kept, "
              f"{result.wall_seconds:.1f} s); raw fresh {fresh[-1]:.1f} SP/s; raw restart {restart[-1]:.1f} SP/s; "
              f"tblite share of generator wall time {100 * share[-1]:.1f} %; workers busy {100 * busy[-1]:.1f} %",
              flush=True)
    atoms = sum(s.n_atoms for s in result.structures) / len(result.structures)
    med = {"workers": args.workers, "molecules": args.molecules, "mean_atoms": round(atoms, 1),
           "singlepoints": result.n_singlepoints, "generator_sp_per_s": statistics.median(gen),
           "generator_kept_per_s": statistics.median(kept), "raw_fresh_sp_per_s": statistics.median(fresh),
           "raw_restart_sp_per_s": statistics.median(restart), "xtb_share": statistics.median(share),
           "workers_busy": statistics.median(busy)}
    med["efficiency_vs_fresh"] = med["generator_sp_per_s"] / (args.workers * med["raw_fresh_sp_per_s"])
    med["efficiency_vs_restart"] = med["generator_sp_per_s"] / (args.workers * med["raw_restart_sp_per_s"])
    print()
    print("| workers | molecules (mean atoms) | generator SP/s | kept structures/s | raw tblite SP/s, default guess "
          "| raw tblite SP/s, restart | efficiency vs default / restart | tblite share of generator time |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.workers} | {args.molecules} ({atoms:.1f}) | {med['generator_sp_per_s']:.1f} | "
          f"{med['generator_kept_per_s']:.2f} | {med['raw_fresh_sp_per_s']:.1f} | {med['raw_restart_sp_per_s']:.1f} | "
          f"{100 * med['efficiency_vs_fresh']:.0f} % / {100 * med['efficiency_vs_restart']:.0f} % | "
          f"{100 * med['xtb_share']:.1f} % |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(med, fh, indent=1)


if __name__ == "__main__":
    main()
