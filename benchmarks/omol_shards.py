"""Benchmark data: an OMol25-shaped synthetic shard set of sharded ``.aselmdb`` databases (issue #13, §3).

    .venv/bin/python benchmarks/omol_shards.py generate [--root /work/bench-data/omol_synth] \
        [--unique-shards 8] [--rows-per-shard 12500] [--copies 10] [--workers 2] [--seed 0] [--link]
    .venv/bin/python benchmarks/omol_shards.py raw DIR [--shards 0,10,20] [--limit N] [--procs P] [--json OUT]

``generate`` writes ``ROOT/train_100k/`` (the ``--unique-shards`` distinct shards, each
``--rows-per-shard`` rows, written by ``--workers`` processes) and ``ROOT/train_1M/`` (``unique × copies``
shards ``data0000.aselmdb`` ... made by copying the unique shards in turn: shard ``k`` is a byte copy of
unique shard ``k % unique``; ``--link`` makes hard links instead), each with a ``metadata.npz`` whose
``natoms`` are the per-structure atom counts concatenated in sorted shard order, as in the OMol25 release.
The names ``train_100k`` / ``train_1M`` are fixed; their sizes follow the options (defaults: 100,000 and
1,000,000 structures).

It is resumable and idempotent: every shard is written (or copied) under a temporary name and renamed when
complete, a finished shard is skipped, and ``metadata.npz`` is written last, atomically. Rerunning after an
interruption finishes the set; rerunning a finished set does nothing. Per-shard atom counts are kept in
``ROOT/.state/`` (outside the shard directories, so readers of a directory see only shards and metadata).

Each row is what an OMol25 row holds: an ``Atoms`` (no cell, no pbc) with a ``SinglePointCalculator``
energy (eV) and forces (eV/Å), and ``data = {"charge": int, "spin": int multiplicity, "data_id": str,
"source": str, "num_atoms": int}``. Molecules: 5–60 atoms (uniform, mean 32.5), elements H, C, N, O, F, S,
Cl (mostly H/C/N/O), positions uniform in a cube sized for ~12 Å³ per atom with every pair ≥ 1.0 Å apart,
energies = Σ per-element reference energies + noise, forces ~ N(0, 1 eV/Å). ``source`` is unique within
the unique shards (the copies repeat them, as repeated conformers of one system would).

``raw`` is the reference rate of any ``.aselmdb`` reader: one process iterating the shards with ase.db
alone — ``for row in db.select(): row.toatoms(); row.data; row.key_value_pairs`` plus the energy and
forces of the calculator — and prints structures/s and atoms/s (``--shards`` picks shard indices in
sorted order, e.g. a sample of the 1M set; ``--procs 2`` deals the shards to 2 reader processes, the
reference for a 2-worker reader).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path("/work/bench-data/omol_synth")
ELEMENTS = np.array([1, 6, 7, 8, 9, 16, 17])
ELEMENT_P = np.array([0.45, 0.30, 0.08, 0.11, 0.02, 0.02, 0.02])
# rough isolated-atom reference energies (eV), so totals look like DFT totals of OMol25
E_REF = {1: -13.6, 6: -1029.5, 7: -1485.0, 8: -2042.6, 9: -2714.3, 16: -10831.3, 17: -12577.0}
DATA_IDS = np.array(["elytes", "biomolecules", "metal_complexes", "reactivity", "neutral_organics"])
DATA_ID_P = np.array([0.25, 0.3, 0.1, 0.15, 0.2])
MIN_ATOMS, MAX_ATOMS = 5, 60
MIN_DIST = 1.0
VOLUME_PER_ATOM = 12.0  # Å^3


def shard_name(k: int) -> str:
    return f"data{k:04d}.aselmdb"


# ---------------------------------------------------------------------------------------- molecules
def random_positions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points uniform in a cube with every pair >= MIN_DIST apart (resample the offenders)."""
    side = (n * VOLUME_PER_ATOM) ** (1.0 / 3.0)
    pos = rng.uniform(0.0, side, size=(n, 3))
    for _ in range(10_000):
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        close = np.argwhere(np.triu(d < MIN_DIST))
        if len(close) == 0:
            return pos - pos.mean(axis=0)
        bad = np.unique(close[:, 1])
        pos[bad] = rng.uniform(0.0, side, size=(len(bad), 3))
    raise RuntimeError("could not place atoms")  # pragma: no cover


def random_row(rng: np.random.Generator, shard: int, i: int):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    n = int(rng.integers(MIN_ATOMS, MAX_ATOMS + 1))
    numbers = rng.choice(ELEMENTS, size=n, p=ELEMENT_P)
    atoms = Atoms(numbers=numbers, positions=random_positions(rng, n))
    energy = float(sum(E_REF[int(z)] for z in numbers) + rng.normal(0.0, 0.5 * n))
    forces = rng.normal(0.0, 1.0, size=(n, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    data_id = str(rng.choice(DATA_IDS, p=DATA_ID_P))
    data = {
        "charge": int(rng.choice([0, 1, -1], p=[0.8, 0.1, 0.1])),
        "spin": int(rng.choice([1, 2, 3], p=[0.85, 0.1, 0.05])),
        "data_id": data_id,
        "source": f"synthetic/{data_id}/s{shard:04d}/{i:06d}",
        "num_atoms": n,
    }
    return atoms, data


# ---------------------------------------------------------------------------------------- generate
def _remove_lmdb(path: Path) -> None:
    for p in (path, Path(str(path) + "-lock")):
        p.unlink(missing_ok=True)


def write_shard(out_dir: str, state_dir: str, shard: int, rows: int, seed: int) -> tuple[int, float, bool]:
    """Write unique shard ``shard`` (skipped when it exists). Returns (shard, seconds, written)."""
    import ase.db

    out, state = Path(out_dir), Path(state_dir)
    final = out / shard_name(shard)
    natoms_file = state / f"natoms_{shard:04d}.npy"
    if final.exists() and natoms_file.exists():
        return shard, 0.0, False
    t0 = time.perf_counter()
    tmp = out / f".{shard_name(shard)}.tmp"
    _remove_lmdb(tmp)
    rng = np.random.default_rng([seed, shard])
    natoms = np.empty(rows, dtype=np.int64)
    db = ase.db.connect(str(tmp), type="aselmdb", use_lock_file=False)
    with db:  # one LMDB write transaction for the whole shard
        for i in range(rows):
            atoms, data = random_row(rng, shard, i)
            natoms[i] = len(atoms)
            db.write(atoms, data=data)
    np.save(state / f".natoms_{shard:04d}.tmp.npy", natoms)
    os.replace(state / f".natoms_{shard:04d}.tmp.npy", natoms_file)
    Path(str(tmp) + "-lock").unlink(missing_ok=True)
    os.replace(tmp, final)
    return shard, time.perf_counter() - t0, True


def copy_shard(src: Path, dst: Path, link: bool) -> bool:
    if dst.exists():
        return False
    tmp = dst.parent / f".{dst.name}.tmp"
    tmp.unlink(missing_ok=True)
    if link:
        os.link(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def write_metadata(directory: Path, natoms: np.ndarray) -> None:
    final = directory / "metadata.npz"
    if final.exists():
        old = np.load(final)["natoms"]
        if np.array_equal(old, natoms):
            return
    tmp = directory / ".metadata.tmp.npz"
    np.savez(tmp, natoms=natoms)
    os.replace(tmp, final)


def generate(args) -> dict:
    root = Path(args.root)
    uniq_dir, big_dir, state = root / args.small_name, root / args.big_name, root / ".state"
    for d in (uniq_dir, big_dir, state):
        d.mkdir(parents=True, exist_ok=True)
    u = args.unique_shards
    t0 = time.perf_counter()
    timings = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(write_shard, str(uniq_dir), str(state), k, args.rows_per_shard, args.seed)
                   for k in range(u)]
        for f in futures:
            k, sec, written = f.result()
            timings[k] = sec
            print(f"unique shard {k}: {'written in %.1f s' % sec if written else 'already complete'}",
                  flush=True)
    t_unique = time.perf_counter() - t0
    natoms_u = [np.load(state / f"natoms_{k:04d}.npy") for k in range(u)]
    write_metadata(uniq_dir, np.concatenate(natoms_u))

    t1 = time.perf_counter()
    n_big = u * args.copies
    copied = 0
    for k in range(n_big):
        copied += copy_shard(uniq_dir / shard_name(k % u), big_dir / shard_name(k), args.link)
    write_metadata(big_dir, np.concatenate([natoms_u[k % u] for k in range(n_big)]))
    t_copy = time.perf_counter() - t1

    summary = {"root": str(root), "seed": args.seed, "workers": args.workers}
    for name, d in ((args.small_name, uniq_dir), (args.big_name, big_dir)):
        nat = np.load(d / "metadata.npz")["natoms"]
        shards = sorted(d.glob("*.aselmdb"))
        summary[name] = {"dir": str(d), "shards": len(shards), "structures": int(len(nat)),
                         "atoms": int(nat.sum()), "mean_atoms": float(nat.mean()),
                         "bytes": int(sum(p.stat().st_size for p in shards))}
    summary["unique_wall_s"] = t_unique
    summary["unique_shard_s"] = timings
    summary["copy_wall_s"] = t_copy
    summary["copied_shards"] = copied
    return summary


# ---------------------------------------------------------------------------------------- raw rate
def iterate_shard(path: Path, limit: int | None = None) -> tuple[int, int]:
    """What any reader must do per row. Returns (structures, atoms)."""
    import ase.db

    db = ase.db.connect(str(path), type="aselmdb", readonly=True, use_lock_file=False)
    s = a = 0
    try:
        for row in db.select():
            atoms = row.toatoms()
            data = row.data
            kvp = row.key_value_pairs
            e = atoms.calc.results["energy"]
            f = atoms.calc.results["forces"]
            assert data is not None and kvp is not None and e is not None and f is not None
            s += 1
            a += len(atoms)
            if limit is not None and s >= limit:
                break
    finally:
        db.close()
    return s, a


def _iterate_files(files: list[str], limit: int | None) -> tuple[int, int, float]:
    cpu0 = time.process_time()
    s = a = 0
    for p in files:
        ds, da = iterate_shard(Path(p), limit)
        s, a = s + ds, a + da
    return s, a, time.process_time() - cpu0


def raw_rate(directory: Path, shards: list[int] | None = None, limit: int | None = None,
             procs: int = 1) -> dict:
    """Iterate the shards in ``procs`` processes (shards dealt round-robin; 1: this process)."""
    files = sorted(Path(directory).glob("*.aselmdb"))
    if shards is not None:
        files = [files[k] for k in shards]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if procs == 1:
        s, a, cpu = _iterate_files([str(p) for p in files], limit)
    else:
        with ProcessPoolExecutor(max_workers=procs) as pool:
            parts = list(pool.map(_iterate_files, [[str(p) for p in files[i::procs]] for i in range(procs)],
                                  [limit] * procs))
        s, a, cpu = (sum(x[j] for x in parts) for j in range(3))
    wall = time.perf_counter() - t0
    return {"dir": str(directory), "shards": [p.name for p in files], "procs": procs, "structures": s,
            "atoms": a, "wall_s": wall, "cpu_s": cpu, "structures_per_s": s / wall, "atoms_per_s": a / wall,
            "structures_per_cpu_s": s / cpu, "load_avg_before": load0, "load_avg_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write (or finish) the shard set")
    g.add_argument("--root", default=str(DEFAULT_ROOT))
    g.add_argument("--unique-shards", type=int, default=8)
    g.add_argument("--rows-per-shard", type=int, default=12_500)
    g.add_argument("--copies", type=int, default=10, help="the big set has unique-shards × copies shards")
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--link", action="store_true", help="hard-link instead of copying the big set's shards")
    g.add_argument("--small-name", default="train_100k")
    g.add_argument("--big-name", default="train_1M")
    g.add_argument("--json", help="write the summary here")
    r = sub.add_parser("raw", help="raw ase.db iteration rate of a shard directory (one process)")
    r.add_argument("dir")
    r.add_argument("--shards", help="comma-separated shard indices (sorted order); default: all")
    r.add_argument("--limit", type=int, help="rows per shard at most")
    r.add_argument("--procs", type=int, default=1, help="reader processes (shards dealt round-robin)")
    r.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        t0 = time.perf_counter()
        res = generate(args)
        res["total_wall_s"] = time.perf_counter() - t0
    else:
        shards = [int(x) for x in args.shards.split(",")] if args.shards else None
        res = raw_rate(Path(args.dir), shards, args.limit, args.procs)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
