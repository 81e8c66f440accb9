"""mace-torch peer for ``benchmarks/models.py``: training-step throughput of a MACE model of matched size.

This script runs INSIDE a separate virtual environment that has mace-torch (it pins e3nn 0.4.4, which
symscale's own environment does not use); it never imports symscale. See ``benchmarks/README.md`` for
how to create that environment. ``benchmarks/models.py --mace-python PY`` calls it as a subprocess::

    OMP_NUM_THREADS=1 /tmp/mace-venv/bin/python benchmarks/mace_peer.py --xyz molecules.extxyz \
        --params 328272 --lmax 4 --repeats 5 --threads 1

What it does, in one process:

1. reads the molecules of the extxyz file (the same batch that ``models.py`` timed) and turns them into one
   MACE batch (MACE's own neighbour list, same cutoff);
2. builds ``mace.modules.MACE`` (interaction blocks ``RealAgnosticInteractionBlock`` then
   ``RealAgnosticResidualInteractionBlock``, as ``mace_run_train --model MACE``) whose hidden features have
   every degree ``0..hidden_lmax`` with ``C`` channels and whose edge spherical harmonics go to ``lmax``;
   ``C`` is chosen so that the parameter count is closest to ``--params`` (the count is an exact quadratic in
   ``C``, fitted from three small builds, then checked by building the final model);
3. times training steps, median over ``--repeats`` after warm-up:

   * ``forces``: energy, forces ``-dE/dpos`` by autograd with ``create_graph`` (MACE is conservative; this is
     what training MACE on forces costs), loss = per-atom energy MAE + mean per-atom force-error L2 norm (the
     study's loss), backward, AdamW step;
   * ``energy_only``: the same without forces (loss = per-atom energy MAE): a lower bound on MACE's cost,
     comparable to a direct-force model that needs a single backward pass;

4. counts matmul FLOPs of one ``forces`` step (``torch.utils.flop_counter.FlopCounterMode``, the convention of
   ``symscale.models.flops``) and the aten ops per step, and measures a float32 GEMM peak in this process.

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts aten op calls (after autograd, i.e. the kernels actually dispatched)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def gemm_peak(sizes=(512, 1024, 2048), repeats=5) -> dict:
    """Best float32 square-matmul rate in GFLOP/s over ``sizes`` and ``repeats`` (this process, these threads)."""
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        rates[n] = 2.0 * n**3 / best / 1e9
    return {"gflops": max(rates.values()), "by_size": rates}


def read_batch(path: str, cutoff: float):
    """The molecules of ``path`` as one MACE batch dict, plus per-structure reference energy / forces."""
    import ase.io
    from mace import data as mdata
    from mace.tools import torch_geometric, utils

    atoms_list = ase.io.read(path, index=":")
    z_table = utils.get_atomic_number_table_from_zs(int(z) for a in atoms_list for z in a.numbers)
    items, energies, forces = [], [], []
    for atoms in atoms_list:
        config = mdata.config_from_atoms(atoms)
        items.append(mdata.AtomicData.from_config(config, z_table=z_table, cutoff=cutoff))
        energies.append(float(atoms.info.get("energy", 0.0)))
        forces.append(np.asarray(atoms.arrays.get("forces", np.zeros((len(atoms), 3)))))
    batch = torch_geometric.Batch.from_data_list(items)
    data = batch.to_dict()
    ref = {"energy": torch.tensor(energies), "forces": torch.tensor(np.concatenate(forces), dtype=torch.float32),
           "n_atoms": torch.tensor([len(a) for a in atoms_list])}
    return data, ref, z_table


def build_mace(channels: int, lmax: int, hidden_lmax: int, correlation: int, num_interactions: int,
               num_elements: int, zs, avg_neighbors: float, cutoff: float):
    from e3nn import o3
    from mace import modules

    hidden = o3.Irreps(" + ".join(f"{channels}x{ell}{'e' if ell % 2 == 0 else 'o'}"
                                  for ell in range(hidden_lmax + 1)))
    return modules.MACE(
        r_max=cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=lmax,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=num_interactions, num_elements=num_elements, hidden_irreps=hidden,
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(num_elements), avg_num_neighbors=avg_neighbors,
        atomic_numbers=list(zs), correlation=correlation, gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64])


def n_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def match_channels(target: int, make) -> tuple[int, dict[int, int]]:
    """``C`` whose parameter count is closest to ``target``: exact quadratic fit through three builds."""
    probe = {c: n_params(make(c)) for c in (2, 4, 6)}
    cs = np.array(list(probe), dtype=float)
    a, b, c0 = np.polyfit(cs, np.array(list(probe.values()), dtype=float), 2)
    disc = b * b - 4 * a * (c0 - target)
    guess = (-b + np.sqrt(max(disc, 0.0))) / (2 * a) if a > 0 else (target - c0) / b
    cands = {max(1, int(np.floor(guess))), max(1, int(np.ceil(guess)))}
    best = min(cands, key=lambda k: abs(a * k * k + b * k + c0 - target))
    return best, probe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--xyz", required=True, help="extxyz file with the molecules to batch")
    ap.add_argument("--params", type=int, required=True, help="target parameter count")
    ap.add_argument("--lmax", type=int, default=4, help="max_ell of the edge spherical harmonics")
    ap.add_argument("--hidden-lmax", type=int, default=None, help="highest degree of hidden features (default lmax)")
    ap.add_argument("--correlation", type=int, default=3, help="body order - 1 of the symmetric contraction")
    ap.add_argument("--num-interactions", type=int, default=2)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-energy-only", action="store_true", help="skip the energy-only timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    hidden_lmax = args.lmax if args.hidden_lmax is None else args.hidden_lmax

    data, ref, z_table = read_batch(args.xyz, args.cutoff)
    n_atoms = int(data["positions"].shape[0])
    avg = data["edge_index"].shape[1] / n_atoms
    zs = list(z_table.zs)

    def make(c):
        return build_mace(c, args.lmax, hidden_lmax, args.correlation, args.num_interactions, len(zs), zs, avg,
                          args.cutoff)

    t0 = time.perf_counter()
    channels, probe = match_channels(args.params, make)
    model = make(channels)
    build_s = time.perf_counter() - t0
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_struct = int(ref["n_atoms"].shape[0])

    def step(with_forces: bool):
        opt.zero_grad(set_to_none=True)
        d = dict(data)
        d["positions"] = data["positions"].clone()
        out = model(d, training=True, compute_force=with_forces)
        loss = ((out["energy"] - ref["energy"]).abs() / ref["n_atoms"]).mean()
        if with_forces:
            loss = loss + torch.linalg.vector_norm(out["forces"] - ref["forces"], dim=-1).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def timed(with_forces: bool) -> dict:
        for _ in range(args.warmup):
            step(with_forces)
        t, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            step(with_forces)
            t.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        med = statistics.median(t)
        return {"step_s": med, "step_s_all": t, "cpu_step_s": statistics.median(cpu),
                "structures_per_s": n_struct / med}

    peak0 = gemm_peak()
    res = {"forces": timed(True)}
    if not args.no_energy_only:
        res["energy_only"] = timed(False)
    flop = FlopCounterMode(display=False)
    with flop:
        step(True)
    ops = OpCounter()
    with ops:
        step(True)
    peak1 = gemm_peak()
    peak = max(peak0["gflops"], peak1["gflops"])
    flops = int(flop.get_total_flops())
    res["forces"]["flops"] = flops
    res["forces"]["gflops_per_s"] = flops / res["forces"]["step_s"] / 1e9
    res["forces"]["pct_peak"] = 100 * res["forces"]["gflops_per_s"] / peak
    res["forces"]["aten_ops"] = ops.count
    import e3nn
    import mace
    out = {"mace_version": mace.__version__, "e3nn_version": e3nn.__version__, "torch_version": torch.__version__,
           "channels": channels, "params": n_params(model), "target_params": args.params, "probe_params": probe,
           "lmax": args.lmax, "hidden_lmax": hidden_lmax, "correlation": args.correlation,
           "num_interactions": args.num_interactions, "structures": n_struct, "atoms": n_atoms,
           "edges": int(data["edge_index"].shape[1]), "threads": args.threads, "build_s": build_s,
           "gemm_peak_gflops": peak, "gemm_peak_runs": [peak0, peak1], **res}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
