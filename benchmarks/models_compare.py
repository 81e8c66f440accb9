"""Old vs new source tree, interleaved: training atoms per CPU-second and equality of outputs.

Run through ``benchmarks/models.py --compare-src OLD_SRC`` (see its docstring). Two worker processes
(this file with ``--worker``) import ``symscale`` from two source trees (``PYTHONPATH``): ``OLD_SRC`` and the
tree this file belongs to. Both build the same batch and, for every family x width, the same model
(``torch.manual_seed(0)``); the old model's initial ``state_dict`` is loaded into the new one (so the new
code must accept the old checkpoints) and both evaluate the batch in float64: the largest relative difference
of energies and forces is reported. Then each times the study's training step, with its own tree's code
(zero_grad, forward, loss = per-atom energy MAE + mean per-atom force-error L2, backward,
``symscale.train.optim.clip_gradients(10)``, the optimiser of ``build_optimizer`` on the study's μP groups
``parameter_groups(hidden_parameters(...))``) in ``rounds`` alternating rounds (old, new, new, old, ...),
each round a fixed number of steps, measuring the worker's process CPU time (one thread). Reported: the
median CPU time per step of each side, atoms per CPU-second and their ratio (new / old), and aten ops
dispatched per step. Each worker first applies what its tree's training loop applies to its process
(``symscale.train.compile.configure_cpu_allocator``, where the tree has it; ``runtime=False``: nothing), so
the ratio is that of training with either tree.

Workers talk one JSON object per line on stdin / stdout; everything else they print goes to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"


# ------------------------------------------------------------------------------------------------ worker
class _Worker:
    """State of one worker process: the batch, and one (model, optimiser) per benchmark row."""

    def __init__(self):
        import torch

        self.torch = torch
        self.rows: dict[str, tuple] = {}
        self.batch = self.norm = None
        self.atoms = None

    def setup(self, data: str, n: int, sample: int | None, optimizer: str, threads: int, runtime: bool) -> dict:
        sys.path.insert(0, str(HERE))
        import models as bench  # benchmarks/models.py: load_structures, make_optimizer, OpCounter

        from symscale.data.batch import Batch

        self.bench = bench
        self.torch.set_num_threads(threads)
        self.optimizer = optimizer
        self.atoms, self.norm = bench.load_structures(data, n, 5.0, sample=sample)
        self.batch = Batch.from_atoms(self.atoms, cutoff=5.0, dtype=self.torch.float32)
        allocator = False
        if runtime:  # what the tree's training loop applies to its process, where it has it
            try:
                from symscale.train.compile import configure_cpu_allocator
            except ImportError:
                pass
            else:
                allocator = configure_cpu_allocator()
        return {"atoms": self.batch.tokens, "edges": self.batch.n_edges, "structures": self.batch.n_structures,
                "allocator": allocator}

    def build(self, key: str, family: str, width: int, options: dict, load: str | None, save: str | None) -> dict:
        from symscale.models import build, count_parameters

        torch = self.torch
        torch.manual_seed(0)
        model = build(family, width, **options)
        if self.norm:
            model.set_normalization(self.norm["e0"], self.norm["energy_scale"], self.norm["force_scale"])
        if load:
            model.load_state_dict(torch.load(load, weights_only=True))
        if save:
            torch.save(model.state_dict(), save)
        out = {"params": count_parameters(model)}
        with torch.no_grad():  # float64 outputs of the initial weights, for the equality check
            m64 = build(family, width, **options).double()
            m64.load_state_dict(model.state_dict())
            pred = m64(self.batch.to(dtype=torch.float64))
            out["energy"] = pred["energy"].tolist()
            out["forces"] = pred["forces"].reshape(-1).tolist()
        model.train()
        from symscale.train.optim import hidden_parameters, parameter_groups

        # the study's μP groups (hidden matrices, the rest), as symscale.train.run builds them
        hidden = hidden_parameters(model, lambda w: build(family, w, **options), width)
        groups = parameter_groups(model, 1e-4, hidden, base_width=width, width=width)
        self.rows[key] = (model, self.bench.make_optimizer(self.optimizer, model, 1e-4, groups))
        return out

    def step(self, key: str) -> None:
        from symscale.models.flops import default_loss
        from symscale.train.optim import clip_gradients

        model, opt = self.rows[key]
        opt.zero_grad(set_to_none=True)
        loss = default_loss(model(self.batch), self.batch)
        loss.backward()
        clip_gradients(model.parameters(), 10.0)
        opt.step()

    def time(self, key: str, steps: int) -> dict:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.step(key)
        return {"cpu_step_s": (time.process_time() - c0) / steps, "step_s": (time.perf_counter() - t0) / steps}

    def ops(self, key: str) -> dict:
        with self.bench.OpCounter() as c:
            self.step(key)
        return {"ops": c.count}

    def drop(self, key: str) -> dict:
        self.rows.pop(key, None)
        return {}


def worker_main() -> int:
    """Serve commands ``{"cmd": name, ...kwargs}`` from stdin, one JSON reply per line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed by the code under test stays off the protocol channel
    w = _Worker()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        try:
            reply = {"ok": True, **getattr(w, cmd)(**msg)}
        except Exception as exc:  # reported to the driver, which stops with the message
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


# ------------------------------------------------------------------------------------------------ driver
class _Client:
    def __init__(self, src: Path, label: str, threads: int):
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
        self.label = label
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.label} worker: {cmd}: {reply['error']}")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def paper_mini_rows(families: list[str] | None = None) -> list[tuple[str, int, dict]]:
    """``(family, width, options)`` of every group of ``benchmarks/paper_mini/study.yaml`` without a symmetry
    setting (the ablations train the same models), in the study's order, filtered by ``families``."""
    import yaml

    study = yaml.safe_load((HERE / "paper_mini" / "study.yaml").read_text())
    rows = []
    for arch in study["architectures"]:
        if arch.get("symmetry") or (families and arch["family"] not in families):
            continue
        rows += [(arch["family"], int(w), dict(arch.get("options") or {})) for w in arch["widths"]]
    return rows


def _rel_err(a: list[float], b: list[float]) -> float:
    scale = max(max(abs(x) for x in b), 1e-12)
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def compare(old_src: Path, rows: list[tuple[str, int, dict]], data: str, n: int, sample: int | None,
            optimizer: str, threads: int, rounds: int, round_time: float, runtime: bool = True,
            log=sys.stderr) -> dict:
    """Interleaved old/new measurement of ``rows`` = ``[(family, width, options)]`` (see module docstring)."""
    old, new = _Client(old_src, "old", threads), _Client(NEW_SRC, "new", threads)
    results = []
    try:
        info = [c("setup", data=data, n=n, sample=sample, optimizer=optimizer, threads=threads, runtime=runtime)
                for c in (old, new)]
        allocator = {"old": info[0].pop("allocator"), "new": info[1].pop("allocator")}
        if info[0] != info[1]:
            raise RuntimeError(f"old and new trees built different batches: {info[0]} vs {info[1]}")
        with tempfile.TemporaryDirectory() as tmp:
            for k, (fam, width, options) in enumerate(rows):
                key, path = f"{fam}-{width}-{k}", os.path.join(tmp, f"{k}.pt")
                a = old("build", key=key, family=fam, width=width, options=options, load=None, save=path)
                b = new("build", key=key, family=fam, width=width, options=options, load=path, save=None)
                err_e, err_f = _rel_err(b["energy"], a["energy"]), _rel_err(b["forces"], a["forces"])
                for c in (old, new):  # warm-up; then size a round to ~round_time of the old code
                    c("time", key=key, steps=2)
                probe = old("time", key=key, steps=2)["cpu_step_s"]
                steps = max(2, round(round_time / max(probe, 1e-6)))
                t = {"old": [], "new": []}
                for r in range(rounds):
                    for c in ((old, new) if r % 2 == 0 else (new, old)):
                        t[c.label].append(c("time", key=key, steps=steps))
                ops = [c("ops", key=key)["ops"] for c in (old, new)]
                for c in (old, new):
                    c("drop", key=key)
                cpu = {s: statistics.median(x["cpu_step_s"] for x in t[s]) for s in t}
                row = {"family": fam, "width": width, "options": options, "params": a["params"],
                       "params_new": b["params"], "rel_err_energy": err_e, "rel_err_forces": err_f,
                       "steps_per_round": steps, "rounds": t, "ops_old": ops[0], "ops_new": ops[1],
                       "cpu_step_s_old": cpu["old"], "cpu_step_s_new": cpu["new"],
                       "atoms_per_cpu_s_old": info[0]["atoms"] / cpu["old"],
                       "atoms_per_cpu_s_new": info[0]["atoms"] / cpu["new"], "speedup": cpu["old"] / cpu["new"]}
                results.append(row)
                print(f"[{time.strftime('%H:%M:%S')}] {fam} w={width} {options}: old {1e3 * cpu['old']:.1f} ms, "
                      f"new {1e3 * cpu['new']:.1f} ms CPU/step ({row['speedup']:.2f}x); outputs rel. diff "
                      f"E {err_e:.1e} F {err_f:.1e}", file=log, flush=True)
    finally:
        old.close()
        new.close()
    return {"batch": info[0], "old_src": str(old_src), "new_src": str(NEW_SRC), "allocator": allocator,
            "rows": results}


def print_compare(result: dict, stream=sys.stdout) -> None:
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    b = result["batch"]
    a = result["allocator"]
    p(f"batch: {b['structures']} structures, {b['atoms']} atoms, {b['edges']} edges; old = {result['old_src']}; "
      f"allocator thresholds raised (symscale.train.compile): old {a['old']}, new {a['new']}")
    p("")
    p("| family | width | options | params | old: CPU ms/step | new: CPU ms/step | old: atoms/CPU-s "
      "| new: atoms/CPU-s | speed-up | aten ops old → new | max rel. diff E / F (float64) |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "—"
        p(f"| {r['family']} | {r['width']} | {opts} | {r['params']:,} | {1e3 * r['cpu_step_s_old']:.1f} | "
          f"{1e3 * r['cpu_step_s_new']:.1f} | {r['atoms_per_cpu_s_old']:,.0f} | {r['atoms_per_cpu_s_new']:,.0f} | "
          f"**{r['speedup']:.2f}×** | {r['ops_old']:,} → {r['ops_new']:,} | "
          f"{r['rel_err_energy']:.0e} / {r['rel_err_forces']:.0e} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        raise SystemExit(worker_main())
    raise SystemExit("run through benchmarks/models.py --compare-src OLD_SRC")
