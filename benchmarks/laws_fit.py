"""Benchmark: fit + bootstrap time of the laws for 4 groups x 500 checkpoints with 1,000 bootstrap resamples.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/laws_fit.py [--repeats 3] [--jobs 1] [--bootstrap 1000]

Synthetic groups follow the published exponents of the four architectures (10 runs x 50 checkpoints each,
1 % multiplicative noise). Prints wall and CPU seconds of each repeat and their medians; the CPU time of this
process (and its workers) is the figure least affected by other load on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from symscale.laws import analyse
from symscale.laws.io import GroupData

PUBLISHED = {"mpnn": (0.28, 0.31, 2.33), "egnn": (0.39, 0.39, 28.09), "gemnet": (0.52, 0.50, 35.18),
             "esen": (0.82, 0.75, 74.36)}


def make_groups(n_runs: int = 10, n_ckpt: int = 50, seed: int = 0) -> dict[str, GroupData]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, (alpha, beta, kappa) in PUBLISHED.items():
        Ns = np.geomspace(3e5, 3e7, n_runs)
        Ds = np.geomspace(1e7, 1e9, n_ckpt)
        N, D = (a.ravel() for a in np.meshgrid(Ns, Ds, indexing="ij"))
        loss = (0.002 + 30.0 * N ** -alpha + 300.0 * D ** -beta) * np.exp(rng.normal(0, 0.01, N.size))
        C = 3 * kappa * N * D
        out[name] = GroupData(name=name, run=np.repeat(np.arange(n_runs), n_ckpt), N=N, D=D, C=C,
                              H=C / 1e12, loss=loss, kappa=kappa, run_names=[f"{name}-{i}" for i in range(n_runs)],
                              run_status=["completed"] * n_runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    groups = make_groups()
    walls, cpus = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), os.times()
        res = analyse(groups, n_boot=args.bootstrap, jobs=args.jobs)
        c1 = os.times()
        walls.append(time.perf_counter() - t0)
        cpus.append(sum(c1[:4]) - sum(c0[:4]))
        print(f"wall {walls[-1]:.2f} s  cpu {cpus[-1]:.2f} s")
    print(f"groups {len(groups)} x {groups['mpnn'].n_points} checkpoints, bootstrap {args.bootstrap}, "
          f"jobs {args.jobs}: median wall {statistics.median(walls):.2f} s, median cpu {statistics.median(cpus):.2f} s, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, r in res.items():
        s = r.summary
        print(f"  {name}: alpha {s['alpha']['value']:.3f} [{s['alpha']['ci_low']:.3f}, {s['alpha']['ci_high']:.3f}]"
              f"  beta {s['beta']['value']:.3f}  gamma_c {s['gamma_c']['value']:.3f}")


if __name__ == "__main__":
    main()
