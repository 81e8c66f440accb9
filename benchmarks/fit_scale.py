"""Benchmark: wall time, CPU time and peak memory of `symscale fit` on large CSVs (issue #11, section 5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_scale.py \
        [--cases 100000:0 100000:1000 1000000:0] [--runs 20] [--mem-limit-gb 16] [--keep DIR]

Each case ``ROWS:BOOTSTRAP`` writes a CSV of ROWS checkpoints made by ``tests/laws/synth.py`` (one group,
``--runs`` runs of ROWS/runs checkpoints, N from 1e5 to 1e7, D from 5e8 to 1e10 so the default 5 % warm-up
drop keeps every row, 1 % noise), then runs ``python -m symscale.cli fit CSV --bootstrap BOOTSTRAP`` as a
child process and reads the child's own resource usage (``os.wait4``): wall time, user + system CPU time,
peak resident memory. A baseline case (1,000 rows, no bootstrap) measures the fixed cost of the process
(interpreter and imports); "kB per row" is (peak − baseline peak) / rows. ``--mem-limit-gb`` caps the
child's address space (RLIMIT_AS) so an implementation that needs more fails instead of swapping; such a
case is reported as failed with the last line of its stderr. The fitted alpha, beta and gamma_c are printed
next to each case (truth: alpha 0.45, beta 0.40). Set PYTHONPATH to time another checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "laws"))

from synth import make_group, write_csv  # noqa: E402


def make_csv(path: Path, rows: int, runs: int) -> Path:
    """One group of ``runs`` × ``rows // runs`` checkpoints (see the module docstring)."""
    group = make_group("g", n_runs=runs, n_ckpt=rows // runs, seed=0, d_range=(5e8, 1e10))
    return write_csv(path, [group])


def run_fit(csv: Path, n_boot: int, out: Path, mem_limit_gb: float | None) -> dict:
    """Run ``symscale fit`` on ``csv`` in a child process; its wall/CPU time, peak RSS and headline numbers."""
    cmd = [sys.executable, "-m", "symscale.cli", "fit", str(csv), "--group-col", "arch", "--run-col", "run",
           "--time-col", "time_s", "--bootstrap", str(n_boot), "--json", str(out)]

    def limit():
        if mem_limit_gb:
            cap = int(mem_limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    out.unlink(missing_ok=True)   # this benchmark's own file from an earlier run
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = {"rows": None, "bootstrap": n_boot, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode}
    if proc.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        res["error"] = lines[-1] if lines else f"exit {proc.returncode}"
        return res
    g = json.loads(out.read_text())["groups"]["g"]
    res.update({k: g[k]["value"] for k in ("alpha", "beta", "gamma_c")}, n_points=g["n_points"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["100000:0", "100000:1000", "1000000:0"],
                    help="ROWS:BOOTSTRAP pairs [100000:0 100000:1000 1000000:0]")
    ap.add_argument("--runs", type=int, default=20, help="runs per CSV [20]")
    ap.add_argument("--mem-limit-gb", type=float, default=16.0, help="address-space cap of each child [16]")
    ap.add_argument("--keep", default=None, help="write the CSVs here and keep them (default: a temp dir)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.keep or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    cases = [(1000, 0)] + [tuple(int(v) for v in c.split(":")) for c in args.cases]
    results = []
    for rows, n_boot in cases:
        csv = work / f"rows{rows}.csv"
        if not csv.is_file():
            make_csv(csv, rows, args.runs)
        r = run_fit(csv, n_boot, work / f"fit_{rows}_{n_boot}.json", args.mem_limit_gb)
        r["rows"] = rows
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]["peak_rss_mb"]
    print(f"\nload average {os.getloadavg()[0]:.1f}; baseline (1,000 rows, no bootstrap) peak {base:.0f} MB\n")
    print("| rows | bootstrap | wall s | CPU s | peak RSS MB | kB per row | alpha | beta | gamma_c |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results[1:]:
        if r["rc"] != 0:
            print(f"| {r['rows']:,} | {r['bootstrap']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | failed: {r['error'][:80]} | | | |")
            continue
        per_row = (r["peak_rss_mb"] - base) * 1024 / r["rows"]
        print(f"| {r['rows']:,} | {r['bootstrap']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{per_row:.2f} | {r['alpha']:.4f} | {r['beta']:.4f} | {r['gamma_c']:.4f} |")


if __name__ == "__main__":
    main()
