"""Benchmark: `symscale data prepare` on OMol25-shaped shard sets at scale (issue #13, §3).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prepare_scale.py \
        [--root /work/bench-data/omol_synth] [--sets train_100k train_1M] [--workers 1 2] \
        [--loader-batches 200] [--json /work/bench-data/omol_synth/results/prepare_scale.json]

The shard sets come from ``benchmarks/omol_shards.py generate`` (``ROOT/<set>/`` with ``metadata.npz``).
For each set the harness first reads every shard file once (so raw reader and preparer both start with the
shards in the page cache), then for each K in ``--workers``:

1. **raw** (unless ``--no-raw``): the ase.db-only reference rate, ``omol_shards.py raw <set> --procs K``
   in a fresh process (one process for K = 1; the shards dealt to K processes for K > 1), on every shard
   or on ``--raw-max-shards`` evenly spaced ones; its rate is timed inside that process (imports and start
   excluded), the prepare rate over the whole command, so the ratio errs against the preparer;
2. **prepare**: ``symscale data prepare <set> --out ROOT/prepared/<set>_k<K> --workers K --no-progress``
   (``--prepare-args`` changes the flags) in a fresh process, after removing a previous output of this
   harness. Measured: wall time; user + system CPU time and peak RSS of the largest single process of the
   tree from ``os.wait4`` (``ru_maxrss`` covers the child and every descendant it waited for); and a
   ``/proc`` sampler (every ``--sample-s``) over the whole process tree: peak of the summed RSS, of the
   summed anonymous RSS (``RssAnon``: memory the preparer owns, as opposed to file pages of the mmapped
   LMDB shards, ``RssFile``, which the kernel can drop), of the summed PSS (``smaps_rollup``: shared pages
   counted once) and the largest single-process RSS, plus the most processes seen at once. The summed
   figures are what K workers cost together; a time series goes to the JSON;
3. structures/s = structures written (the output's ``metadata.json``) / wall; ratio = that rate / the raw
   rate with 1 process and / the raw rate with K processes (target ≥ 0.7: the reader is the limit);
   "CPU ratio" = the raw reader's CPU seconds per structure / the preparer's (all its processes, from
   ``wait4``): the share of the preparer's CPU that reading costs anyway, which other jobs on a shared
   machine do not change.

Outputs of different K are compared file by file (SHA-256, except ``metadata.json`` and the output
marker, which hold a timestamp and the command): a parallel preparer should write the same dataset.
Then the **training loader** rate on the prepared result of the largest K, in a fresh process:
``StreamingLoader(dataset, "train", batch_size=64, cutoff=5.0)``, atoms/s (and structures/s, edges/s) over
``--loader-batches`` batches after 5 warm-up batches, torch and OMP at 1 thread.

It refuses to run when ``symscale data prepare --help`` lacks a flag of ``--prepare-args`` (the parallel
preparer is not there yet) unless ``--force``. Results: ``--json`` (default
``ROOT/results/prepare_scale.json``, rewritten after every measurement so an interrupted run keeps what it
measured) and a markdown table on stdout; ``--report JSON`` prints the table of an earlier run;
``--profile-loader PREPARED`` profiles ``--loader-batches`` loader batches of a prepared directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = REPO / ".venv" / "bin" / "python"
SYMSCALE = REPO / ".venv" / "bin" / "symscale"
DEFAULT_ROOT = Path("/work/bench-data/omol_synth")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------- /proc sampler
def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        out[int(d)] = int(rest[1])
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _status_kb(pid: int) -> dict[str, int]:
    res = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                    k, v = line.split(":", 1)
                    res[k] = int(v.split()[0])
    except OSError:
        pass
    return res


def _pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class TreeSampler(threading.Thread):
    """Samples RSS / RssAnon / PSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.stop_event = threading.Event()
        self.peak = {"sum_rss_mib": 0.0, "sum_anon_mib": 0.0, "sum_file_mib": 0.0, "sum_pss_mib": 0.0,
                     "max_proc_rss_mib": 0.0, "max_proc_anon_mib": 0.0, "max_procs": 0}
        self.series: list[tuple[float, int, float, float, float]] = []  # t, procs, sum rss, anon, pss
        self.t0 = time.perf_counter()

    def sample(self) -> None:
        pids = _descendants(self.pid)
        rss = anon = file_ = pss = 0
        max_rss = max_anon = 0
        n = 0
        for p in pids:
            st = _status_kb(p)
            if "VmRSS" not in st:
                continue
            n += 1
            rss += st["VmRSS"]
            anon += st.get("RssAnon", 0)
            file_ += st.get("RssFile", 0)
            max_rss = max(max_rss, st["VmRSS"])
            max_anon = max(max_anon, st.get("RssAnon", 0))
            pss += _pss_kb(p) or 0
        if n == 0:
            return
        pk = self.peak
        pk["sum_rss_mib"] = max(pk["sum_rss_mib"], rss / 1024)
        pk["sum_anon_mib"] = max(pk["sum_anon_mib"], anon / 1024)
        pk["sum_file_mib"] = max(pk["sum_file_mib"], file_ / 1024)
        pk["sum_pss_mib"] = max(pk["sum_pss_mib"], pss / 1024)
        pk["max_proc_rss_mib"] = max(pk["max_proc_rss_mib"], max_rss / 1024)
        pk["max_proc_anon_mib"] = max(pk["max_proc_anon_mib"], max_anon / 1024)
        pk["max_procs"] = max(pk["max_procs"], n)
        self.series.append((round(time.perf_counter() - self.t0, 2), n, round(rss / 1024, 1),
                            round(anon / 1024, 1), round(pss / 1024, 1)))

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.every)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def measure(cmd: list[str], *, sample_s: float, env: dict | None = None, log: Path | None = None) -> dict:
    """Run ``cmd``; wall, CPU and memory of it and its descendants (see the module docstring)."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    sampler = TreeSampler(proc.pid, sample_s)
    sampler.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log:
        out.close()
    series = sampler.series
    if len(series) > 400:  # keep the JSON small: ~400 points
        step = len(series) / 400
        series = [series[int(i * step)] for i in range(400)] + [series[-1]]
    return {"cmd": " ".join(shlex.quote(c) for c in cmd), "rc": proc.returncode, "wall_s": wall,
            "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "maxrss_mib_wait4": ru.ru_maxrss / 1024, **sampler.peak,
            "load_avg_before": load0, "load_avg_after": os.getloadavg(),
            "series_cols": ["t_s", "procs", "sum_rss_mib", "sum_anon_mib", "sum_pss_mib"], "series": series}


# ---------------------------------------------------------------------------------------- pieces
def warm_cache(directory: Path) -> float:
    t0 = time.perf_counter()
    buf = bytearray(16 * MiB)
    for p in sorted(directory.glob("*.aselmdb")):
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t0


def set_size(directory: Path) -> dict:
    import numpy as np

    shards = sorted(directory.glob("*.aselmdb"))
    size = {"structures": None, "atoms": None, "shards": len(shards),
            "bytes": int(sum(p.stat().st_size for p in shards))}
    if (directory / "metadata.npz").is_file():
        nat = np.load(directory / "metadata.npz")["natoms"]
        size.update(structures=int(len(nat)), atoms=int(nat.sum()))
    return size


def raw(directory: Path, procs: int, json_out: Path, log: Path, max_shards: int = 0) -> dict:
    cmd = [str(PY), str(HERE / "omol_shards.py"), "raw", str(directory), "--procs", str(procs),
           "--json", str(json_out)]
    n = len(list(directory.glob("*.aselmdb")))
    if max_shards and n > max_shards:  # an evenly spaced sample of the shards
        cmd += ["--shards", ",".join(str(i * n // max_shards) for i in range(max_shards))]
    m = measure(cmd, sample_s=1.0, log=log)
    if m["rc"] != 0:
        raise SystemExit(f"raw reader failed (rc {m['rc']}), see {log}")
    r = json.loads(json_out.read_text())
    return {"procs": procs, "shards": len(r["shards"]), "structures": r["structures"], "atoms": r["atoms"], "wall_s": r["wall_s"],
            "process_wall_s": m["wall_s"],
            "structures_per_s": r["structures_per_s"], "atoms_per_s": r["atoms_per_s"],
            "cpu_s": m["cpu_s"], "maxrss_mib_wait4": m["maxrss_mib_wait4"],
            "load_avg_before": m["load_avg_before"], "load_avg_after": m["load_avg_after"]}


def remove_output(out: Path, out_root: Path) -> None:
    """Remove a previous output of this harness (only below ``out_root``)."""
    if not out.exists():
        return
    if out_root.resolve() not in out.resolve().parents:
        raise SystemExit(f"refusing to remove {out}: not below {out_root}")
    shutil.rmtree(out)


def output_counts(out: Path) -> dict:
    meta = json.loads((out / "metadata.json").read_text())
    c = meta.get("counts", {})
    return {"structures": c.get("structures"), "atoms": c.get("atoms"), "molecules": c.get("molecules"),
            "splits": {k: v["count"] for k, v in (meta.get("splits") or {}).items()
                       if isinstance(v, dict) and "count" in v} or None}


def dir_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def digests(out: Path) -> dict[str, str]:
    res = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if not p.is_file() or rel in ("metadata.json", ".symscale-output.json"):
            continue
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(16 * MiB):
                h.update(chunk)
        res[rel] = h.hexdigest()
    return res


LOADER_CODE = r"""
import json, sys, time, resource
import torch
torch.set_num_threads(1)
from symscale.data.loader import StreamingLoader
path, n_batches, bs, cutoff = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.perf_counter()
loader = StreamingLoader(path, "train", batch_size=bs, cutoff=cutoff, seed=0)
t_open = time.perf_counter() - t0
it = iter(loader)
for _ in range(5):
    next(it)
atoms = structures = edges = 0
c0 = time.process_time(); t0 = time.perf_counter()
for _ in range(n_batches):
    b = next(it)
    atoms += int(b.n_atoms.sum()); structures += int(b.n_atoms.shape[0]); edges += int(b.edge_index.shape[1])
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
print(json.dumps({"open_s": t_open, "batches": n_batches, "batch_size": bs, "cutoff": cutoff,
                  "train_structures": int(len(loader.indices)), "atoms": atoms, "structures": structures,
                  "edges": edges, "wall_s": wall, "cpu_s": cpu, "atoms_per_s": atoms / wall,
                  "structures_per_s": structures / wall, "edges_per_s": edges / wall,
                  "batches_per_s": n_batches / wall,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def loader_rate(out: Path, batches: int, batch_size: int, cutoff: float, log: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [str(PY), "-c", LOADER_CODE, str(out), str(batches), str(batch_size), str(cutoff)]
    load0 = os.getloadavg()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log.write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1], "rc": p.returncode}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["load_avg_before"], r["load_avg_after"] = load0, os.getloadavg()
    return r


def profile_loader(path: str, batches: int, batch_size: int, cutoff: float) -> int:
    """Rate and the top functions (by own time) of ``batches`` loader batches after one warm-up batch."""
    import cProfile
    import pstats

    import torch

    from symscale.data.loader import StreamingLoader

    torch.set_num_threads(1)
    it = iter(StreamingLoader(path, "train", batch_size=batch_size, cutoff=cutoff, seed=0))
    next(it)
    prof = cProfile.Profile()
    atoms = 0
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(batches):
        atoms += int(next(it).n_atoms.sum())
    prof.disable()
    wall = time.perf_counter() - t0
    print(f"{path}: {batches} batches, {atoms / wall:,.0f} atoms/s under the profiler")
    pstats.Stats(prof).sort_stats("tottime").print_stats(8)
    return 0


def check_flags(prepare_args: str) -> list[str]:
    help_text = subprocess.run([str(SYMSCALE), "data", "prepare", "--help"], capture_output=True,
                               text=True).stdout
    flags = [a for a in shlex.split(prepare_args) if a.startswith("--")]
    return [f for f in flags if not re.search(re.escape(f.split("=")[0]) + r"\b", help_text)]


# ---------------------------------------------------------------------------------------- report
def fmt(x, spec=",.0f"):
    return "—" if x is None else format(x, spec)


def report(res: dict) -> str:
    lines = ["| set | structures (atoms) | K | prepare wall s | structures/s | atoms/s | CPU s | "
             "peak RSS largest process MiB (wait4) | peak Σ RSS / Σ anon / Σ PSS MiB (procs) | "
             "raw ase.db structures/s 1 proc / K procs | prepare / raw (1 proc) | prepare / raw (K procs) | "
             "CPU ratio | same output as K=1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in res["sets"]:
        raw1 = s.get("raw", {}).get("1", {}).get("structures_per_s")
        for run in s["runs"]:
            k = run["workers"]
            p = run.get("prepare", {})
            rawk = s.get("raw", {}).get(str(k), {}).get("structures_per_s")
            if p.get("rc", 1) != 0:
                lines.append(f"| {s['name']} | {fmt(s['structures'])} ({fmt(s['atoms'])}) | {k} | failed (rc "
                             f"{p.get('rc')}): {p.get('error', '')} ||||||||||")
                continue
            rate = run["structures_per_s"]
            # load-independent: CPU seconds per structure of the raw reader / of the preparer (all processes)
            rk = s.get("raw", {}).get(str(k)) or s.get("raw", {}).get("1")
            n = (run.get("output") or {}).get("structures") or s["structures"]
            cpu_ratio = (rk["cpu_s"] / rk["structures"]) / (p["cpu_s"] / n) if rk and n else None
            lines.append(
                f"| {s['name']} | {fmt(s['structures'])} ({fmt(s['atoms'])}) | {k} | {p['wall_s']:.1f} | {rate:,.0f} | "
                f"{run['atoms_per_s']:,.0f} | {p['cpu_s']:.1f} | {p['maxrss_mib_wait4']:,.0f} | "
                f"{p['sum_rss_mib']:,.0f} / {p['sum_anon_mib']:,.0f} / {p['sum_pss_mib']:,.0f} ({p['max_procs']}) | "
                f"{fmt(raw1)} / {fmt(rawk)} | {fmt(run.get('ratio_raw1'), '.2f')} | "
                f"{fmt(run.get('ratio_rawk'), '.2f')} | {fmt(cpu_ratio, '.2f')} | {run.get('same_as_k1', '—')} |")
    lines += ["", "| prepared set (K) | train structures | batches × size | atoms/s | structures/s | edges/s | "
              "open s | loader peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for s in res["sets"]:
        lr = s.get("loader")
        if not lr:
            continue
        if "error" in lr:
            lines.append(f"| {s['name']} ({s.get('loader_k')}) | failed: {lr['error']} ||||||")
            continue
        lines.append(f"| {s['name']} ({s['loader_k']}) | {lr['train_structures']:,} | {lr['batches']} × "
                     f"{lr['batch_size']} | {lr['atoms_per_s']:,.0f} | {lr['structures_per_s']:,.0f} | "
                     f"{lr['edges_per_s']:,.0f} | {lr['open_s']:.2f} | {lr['maxrss_mib']:,.0f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--sets", nargs="+", default=["train_100k", "train_1M"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--prepare-args", default="--workers {k} --no-progress",
                    help="flags after SRC --out OUT; {k} is the worker count")
    ap.add_argument("--out-root", help="prepared outputs go here (default ROOT/prepared)")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw ase.db reference runs")
    ap.add_argument("--raw-max-shards", type=int, default=0,
                    help="time the raw reader on at most this many evenly spaced shards (default 0: all)")
    ap.add_argument("--no-warm", action="store_true", help="do not pre-read the shards into the page cache")
    ap.add_argument("--loader-batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--sample-s", type=float, default=0.5, help="/proc sampling period")
    ap.add_argument("--keep", action="store_true", help="keep every prepared output (default: only the "
                    "largest K of each set, for the loader)")
    ap.add_argument("--force", action="store_true", help="run even if prepare --help lacks a flag")
    ap.add_argument("--json", help="results (default ROOT/results/prepare_scale.json)")
    ap.add_argument("--report", metavar="JSON", help="print the table of an earlier run and exit")
    ap.add_argument("--profile-loader", metavar="PREPARED",
                    help="cProfile --loader-batches training batches of a prepared directory and exit")
    args = ap.parse_args(argv)
    if args.profile_loader:
        return profile_loader(args.profile_loader, args.loader_batches, args.batch_size, args.cutoff)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0

    root = Path(args.root)
    out_root = Path(args.out_root) if args.out_root else root / "prepared"
    res_dir = root / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    out_root.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else res_dir / "prepare_scale.json"
    missing = check_flags(args.prepare_args)
    if missing and not args.force:
        print(f"symscale data prepare --help has no {', '.join(missing)}: the parallel preparer is not "
              "installed yet (use --prepare-args or --force)", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    # the working tree may differ from the commit: fingerprint the sources that were measured
    h = hashlib.sha256()
    for f in sorted((REPO / "src" / "symscale").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git,
           "src_sha256": h.hexdigest()[:16],
           "argv": sys.argv, "cpus": os.cpu_count(), "sets": []}

    def save():
        json_path.write_text(json.dumps(res, indent=1) + "\n")

    workers = sorted(set(args.workers))
    for name in args.sets:
        src = root / name
        s = {"name": name, "dir": str(src), **set_size(src), "runs": [], "raw": {}}
        res["sets"].append(s)
        if not args.no_warm:
            s["warm_cache_s"] = warm_cache(src)
        ref_digests = None
        for k in workers:
            if not args.no_raw:
                print(f"[{name}] raw ase.db, {k} process(es) ...", flush=True)
                s["raw"][str(k)] = raw(src, k, res_dir / f"raw_{name}_p{k}.json", res_dir / f"raw_{name}_p{k}.log",
                                    args.raw_max_shards)
                print(f"  {s['raw'][str(k)]['structures_per_s']:,.0f} structures/s", flush=True)
                save()
            out = out_root / f"{name}_k{k}"
            remove_output(out, out_root)
            cmd = [str(SYMSCALE), "data", "prepare", str(src), "--out", str(out),
                   *shlex.split(args.prepare_args.format(k=k))]
            print(f"[{name}] {' '.join(cmd)}", flush=True)
            log = res_dir / f"prepare_{name}_k{k}.log"
            p = measure(cmd, sample_s=args.sample_s, env=env, log=log)
            run = {"workers": k, "prepare": p, "log": str(log)}
            s["runs"].append(run)
            if p["rc"] != 0:
                tail = log.read_text(errors="replace").strip().splitlines()
                p["error"] = tail[-1] if tail else ""
                print(f"  failed (rc {p['rc']}): {p['error']}", flush=True)
                save()
                continue
            counts = output_counts(out)
            run["output"] = {**counts, "bytes": dir_bytes(out)}
            n = counts["structures"] or s["structures"]
            run["structures_per_s"] = n / p["wall_s"]
            run["atoms_per_s"] = (counts["atoms"] or s["atoms"]) / p["wall_s"]
            if s["structures"] is not None and counts["structures"] != s["structures"]:
                run["warning"] = f"wrote {counts['structures']} structures, the source has {s['structures']}"
            if "1" in s["raw"]:
                run["ratio_raw1"] = run["structures_per_s"] / s["raw"]["1"]["structures_per_s"]
            if str(k) in s["raw"]:
                run["ratio_rawk"] = run["structures_per_s"] / s["raw"][str(k)]["structures_per_s"]
            d = digests(out)
            if ref_digests is None:
                ref_digests = d
                run["same_as_k1"] = "—" if k == workers[0] else None
            else:
                diff = sorted(f for f in set(d) | set(ref_digests) if d.get(f) != ref_digests.get(f))
                run["same_as_k1"] = "yes" if not diff else "no: " + ", ".join(diff)
            print(f"  {p['wall_s']:.1f} s, {run['structures_per_s']:,.0f} structures/s, wait4 max RSS "
                  f"{p['maxrss_mib_wait4']:,.0f} MiB, peak sum RSS {p['sum_rss_mib']:,.0f} MiB "
                  f"(anon {p['sum_anon_mib']:,.0f}, PSS {p['sum_pss_mib']:,.0f}), same as K={workers[0]}: "
                  f"{run['same_as_k1']}", flush=True)
            save()
            if not args.keep and k != workers[-1]:
                remove_output(out, out_root)
        ok = [r for r in s["runs"] if r["prepare"]["rc"] == 0]
        if ok:
            last = ok[-1]
            out = out_root / f"{name}_k{last['workers']}"
            print(f"[{name}] training loader on {out} ...", flush=True)
            s["loader_k"] = f"K={last['workers']}"
            s["loader"] = loader_rate(out, args.loader_batches, args.batch_size, args.cutoff,
                                      res_dir / f"loader_{name}.log")
            print(f"  {s['loader'].get('atoms_per_s', 0):,.0f} atoms/s", flush=True)
            save()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print()
    print(report(res))
    print(f"\nresults: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
