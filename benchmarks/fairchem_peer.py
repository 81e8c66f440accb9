"""fairchem peer for ``benchmarks/models.py``: training-step throughput and FLOPs of fairchem's eSEN.

This script runs INSIDE a separate virtual environment that has ``fairchem-core`` (2.24.0, beside
``torch==2.13.0`` CPU; see ``benchmarks/README.md``); it never imports symscale.
``benchmarks/models.py --fairchem-python PY`` calls it as a subprocess::

    OMP_NUM_THREADS=1 /tmp/fairchem-venv/bin/python benchmarks/fairchem_peer.py --xyz molecules.extxyz \
        --params 125000 --lmax 4 --mmax 2 --num-layers 2 --threads 1

What it does, in one process:

1. reads the molecules of the extxyz file (the batch ``models.py`` timed) and builds fairchem's batch
   (``AtomicData`` per molecule, ``atomicdata_list_to_batch``) with the same directed neighbour list as
   symscale (``ase.neighborlist``, every pair within ``--cutoff``, no cap; ``edge_index = [source j,
   target i]``, fairchem's convention); charge 0, spin 1;
2. builds fairchem's eSEN as a new user would: ``eSCNMDBackbone`` (``fairchem/core/models/uma/escn_md.py``;
   no dataset embedding, no MoLE, ``execution_mode="general"``, every other argument at its default unless
   given here: ``norm_type="rms_norm_sh"``, ``act_type="gate"``, ``ff_type="grid"``) with the direct heads of
   the same file, ``MLP_Energy_Head`` (energy) and ``Linear_Force_Head`` (forces from the ℓ = 1 features).
   ``sphere_channels = hidden_channels = edge_channels = C`` (as in fairchem's released configs);
   ``num_distance_basis`` stays fixed (default 64, the released configs' value). ``C`` is chosen so that the
   parameter count is the closest to ``--params`` (an exact quadratic in ``C``, fitted from three builds,
   then checked by building the model), unless ``--channels`` fixes it;
3. times training steps (zero_grad, forward, loss = per-atom energy MAE + mean per-atom force-error L2
   norm, backward, ``torch.optim.AdamW`` step), median over ``--repeats`` repeats of at least
   ``--min-time`` s each after ``--warmup`` steps, wall and process-CPU time;
4. counts FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (matmul-like ops, 2 per multiply-add, the
   convention of ``symscale.models.flops``): the forward pass (κ = forward FLOPs / (params × atoms)), one
   training step (forward + loss + backward), and the forward FLOPs per module (``--depth`` levels), plus
   the parameter count per module; aten ops per step; a float32 GEMM peak in this process.

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

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


def gemm_peak(sizes=(512, 1024, 2048), repeats: int = 5) -> float:
    """Best float32 square-matmul rate in GFLOP/s over ``sizes`` and ``repeats`` (this process, these threads)."""
    best_rate = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best_rate = max(best_rate, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best_rate


def module_flops(counter: FlopCounterMode, depth: int) -> dict[str, int]:
    """Total FLOPs of every module at most ``depth`` levels below the root (names relative to the root).

    FlopCounterMode attributes a parent's FLOPs to it *and* to each ancestor, so values nest: a name's
    total includes its children's. The root's name is replaced by ``""``.
    """
    out = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        parts = name.split(".")
        rel = ".".join(parts[1:])
        if len(parts) - 1 <= depth:
            out[rel] = int(sum(ops.values()))
    return dict(sorted(out.items()))


def module_params(model: torch.nn.Module, depth: int) -> dict[str, int]:
    """Trainable parameters of every module at most ``depth`` levels deep (nested like :func:`module_flops`)."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")[:-1]
        for k in range(0, min(len(parts), depth) + 1):
            key = ".".join(parts[:k])
            out[key] = out.get(key, 0) + p.numel()
    return dict(sorted(out.items()))


def read_batch(path: str, cutoff: float):
    """The molecules of ``path`` as one fairchem batch (every pair within ``cutoff``), plus references."""
    import ase.io
    from ase.neighborlist import neighbor_list
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

    atoms_list = ase.io.read(path, index=":")
    dtype = torch.get_default_dtype()
    items, energies, forces = [], [], []
    for atoms in atoms_list:
        i, j = neighbor_list("ij", atoms, cutoff, self_interaction=False)
        n = len(atoms)
        items.append(AtomicData(
            pos=torch.tensor(atoms.positions, dtype=dtype),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
            cell=torch.zeros(1, 3, 3, dtype=dtype), pbc=torch.zeros(1, 3, dtype=torch.bool),
            natoms=torch.tensor([n]),
            edge_index=torch.stack([torch.as_tensor(j), torch.as_tensor(i)]).long(),  # (source, target)
            cell_offsets=torch.zeros(len(i), 3, dtype=dtype), nedges=torch.tensor([len(i)]),
            charge=torch.tensor([0]), spin=torch.tensor([1]),
            fixed=torch.zeros(n, dtype=torch.long), tags=torch.zeros(n, dtype=torch.long)))
        energies.append(float(atoms.info.get("energy", 0.0)))
        forces.append(np.asarray(atoms.arrays.get("forces", np.zeros((n, 3)))))
    batch = atomicdata_list_to_batch(items)
    ref = {"energy": torch.tensor(energies, dtype=dtype),
           "forces": torch.tensor(np.concatenate(forces), dtype=dtype),
           "n_atoms": torch.tensor([len(a) for a in atoms_list])}
    return batch, ref


class FairchemESEN(torch.nn.Module):
    """``eSCNMDBackbone`` + ``MLP_Energy_Head`` + ``Linear_Force_Head``: energies ``(S,)`` and forces ``(n, 3)``."""

    def __init__(self, channels: int, lmax: int, mmax: int, num_layers: int, num_distance_basis: int,
                 ff_type: str, cutoff: float):
        super().__init__()
        from fairchem.core.models.uma.escn_md import Linear_Force_Head, MLP_Energy_Head, eSCNMDBackbone

        self.backbone = eSCNMDBackbone(
            sphere_channels=channels, hidden_channels=channels, edge_channels=channels, lmax=lmax, mmax=mmax,
            num_layers=num_layers, num_distance_basis=num_distance_basis, cutoff=cutoff, ff_type=ff_type,
            otf_graph=False, direct_forces=True, regress_forces=True, use_dataset_embedding=False)
        self.energy_head = MLP_Energy_Head(self.backbone)
        self.force_head = Linear_Force_Head(self.backbone)

    def forward(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.backbone(data)
        energy = self.energy_head(data, emb)["energy"]
        forces = self.force_head(data, emb)["forces"]
        return energy, forces


def n_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def match_channels(target: int, make) -> tuple[int, dict[int, int]]:
    """``C`` whose parameter count is closest to ``target``: exact quadratic fit through three builds."""
    probe = {c: n_params(make(c)) for c in (4, 8, 12)}
    a, b, c0 = np.polyfit(np.array(list(probe), dtype=float), np.array(list(probe.values()), dtype=float), 2)
    guess = (-b + np.sqrt(max(b * b - 4 * a * (c0 - target), 0.0))) / (2 * a)
    cands = {max(1, int(np.floor(guess))), max(1, int(np.ceil(guess)))}
    return min(cands, key=lambda k: abs(a * k * k + b * k + c0 - target)), probe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--xyz", required=True, help="extxyz file with the molecules to batch")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--params", type=int, help="target parameter count (C chosen to match)")
    group.add_argument("--channels", type=int, help="sphere = hidden = edge channels C")
    ap.add_argument("--lmax", type=int, default=4)
    ap.add_argument("--mmax", type=int, default=2)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--num-distance-basis", type=int, default=64)
    ap.add_argument("--ff-type", default="grid", choices=("grid", "spectral"), help="node feed-forward")
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds one timed repeat lasts at least")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depth", type=int, default=4, help="module depth of the FLOP / parameter breakdown")
    ap.add_argument("--no-timing", action="store_true", help="only count parameters and FLOPs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    warnings.filterwarnings("ignore")

    data, ref = read_batch(args.xyz, args.cutoff)
    n_atoms, n_struct = int(data["pos"].shape[0]), int(ref["n_atoms"].shape[0])

    def make(c):
        torch.manual_seed(0)
        return FairchemESEN(c, args.lmax, args.mmax, args.num_layers, args.num_distance_basis, args.ff_type,
                            args.cutoff)

    t0 = time.perf_counter()
    probe = None
    channels = args.channels
    if channels is None:
        channels, probe = match_channels(args.params, make)
    model = make(channels)
    build_s = time.perf_counter() - t0
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pos0 = data["pos"].clone()

    def forward_loss() -> torch.Tensor:
        data["pos"] = pos0.clone()
        energy, forces = model(data)
        loss = ((energy - ref["energy"]).abs() / ref["n_atoms"]).mean()
        return loss + torch.linalg.vector_norm(forces - ref["forces"], dim=-1).mean()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = forward_loss()
        loss.backward()
        opt.step()
        return float(loss.detach())

    res: dict = {}
    if not args.no_timing:
        peak0 = gemm_peak()
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        step()
        inner = max(1, int(args.min_time / max(time.perf_counter() - t0, 1e-9)))
        wall, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                step()
            wall.append((time.perf_counter() - t0) / inner)
            cpu.append((time.process_time() - c0) / inner)
        res = {"step_s": statistics.median(wall), "step_s_all": wall, "cpu_step_s": statistics.median(cpu),
               "cpu_step_s_all": cpu, "inner": inner, "gemm_peak_gflops": max(peak0, gemm_peak())}
        res["structures_per_s"] = n_struct / res["step_s"]
        res["structures_per_cpu_s"] = n_struct / res["cpu_step_s"]
        ops = OpCounter()
        with ops:
            step()
        res["aten_ops"] = ops.count
    fwd = FlopCounterMode(display=False)
    with torch.no_grad(), fwd:
        data["pos"] = pos0.clone()
        model(data)
    opt.zero_grad(set_to_none=True)
    f_train, b_train = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with f_train:
        loss = forward_loss()
    with b_train:
        loss.backward()
    opt.zero_grad(set_to_none=True)
    params = n_params(model)
    forward_flops = int(fwd.get_total_flops())
    step_flops = int(f_train.get_total_flops() + b_train.get_total_flops())
    if "step_s" in res:
        res["gflops_per_s"] = step_flops / res["step_s"] / 1e9
        res["pct_peak"] = 100 * res["gflops_per_s"] / res["gemm_peak_gflops"]
    import fairchem.core

    out = {"fairchem_version": fairchem.core.__version__, "torch_version": torch.__version__,
           "model": "eSCNMDBackbone + MLP_Energy_Head + Linear_Force_Head", "channels": channels,
           "params": params, "target_params": args.params, "probe_params": probe, "lmax": args.lmax,
           "mmax": args.mmax, "num_layers": args.num_layers, "num_distance_basis": args.num_distance_basis,
           "ff_type": args.ff_type, "norm_type": model.backbone.norm_type, "act_type": model.backbone.act_type,
           "structures": n_struct, "atoms": n_atoms, "edges": int(data["edge_index"].shape[1]),
           "threads": args.threads, "build_s": build_s, "forward_flops": forward_flops,
           "kappa": forward_flops / (params * n_atoms), "step_flops": step_flops,
           "forward_flops_by_module": module_flops(fwd, args.depth),
           "params_by_module": module_params(model, args.depth),
           "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}, **res}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
