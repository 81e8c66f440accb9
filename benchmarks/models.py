"""Models benchmark: training-step throughput, counted FLOP/s vs a measured GEMM peak, and vs mace-torch.

Usage (the figures of docs/benchmarks.md, section "Models")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/models.py --threads 1 --repeats 5 --batch 12 \
        --json /tmp/models.json [--compile] [--mace-python /tmp/mace-venv/bin/python --mace-width 16]

For every family x width (``--widths mpnn=128,512 esen=8,16``; default: the κ-table widths of
``symscale.models.flops.TABLE_WIDTHS``) on one fixed batch of real molecules (``--data reference``: the RDKit
reference molecules of ``symscale.models.flops`` cycled to ``--batch`` structures; ``--data default`` or a
path: the first ``--batch`` training structures of a prepared dataset, with its normalisation) it reports

* ``params`` and the counted FLOPs of one training step (``training_step_flops``: forward + loss + backward,
  matmul-like aten ops only, 2 FLOPs per multiply-add);
* the median wall time of a full training step (zero_grad, forward, loss = per-atom energy MAE + mean
  per-atom force-error L2, backward, optimizer step: ``--optimizer``, default torch AdamW) over
  ``--repeats`` timed repeats after ``--warmup`` untimed steps; each repeat lasts >= ``--min-time`` s;
* structures/s, atoms/s, FLOP/s and FLOP/s as a % of the float32 GEMM peak measured in the same process
  (square ``torch.mm``, sizes 512/1024/2048, best of 5, same thread count; measured before and after the
  model timings, the higher one is used);
* aten ops dispatched per training step (a ``TorchDispatchMode`` counter, split forward / backward /
  optimizer) and the time they would cost at the measured per-op floor (a loop of tiny ``add`` ops): the
  per-op overhead share of the step;
* the top ops by self CPU time of one profiled step (``torch.profiler``), in the JSON;
* with ``--compile``: ``torch.compile(model, dynamic=True)`` (``symscale.train.compile.compiled``) of
  direct-force models, its compile time and median step time (speed-up vs eager), or the error if it fails;
* with ``--mace-python``: ``benchmarks/mace_peer.py`` run in that interpreter on the same molecules (written
  as extxyz), at the parameter count of esen at ``--mace-width`` and esen's ``lmax``; esen/MACE ratio;
* with ``--fairchem-python``: ``benchmarks/fairchem_peer.py`` (fairchem's eSEN: ``eSCNMDBackbone`` + direct
  heads) in that interpreter on the same molecules, at the parameter count and ``lmax`` / ``mmax`` /
  ``num_layers`` of esen at ``--fairchem-width`` (its ``ff_type`` = esen's ``ffn`` when that is ``grid`` or
  ``spectral``, else fairchem's default ``grid``); κ, step FLOPs and esen/fairchem structures per CPU-second.
  ``--esen-options JSON`` sets esen options (e.g. ``'{"num_layers": 2, "structure": "fairchem"}'``).

Prints Markdown tables; ``--json OUT`` writes every number (written to a temporary file, then renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from symscale.data.batch import Batch  # noqa: E402
from symscale.errors import ConfigError  # noqa: E402
from symscale.models import available, build, count_parameters  # noqa: E402
from symscale.models.flops import TABLE_WIDTHS, default_loss, reference_atoms, training_step_flops  # noqa: E402

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------- measurements
def gemm_peak(sizes=(512, 1024, 2048), repeats: int = 5, dtype=torch.float32) -> dict:
    """Best square-matmul rate (GFLOP/s) over ``sizes`` x ``repeats`` in this process and thread count.

    ``gflops`` uses wall time, ``gflops_cpu`` the process CPU time (what an idle machine would show).
    """
    rates, cpu_rates = {}, {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)
        best = best_cpu = float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            torch.mm(a, b)
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        rates[n] = 2.0 * n**3 / best / 1e9
        cpu_rates[n] = 2.0 * n**3 / max(best_cpu, 1e-9) / 1e9
    return {"gflops": max(rates.values()), "gflops_cpu": max(cpu_rates.values()), "by_size": rates}


def per_op_floor(n: int = 20000) -> float:
    """Seconds per dispatched aten op for a tiny out-of-place ``add`` (the eager dispatch floor)."""
    x = torch.zeros(4)
    for _ in range(1000):
        x = x + 1.0
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            x = x + 1.0
        best = min(best, (time.perf_counter() - t0) / n)
    return best


class OpCounter(TorchDispatchMode):
    """Counts aten ops as dispatched below autograd (what the CPU actually launches)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


OPTIMIZERS = ("adamw", "fused", "schedulefree")


def make_optimizer(name: str, model: torch.nn.Module, lr: float,
                   groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """``adamw``: torch's default AdamW (a per-parameter for-loop on CPU; what ``symscale.train`` builds);
    ``fused``: ``AdamW(fused=True)``; ``schedulefree``: the schedule-free AdamW that
    ``symscale.train.optim.build_optimizer`` builds (``warmup_steps=0``, other settings the defaults), in train
    mode. ``groups``: parameter groups (``symscale.train.optim.parameter_groups``) instead of one group."""
    params = groups if groups is not None else model.parameters()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "fused":
        return torch.optim.AdamW(params, lr=lr, fused=True)
    if name == "schedulefree":
        from symscale.train.config import OptimizerConfig
        from symscale.train.optim import build_optimizer, parameter_groups

        return build_optimizer(groups if groups is not None else parameter_groups(model, lr),
                               OptimizerConfig(name="schedulefree", lr=lr, warmup_steps=0))
    raise ConfigError(f"--optimizer: expected one of {OPTIMIZERS}, got {name!r}")


def _matmul_flops(name: str, shapes: list) -> int:
    """FLOPs of one ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` call from its recorded input shapes (else 0)."""
    try:
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2 * m * k * n
        if name == "aten::addmm":
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2 * m * k * n
        if name == "aten::bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2 * b * m * k * n
        if name == "aten::baddbmm":
            (b, m, k), (_, _, n) = shapes[1], shapes[2]
            return 2 * b * m * k * n
    except (ValueError, IndexError, TypeError):
        return 0
    return 0


class Trainer:
    """One training step of ``model`` on a fixed ``batch``: forward, study loss, backward, AdamW."""

    def __init__(self, model: torch.nn.Module, batch: Batch, optimizer: str = "adamw", lr: float = 1e-4):
        self.model, self.batch = model, batch
        self.opt = make_optimizer(optimizer, model, lr)
        self.forward_model = model

    def forward_loss(self) -> torch.Tensor:
        return default_loss(self.forward_model(self.batch), self.batch)

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward_loss()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def op_counts(self) -> dict[str, int]:
        self.opt.zero_grad(set_to_none=True)
        counts = {}
        with OpCounter() as c:
            loss = self.forward_loss()
        counts["forward"] = c.count
        with OpCounter() as c:
            loss.backward()
        counts["backward"] = c.count
        with OpCounter() as c:
            self.opt.step()
        counts["optimizer"] = c.count
        counts["total"] = sum(counts.values())
        return counts

    def profile(self, top: int = 8) -> dict[str, list[dict]]:
        """One profiled step: top ops by self CPU time, and the slowest matmul shapes with their GFLOP/s."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            self.step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        ops = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                "calls": e.count} for e in events[:top]]
        mats = []
        for e in prof.key_averages(group_by_input_shape=True):
            flops = _matmul_flops(e.key, e.input_shapes)
            if flops and e.self_cpu_time_total > 0:
                mats.append({"op": e.key, "shapes": e.input_shapes[:3], "calls": e.count,
                             "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                             "gflops_per_s": flops * e.count / (e.self_cpu_time_total * 1e-6) / 1e9})
        mats.sort(key=lambda m: m["self_ms"], reverse=True)
        return {"ops": ops, "matmuls": mats[:top]}

    def time_steps(self, warmup: int, repeats: int, min_time: float) -> dict:
        for _ in range(warmup):
            self.step()
        t0 = time.perf_counter()
        self.step()
        one = time.perf_counter() - t0
        inner = max(1, int(min_time / max(one, 1e-9)))
        per_step, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                self.step()
            per_step.append((time.perf_counter() - t0) / inner)
            cpu.append((time.process_time() - c0) / inner)
        return {"step_s": statistics.median(per_step), "step_s_all": per_step, "inner": inner,
                "cpu_step_s": statistics.median(cpu)}


# ----------------------------------------------------------------------------------------------- inputs
def load_structures(source: str, n: int, cutoff: float, sample: int | None = None) -> tuple[list, dict | None]:
    """``n`` structures (``ase.Atoms``) and the normalisation to set on models (None for the reference set).

    From a dataset: its first ``n`` training structures, or with ``sample`` a seeded random choice of ``n``."""
    from ase import Atoms

    if source == "reference":
        ref = reference_atoms()
        return [ref[k % len(ref)].copy() for k in range(n)], None
    import numpy as np

    from symscale.data import open_dataset

    ds = open_dataset(None if source == "default" else source)
    idx = list(ds.split("train"))
    idx = idx[:n] if sample is None else np.random.default_rng(sample).choice(idx, min(n, len(idx)), replace=False)
    if len(idx) < n:
        raise ConfigError(f"--batch: dataset {source!r} has only {len(idx)} training structures, asked for {n}")
    atoms = []
    for i in idx:
        s = ds.structure(int(i))
        a = Atoms(numbers=s.numbers, positions=s.positions)
        a.info["energy"] = float(s.energy)
        a.arrays["forces"] = s.forces.copy()
        atoms.append(a)
    return atoms, ds.normalization


def parse_widths(items: list[str] | None, families: list[str]) -> dict[str, list[int]]:
    widths = {f: list(TABLE_WIDTHS.get(f, ())) for f in families}
    for item in items or []:
        fam, _, ws = item.partition("=")
        if fam not in widths or not ws:
            raise ConfigError(f"--widths: expected FAMILY=W1,W2 with FAMILY in {families}, got {item!r}")
        try:
            widths[fam] = [int(w) for w in ws.split(",")]
        except ValueError:
            raise ConfigError(f"--widths: widths of {fam!r} must be integers, got {ws!r}") from None
    return widths


# ------------------------------------------------------------------------------------------------ rows
def bench_one(fam: str, width: int, batch: Batch, norm: dict | None, args, op_floor: float) -> dict:
    torch.manual_seed(0)
    options = {} if args.forces == "direct" else {"forces": args.forces}
    if args.lmax is not None and fam == "esen":
        options["lmax"] = args.lmax
    if fam == "esen":
        options.update(args.esen_options)
    model = build(fam, width, **options)
    if norm:
        model.set_normalization(norm["e0"], norm["energy_scale"], norm["force_scale"])
    model.train()
    flops = training_step_flops(model, batch)["flops"]
    tr = Trainer(model, batch, args.optimizer)
    t = tr.time_steps(args.warmup, args.repeats, args.min_time)
    ops = tr.op_counts()
    row = {"family": fam, "width": width, "options": options, "params": count_parameters(model), "flops": flops,
           **t, "structures_per_s": batch.n_structures / t["step_s"], "atoms_per_s": batch.tokens / t["step_s"],
           "gflops_per_s": flops / t["step_s"] / 1e9, "ops": ops,
           "op_overhead_share": ops["total"] * op_floor / t["step_s"], "profile": tr.profile()}
    if args.compile and model.force_mode == "direct":
        row["compile"] = bench_compiled(tr, args)
    return row


def bench_compiled(tr: Trainer, args) -> dict:
    """``symscale.train.compile.compiled(model)`` (``torch.compile``, dynamic shapes, as training would use it)
    in the same trainer; compile time = first step, then the same timing protocol."""
    from symscale.train.compile import compiled

    try:
        torch._dynamo.reset()
        tr.forward_model = compiled(tr.model)
        t0 = time.perf_counter()
        tr.step()
        compile_s = time.perf_counter() - t0
        t = tr.time_steps(args.warmup, args.repeats, args.min_time)
        return {"ok": True, "compile_s": compile_s, **t}
    except Exception as exc:  # report honestly, keep benchmarking the other rows
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        tr.forward_model = tr.model


def run_mace(args, atoms: list, rows: list[dict]) -> dict:
    """Run mace_peer.py in ``args.mace_python`` at esen's parameter count (width ``args.mace_width``)."""
    import ase.io

    esen = [r for r in rows if r["family"] == "esen" and r["width"] == args.mace_width]
    if not esen:
        raise ConfigError(f"--mace-width: esen width {args.mace_width} was not benchmarked in this run")
    target = esen[0]
    lmax = args.lmax if args.lmax is not None else 4
    with tempfile.TemporaryDirectory() as tmp:
        xyz = os.path.join(tmp, "molecules.extxyz")
        ase.io.write(xyz, atoms, format="extxyz")
        cmd = [args.mace_python, str(HERE / "mace_peer.py"), "--xyz", xyz, "--params", str(target["params"]),
               "--lmax", str(lmax), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        if args.mace_hidden_lmax is not None:
            cmd += ["--hidden-lmax", str(args.mace_hidden_lmax)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"mace_peer.py exited {proc.returncode}: {tail[0]}", "cmd": cmd[1:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ok"] = True
    res["esen_width"] = args.mace_width
    res["ratio_esen_over_mace_forces"] = target["structures_per_s"] / res["forces"]["structures_per_s"]
    if "energy_only" in res:
        res["ratio_esen_over_mace_energy_only"] = target["structures_per_s"] / res["energy_only"]["structures_per_s"]
    return res


# ----------------------------------------------------------------------------------------------- report
def print_tables(result: dict, stream=sys.stdout) -> None:
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    m = result["machine"]
    p(f"batch: {result['batch']['structures']} structures, {result['batch']['atoms']} atoms, "
      f"{result['batch']['edges']} edges ({result['batch']['source']}); float32; threads {m['threads']}; "
      f"optimizer {result['optimizer']}; "
      f"GEMM peak {result['gemm_peak_gflops']:.1f} GFLOP/s (CPU time: {result['gemm_peak_gflops_cpu']:.1f}); "
      f"per-op floor {m['op_floor_us']:.1f} µs; load average {m['loadavg_start'][0]:.1f} → {m['loadavg_end'][0]:.1f}")
    p("")
    p("| family | width | params | step GFLOP | step ms (CPU ms) | structures/s | GFLOP/s | % GEMM peak (CPU-time) "
      "| aten ops/step | op-floor share | torch.compile ms (CPU ms): speed-up |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        c = r.get("compile")
        if c is None:
            comp = "—"
        elif not c["ok"]:
            comp = f"failed: {c['error'][:60]}"
        else:  # speed-up by CPU time when recorded: wall time on a shared machine mixes in other jobs
            key = "cpu_step_s" if "cpu_step_s" in c else "step_s"
            comp = (f"{1e3 * c['step_s']:.1f} ({1e3 * c.get('cpu_step_s', float('nan')):.1f}): "
                    f"{r[key] / c[key]:.2f}×, compile {c['compile_s']:.0f} s")
        p(f"| {r['family']} | {r['width']} | {r['params']:,} | {r['flops'] / 1e9:.2f} | {1e3 * r['step_s']:.1f} "
          f"({1e3 * r['cpu_step_s']:.1f}) | {r['structures_per_s']:.1f} | {r['gflops_per_s']:.2f} | "
          f"{r['pct_peak']:.1f} ({r['pct_peak_cpu']:.1f}) | {r['ops']['total']:,} | "
          f"{100 * r['op_overhead_share']:.0f} % | {comp} |")
    p("")
    p("| family | width | top ops by self CPU time (one profiled step) | slowest matmul shapes (ms, GFLOP/s) |")
    p("|---|---|---|---|")
    for r in result["rows"]:
        if r["width"] != max(q["width"] for q in result["rows"] if q["family"] == r["family"]):
            continue
        ops = ", ".join(f"{o['op'].replace('aten::', '')} {100 * o['share']:.0f} %" for o in r["profile"]["ops"][:4])
        mats = ", ".join(f"{m['op'].replace('aten::', '')} {m['shapes']} {m['self_ms']:.0f} ms "
                         f"{m['gflops_per_s']:.1f}" for m in r["profile"]["matmuls"][:2])
        p(f"| {r['family']} | {r['width']} | {ops} | {mats} |")
    mace = result.get("mace")
    if mace:
        p("")
        if not mace["ok"]:
            p(f"mace-torch: {mace['error']}")
        else:
            e = next(r for r in result["rows"] if r["family"] == "esen" and r["width"] == mace["esen_width"])
            f = mace["forces"]
            cpu = lambda d: f" ({1e3 * d['cpu_step_s']:.1f})" if "cpu_step_s" in d else ""  # noqa: E731
            p("| model | params | ℓ | step ms (CPU ms) | structures/s | step GFLOP | GFLOP/s | % own GEMM peak "
              "| aten ops/step |")
            p("|---|---|---|---|---|---|---|---|---|")
            p(f"| esen w={e['width']} ({e['options'].get('forces', 'direct')} forces) | {e['params']:,} | "
              f"{e['options'].get('lmax', 4)} | {1e3 * e['step_s']:.1f}{cpu(e)} | {e['structures_per_s']:.2f} | "
              f"{e['flops'] / 1e9:.2f} | {e['gflops_per_s']:.2f} | {e['pct_peak']:.1f} | {e['ops']['total']:,} |")
            p(f"| MACE C={mace['channels']} (autograd forces) | {mace['params']:,} | max_ell {mace['lmax']}, hidden "
              f"{mace['hidden_lmax']} | {1e3 * f['step_s']:.1f}{cpu(f)} | {f['structures_per_s']:.3f} | "
              f"{f['flops'] / 1e9:.2f} | {f['gflops_per_s']:.2f} | {f['pct_peak']:.1f} | {f['aten_ops']:,} |")
            q = mace.get("energy_only")
            if q:
                p(f"| MACE C={mace['channels']} (energy only) | {mace['params']:,} | same | {1e3 * q['step_s']:.1f}"
                  f"{cpu(q)} | {q['structures_per_s']:.3f} | | | | |")
            p("")
            line = f"esen / MACE structures/s (wall): {mace['ratio_esen_over_mace_forces']:.1f}× (MACE with forces)"
            if q:
                line += f", {mace['ratio_esen_over_mace_energy_only']:.1f}× (MACE energy only)"
            if "cpu_step_s" in f and "cpu_step_s" in e:
                line += f"; by CPU time: {f['cpu_step_s'] / e['cpu_step_s']:.1f}×"
                if q and "cpu_step_s" in q:
                    line += f" and {q['cpu_step_s'] / e['cpu_step_s']:.1f}×"
            p(line)
    if result.get("fairchem"):
        from esen_fairchem import print_fairchem  # benchmarks/esen_fairchem.py

        print_fairchem(result, stream)


def run_compare(args, families: list[str], widths: dict[str, list[int]]) -> int:
    """``--compare-src``: old vs new tree, interleaved (benchmarks/models_compare.py)."""
    import models_compare as mc

    src = Path(args.compare_src)
    if not (src / "symscale" / "models").is_dir():
        raise ConfigError(f"--compare-src: {src} has no symscale/models (give the src/ of a checkout)")
    lmax = {} if args.lmax is None else {"lmax": args.lmax}
    rows = (mc.paper_mini_rows(args.families) if args.paper_mini else
            [(f, w, lmax if f == "esen" else {}) for f in families for w in widths[f]])
    result = mc.compare(src, rows, args.data, args.batch, args.sample, args.optimizer, args.threads,
                        args.rounds, args.round_time, runtime=not args.no_runtime)
    result["command"] = " ".join([os.path.basename(sys.executable), "benchmarks/models.py", *sys.argv[1:]])
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                         "torch": torch.__version__, "loadavg_end": os.getloadavg()}
    mc.print_compare(result)
    if args.json:
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(out)
    return 0


def _json_object(text: str) -> dict:
    """argparse type of ``--esen-options``: a JSON object (else an argparse error naming the option)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_layers\": 2}}', got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="*", default=None, help="families (default: all available)")
    ap.add_argument("--widths", nargs="*", default=None, help="FAMILY=W1,W2,... (default: the κ-table widths)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds one timed repeat lasts at least")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (also for the GEMM peak)")
    ap.add_argument("--batch", type=int, default=12, help="structures in the benchmark batch")
    ap.add_argument("--data", default="reference", help="'reference' (RDKit molecules), 'default' or a dataset path")
    ap.add_argument("--forces", default="direct", choices=("direct", "conservative"))
    ap.add_argument("--lmax", type=int, default=None, help="esen lmax (default: esen's default, 4)")
    ap.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="optimizer of the timed step")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of direct-force models")
    ap.add_argument("--mace-python", default=None, help="python of a venv with mace-torch (runs mace_peer.py)")
    ap.add_argument("--mace-width", type=int, default=16, help="esen width whose parameter count MACE matches")
    ap.add_argument("--mace-hidden-lmax", type=int, default=None, help="MACE hidden-feature lmax (default: lmax)")
    ap.add_argument("--esen-options", type=_json_object, default={}, help="esen options as a JSON object")
    ap.add_argument("--fairchem-python", default=None, help="python of a venv with fairchem-core "
                    "(runs fairchem_peer.py)")
    ap.add_argument("--fairchem-width", type=int, default=16, help="esen width whose parameter count and "
                    "structure fairchem's eSEN matches")
    ap.add_argument("--sample", type=int, default=None, help="a seeded random choice of --batch training structures "
                    "of --data (default: the first ones)")
    ap.add_argument("--compare-src", default=None, help="old source tree (its src/): interleaved old vs new "
                    "training atoms per CPU-second and output equality (benchmarks/models_compare.py)")
    ap.add_argument("--paper-mini", action="store_true", help="with --compare-src: the models and widths of "
                    "benchmarks/paper_mini/study.yaml (else --widths / the κ-table widths, --lmax for esen)")
    ap.add_argument("--rounds", type=int, default=5, help="with --compare-src: alternating timed rounds per side")
    ap.add_argument("--round-time", type=float, default=0.5, help="with --compare-src: CPU seconds of one round")
    ap.add_argument("--no-runtime", action="store_true", help="with --compare-src: do not apply the new tree's "
                    "process settings (allocator thresholds): model code alone")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("--report", default=None, help="only print the tables of a JSON file written by --json")
    args = ap.parse_args(argv)
    if args.report:
        try:
            print_tables(json.loads(Path(args.report).read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--report: cannot read {args.report}: {exc}") from None
        return 0
    for name in ("repeats", "threads", "batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}: must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    have = available()
    families = args.families or list(have)
    missing = [f for f in families if f not in have]
    if missing:
        raise ConfigError(f"--families: {missing[0]!r} is not available (available: {', '.join(have)})")
    widths = parse_widths(args.widths, families)
    if args.compare_src:
        return run_compare(args, families, widths)
    cutoff = 5.0
    atoms, norm = load_structures(args.data, args.batch, cutoff, sample=args.sample)
    batch = Batch.from_atoms(atoms, cutoff=cutoff, dtype=torch.float32)

    load0 = os.getloadavg()
    peak0 = gemm_peak()
    op_floor = per_op_floor()
    rows = []
    for fam in families:
        for w in widths[fam]:
            r = bench_one(fam, w, batch, norm, args, op_floor)
            rows.append(r)
            print(f"[{time.strftime('%H:%M:%S')}] {fam} w={w}: {1e3 * r['step_s']:.1f} ms/step "
                  f"(CPU {1e3 * r['cpu_step_s']:.1f} ms)", file=sys.stderr, flush=True)
    peak1 = gemm_peak()
    peak = max(peak0["gflops"], peak1["gflops"])
    peak_cpu = max(peak0["gflops_cpu"], peak1["gflops_cpu"])
    for r in rows:  # the higher of the two peak measurements is the reference
        r["pct_peak"] = 100 * r["gflops_per_s"] / peak
        r["pct_peak_cpu"] = 100 * r["flops"] / r["cpu_step_s"] / 1e9 / peak_cpu
    result = {"command": " ".join([os.path.basename(sys.executable), "benchmarks/models.py", *sys.argv[1:]])
              if argv is None else "models.main(" + repr(argv) + ")",
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": args.threads, "torch": torch.__version__, "op_floor_us": op_floor * 1e6,
                          "loadavg_start": load0},
              "batch": {"source": args.data, "structures": batch.n_structures, "atoms": batch.tokens,
                        "edges": batch.n_edges},
              "optimizer": args.optimizer, "gemm_peak_gflops": peak, "gemm_peak_gflops_cpu": peak_cpu, "gemm_peak_runs": [peak0, peak1], "rows": rows}
    if args.mace_python:
        result["mace"] = run_mace(args, atoms, rows)
    if args.fairchem_python:
        from esen_fairchem import run_fairchem  # benchmarks/esen_fairchem.py

        result["fairchem"] = run_fairchem(args, atoms, batch, rows)
    result["machine"]["loadavg_end"] = os.getloadavg()
    print_tables(result)
    if args.json:
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as exc:
        print(f"symscale: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
