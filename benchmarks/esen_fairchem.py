"""symscale's esen vs fairchem's eSEN (``eSCNMDBackbone``): FLOPs by module and interleaved throughput.

Usage (the figures of docs/benchmarks.md, "eSEN vs fairchem eSCNMDBackbone")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/esen_fairchem.py --fairchem-python /tmp/fairchem-venv/bin/python \\
        --width 16 --num-layers 2 --rounds 3 --json /tmp/esen_fairchem.json

Three models on one batch (``--batch`` reference molecules, as ``benchmarks/models.py``; cutoff 5 Å, float32,
one thread):

* ``symscale``: ``esen`` at ``--width`` with its default layout (``lmax``, ``mmax``, ``num_layers`` as given);
* ``fairchem`` (the peer, ``benchmarks/fairchem_peer.py`` in ``--fairchem-python``): ``eSCNMDBackbone`` +
  direct heads, ``sphere = hidden = edge`` channels ``C`` chosen to match the first model's parameter count;
* ``symscale structure=fairchem``: ``esen`` at width ``C`` with ``structure="fairchem"``, ``parity="so3"``,
  ``ffn_factor=1``, ``num_basis`` = the peer's ``num_distance_basis``, ``radial_hidden = C``, ``ffn`` = the
  peer's ``ff_type``: the peer's layout and sizes in symscale's code.

Reported: parameters, forward FLOPs and κ (forward FLOPs / (params × atoms), ``FlopCounterMode``), FLOPs of
a training step, forward FLOPs and parameters per module and by kind of work (:func:`categories`; also for
six single-change variants of symscale's esen, each at the width whose parameter count is the closest), and
the study's training step (zero_grad, forward, per-atom energy MAE + mean force-error L2, backward, AdamW)
timed in ``--rounds`` rounds; each round times the three models one after the other (``--repeats`` repeats
of ≥ ``--min-time`` s each, process CPU time); the medians over all repeats give structures per CPU-second
and the ratios. The peer runs once per round as a fresh subprocess (its import and build are not timed).
``--allocator tuned`` raises glibc's mmap and trim thresholds in both processes (what symscale's training loop
does in its own, ``symscale.train.compile.configure_cpu_allocator``; the peer through glibc's
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``); by default neither is changed.

``benchmarks/models.py --fairchem-python PY`` uses :func:`run_fairchem` and :func:`print_fairchem` of this file
for its single-run comparison against one esen row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fairchem_peer import module_flops, module_params  # noqa: E402  (torch-only helpers)

from symscale.data.batch import Batch  # noqa: E402
from symscale.errors import ConfigError  # noqa: E402
from symscale.models import build, count_parameters  # noqa: E402
from symscale.models.flops import measure_kappa, training_step_flops  # noqa: E402


#: glibc's environment tunables equal to ``symscale.train.compile.configure_cpu_allocator`` (``--allocator tuned``)
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def run_peer(python: str, xyz: str, extra: list[str], threads: int, env: dict | None = None) -> dict:
    cmd = [python, str(HERE / "fairchem_peer.py"), "--xyz", xyz, "--threads", str(threads), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"fairchem_peer.py exited {proc.returncode}: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_fairchem(args, atoms: list, batch: Batch, rows: list[dict]) -> dict:
    """Run fairchem_peer.py in ``args.fairchem_python`` at the parameter count and structure of esen at
    ``args.fairchem_width``; adds that esen's forward FLOPs and κ on the same batch."""
    import ase.io

    target = next((r for r in rows if r["family"] == "esen" and r["width"] == args.fairchem_width), None)
    if target is None:
        raise ConfigError(f"--fairchem-width: esen width {args.fairchem_width} was not benchmarked in this run")
    model = build("esen", target["width"], **target["options"])
    fair = model.structure == "fairchem"
    cmd = [args.fairchem_python, str(HERE / "fairchem_peer.py"), "--params", str(target["params"]),
           "--lmax", str(model.lmax), "--mmax", str(model.mmax), "--num-layers", str(model.num_layers),
           "--ff-type", model.ffn if model.ffn in ("grid", "spectral") else "grid",
           "--num-distance-basis", str(model.basis.num_basis if fair else 64), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--min-time", str(args.min_time), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        xyz = os.path.join(tmp, "molecules.extxyz")
        ase.io.write(xyz, atoms, format="extxyz")
        proc = subprocess.run(cmd + ["--xyz", xyz], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"fairchem_peer.py exited {proc.returncode}: {tail[0]}", "cmd": cmd[1:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    k = measure_kappa(model, batch)
    res.update(ok=True, esen_width=target["width"], esen_forward_flops=k["forward_flops"], esen_kappa=k["kappa"],
               ratio_esen_over_fairchem_cpu=res["cpu_step_s"] / target["cpu_step_s"])
    return res


def print_fairchem(result: dict, stream=sys.stdout) -> None:
    """The esen vs fairchem table of a result with ``"fairchem"`` (nothing otherwise)."""
    fc = result.get("fairchem")
    if not fc:
        return
    p = lambda *a: print(*a, file=stream)  # noqa: E731
    p("")
    if not fc["ok"]:
        p(f"fairchem: {fc['error']}")
        return
    e = next(r for r in result["rows"] if r["family"] == "esen" and r["width"] == fc["esen_width"])
    p("| model | params | forward GFLOP | κ | step GFLOP | step ms (CPU ms) | structures per CPU-s | aten ops/step |")
    p("|---|---|---|---|---|---|---|---|")
    p(f"| esen w={e['width']} {e['options']} | {e['params']:,} | {fc['esen_forward_flops'] / 1e9:.3f} | "
      f"{fc['esen_kappa']:.1f} | {e['flops'] / 1e9:.2f} | {1e3 * e['step_s']:.1f} ({1e3 * e['cpu_step_s']:.1f}) | "
      f"{result['batch']['structures'] / e['cpu_step_s']:.1f} | {e['ops']['total']:,} |")
    p(f"| fairchem {fc['fairchem_version']} eSCNMDBackbone C={fc['channels']} ({fc['ff_type']}) | {fc['params']:,} | "
      f"{fc['forward_flops'] / 1e9:.3f} | {fc['kappa']:.1f} | {fc['step_flops'] / 1e9:.2f} | "
      f"{1e3 * fc['step_s']:.1f} ({1e3 * fc['cpu_step_s']:.1f}) | {fc['structures_per_cpu_s']:.1f} | "
      f"{fc['aten_ops']:,} |")
    p("")
    p(f"esen / fairchem structures per CPU-second: {fc['ratio_esen_over_fairchem_cpu']:.2f}×")


def flops_of(model: torch.nn.Module, batch: Batch, depth: int = 4) -> dict:
    k = measure_kappa(model, batch)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(batch.replace(pos=batch.pos * 1.0))
    return {"params": k["params"], "forward_flops": k["forward_flops"], "kappa": k["kappa"],
            "step_flops": training_step_flops(model, batch)["flops"],
            "forward_flops_by_module": module_flops(counter, depth), "params_by_module": module_params(model, depth),
            "width": model.width}


CATEGORIES = ("wigner", "rotations", "so2_convs", "radial", "node_mixing", "feed_forward", "edge_embedding",
              "other")


def categories(fl: dict[str, int]) -> dict[str, int]:
    """Forward FLOPs by kind of work from :func:`module_flops` (symscale esen at depth 4, fairchem at 6).

    ``wigner``: building the per-edge rotations (what the model, fairchem: its backbone, does outside
    submodules);
    ``rotations``: rotating node features into edge frames and back (fairchem: dense ``bmm``s; symscale: the
    block-sparse products of :class:`~symscale.models.edge_frame.EdgeRotation`, counted by their non-zeros);
    ``so2_convs``: the SO(2) convolutions without their radial modulation; ``radial``: radial networks (the
    shared or per-block MLPs and the last layer that gives each convolution's modulation); ``node_mixing``:
    symscale's node-level receiver / sender maps; ``feed_forward``: the node feed-forwards (on a grid: with
    the grid transforms); ``edge_embedding``: the edge-degree embedding; ``other``: norms, heads, the rest.
    """
    g = fl.get
    out = dict.fromkeys(CATEGORIES, 0)
    total = fl[""]
    if "backbone" in fl:  # fairchem: backbone.blocks.N.{edge_wise.{so2_conv_1{.rad_func},so2_conv_2},atom_wise}
        blocks = sorted({k.split(".")[2] for k in fl if k.startswith("backbone.blocks.")})
        inside = 0
        for b in blocks:
            p = f"backbone.blocks.{b}"
            rad = g(f"{p}.edge_wise.so2_conv_1.rad_func", 0)
            conv = g(f"{p}.edge_wise.so2_conv_1", 0) + g(f"{p}.edge_wise.so2_conv_2", 0)
            out["radial"] += rad
            out["so2_convs"] += conv - rad
            out["rotations"] += g(f"{p}.edge_wise", 0) - conv
            out["feed_forward"] += g(f"{p}.atom_wise", 0)
            inside += g(p, 0)
        out["edge_embedding"] = g("backbone.edge_degree_embedding", 0)
        out["wigner"] = g("backbone", 0) - inside - sum(g(f"backbone.{k}", 0) for k in
                                                         ("edge_degree_embedding", "mix_csd", "norm"))
    else:  # symscale: frame, radial, edge_embedding, messages.N.{recv,send,radial,conv1{.radial},conv2}, ffns.N
        blocks = sorted({k.split(".")[1] for k in fl if k.startswith("messages.")})
        out["radial"] = g("radial", 0)
        for b in blocks:
            p = f"messages.{b}"
            conv_rad = g(f"{p}.conv1.radial", 0) + g(f"{p}.conv2.radial", 0)
            conv = g(f"{p}.conv1", 0) + g(f"{p}.conv2", 0)
            mix = g(f"{p}.recv", 0) + g(f"{p}.send", 0)
            out["radial"] += g(f"{p}.radial", 0) + conv_rad
            out["so2_convs"] += conv - conv_rad
            out["node_mixing"] += mix
            out["rotations"] += g(p, 0) - conv - mix - g(f"{p}.radial", 0)
            out["feed_forward"] += g(f"ffns.{b}", 0)
        out["edge_embedding"] = g("edge_embedding", 0)
        # EdgeFrame.rotation is called as a method, not through the module's forward: its FLOPs (the Wigner
        # entries' two matmuls; nothing else of note runs outside a submodule) belong to the root itself
        called = [k for k in fl if k and not any(".".join(k.split(".")[:d]) in fl for d in range(1, k.count(".") + 1))]
        out["wigner"] = total - sum(fl[k] for k in called)  # called: the outermost submodules that ran
    out["other"] = total - sum(out.values())
    return out


def matched_width(target: int, options: dict, fairchem_sizes: bool) -> int:
    """esen width (2..128) whose parameter count is closest to ``target`` (bisection; params grow with width).
    ``fairchem_sizes``: ``radial_hidden`` follows the width (fairchem's edge_channels = sphere_channels)."""
    def params(w: int) -> int:
        return count_parameters(build("esen", w, **options, **({"radial_hidden": w} if fairchem_sizes else {})))

    lo, hi = 2, 128
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(params(w) - target))


def print_report(res: dict) -> None:
    b = res["batch"]
    print(f"batch: {b['structures']} structures, {b['atoms']} atoms, {b['edges']} edges; float32; 1 thread; "
          f"{res['rounds']} rounds; allocator {res['allocator']}; load average {res['loadavg'][0]:.1f} → "
          f"{res['loadavg_end'][0]:.1f}")
    print()
    print("| model | params | forward GFLOP | κ | step GFLOP | CPU ms/step (median) | structures per CPU-s | "
          "vs fairchem |")
    print("|---|---|---|---|---|---|---|---|")
    ref = res["models"]["fairchem"]
    for name, m in res["models"].items():
        ratio = ref["cpu_step_s"] / m["cpu_step_s"]
        print(f"| {m['label']} | {m['params']:,} | {m['forward_flops'] / 1e9:.3f} | {m['kappa']:.1f} | "
              f"{m['step_flops'] / 1e9:.2f} | {1e3 * m['cpu_step_s']:.1f} | {m['structures_per_cpu_s']:.1f} | "
              f"{ratio:.2f}× |")
    print()
    print("Forward MFLOP by kind of work (see `categories`), at matched parameters:")
    print()
    print("| model | width | params | κ | " + " | ".join(CATEGORIES) + " | total |")
    print("|---|---|---|---|" + "---|" * (len(CATEGORIES) + 1))
    for m in [*res["models"].values(), *res["variants"]]:
        cats = m["categories"]
        print(f"| {m['label']} | {m.get('width', '')} | {m['params']:,} | {m['kappa']:.1f} | "
              + " | ".join(f"{cats[c] / 1e6:.0f}" for c in CATEGORIES) + f" | {m['forward_flops'] / 1e6:.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fairchem-python", required=True, help="python of a venv with fairchem-core")
    ap.add_argument("--width", type=int, default=16, help="width of symscale's default-layout esen")
    ap.add_argument("--lmax", type=int, default=4)
    ap.add_argument("--mmax", type=int, default=2)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--num-distance-basis", type=int, default=64, help="fairchem's radial basis size")
    ap.add_argument("--ff-type", default="grid", choices=("grid", "spectral"), help="fairchem's feed-forward")
    ap.add_argument("--batch", type=int, default=12, help="reference molecules in the batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per model and round")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds one timed repeat lasts at least")
    ap.add_argument("--allocator", default="default", choices=("default", "tuned"),
                    help="'tuned': glibc's mmap / trim thresholds raised in both processes, as symscale's "
                         "training loop does in its own (configure_cpu_allocator); 'default': neither")
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    args = ap.parse_args(argv)
    import models as bench  # benchmarks/models.py: load_structures, Trainer

    torch.set_num_threads(1)
    peer_env = {}
    if args.allocator == "tuned":
        from symscale.train.compile import configure_cpu_allocator

        if not configure_cpu_allocator():
            raise ConfigError("--allocator tuned: needs Linux with glibc")
        peer_env = TUNED_MALLOC_ENV
    load0 = os.getloadavg()
    atoms, _ = bench.load_structures("reference", args.batch, 5.0)
    batch = Batch.from_atoms(atoms, cutoff=5.0, dtype=torch.float32)
    common = {"lmax": args.lmax, "mmax": args.mmax, "num_layers": args.num_layers}
    torch.manual_seed(0)
    sym = build("esen", args.width, **common)
    with tempfile.TemporaryDirectory() as tmp:
        import ase.io

        xyz = os.path.join(tmp, "molecules.extxyz")
        ase.io.write(xyz, atoms, format="extxyz")
        peer_args = ["--lmax", str(args.lmax), "--mmax", str(args.mmax), "--num-layers", str(args.num_layers),
                     "--num-distance-basis", str(args.num_distance_basis), "--ff-type", args.ff_type]
        peer = run_peer(args.fairchem_python, xyz, ["--params", str(count_parameters(sym)), "--no-timing",
                                                    "--depth", "6", *peer_args], 1)
        c = peer["channels"]
        fair_opts = {**common, "structure": "fairchem", "parity": "so3", "ffn_factor": 1,
                     "num_basis": args.num_distance_basis, "radial_hidden": c, "ffn": args.ff_type}
        torch.manual_seed(0)
        symf = build("esen", c, **fair_opts)
        models = {"symscale": {"label": f"symscale esen w={args.width} (default layout)", "options": common,
                               **flops_of(sym, batch)},
                  "symscale_fairchem": {"label": f"symscale esen w={c} structure=fairchem", "options": fair_opts,
                                        **flops_of(symf, batch)},
                  "fairchem": {"label": f"fairchem eSCNMDBackbone C={c} ({args.ff_type})", "width": c,
                               **{k: peer[k] for k in ("params", "forward_flops", "kappa", "step_flops",
                                                       "forward_flops_by_module", "params_by_module")}}}
        for m in models.values():
            m["categories"] = categories(m["forward_flops_by_module"])
        variants = []
        base = {**common, "structure": "fairchem", "parity": "so3", "ffn_factor": 1,
                "num_basis": args.num_distance_basis}
        for label, opts in [("default layout, parity so3", {**common, "parity": "so3"}),
                            ("default layout, ffn grid", {**common, "ffn": "grid"}),
                            ("default layout, ffn spectral", {**common, "ffn": "spectral"}),
                            ("structure=fairchem, ffn gated", {**base, "ffn": "gated"}),
                            ("structure=fairchem, ffn spectral", {**base, "ffn": "spectral"}),
                            ("structure=fairchem, parity o3", {**base, "parity": "o3", "ffn": args.ff_type})]:
            fair = opts.get("structure") == "fairchem"
            w = matched_width(count_parameters(sym), opts, fair)
            v = flops_of(build("esen", w, **opts, **({"radial_hidden": w} if fair else {})), batch)
            variants.append({"label": f"symscale {label}", "options": opts, **v,
                             "categories": categories(v["forward_flops_by_module"])})
        trainers = {"symscale": bench.Trainer(sym.train(), batch),
                    "symscale_fairchem": bench.Trainer(symf.train(), batch)}
        cpu: dict[str, list[float]] = {k: [] for k in models}
        for r in range(args.rounds):
            for key, tr in trainers.items():
                cpu[key] += [tr.time_steps(1 if k == 0 else 0, 1, args.min_time)["cpu_step_s"]
                             for k in range(args.repeats)]
            out = run_peer(args.fairchem_python, xyz, ["--channels", str(c), "--repeats", str(args.repeats),
                                                       "--warmup", "1", "--min-time", str(args.min_time),
                                                       "--depth", "0", *peer_args], 1, peer_env)
            if out["malloc_env"] != peer_env:
                raise ConfigError(f"fairchem_peer.py saw glibc settings {out['malloc_env']}, expected {peer_env}")
            cpu["fairchem"] += out["cpu_step_s_all"]
            print(f"round {r + 1}: " + ", ".join(f"{k} {1e3 * statistics.median(v):.0f} ms" for k, v in cpu.items()),
                  file=sys.stderr, flush=True)
    for key, m in models.items():
        m["cpu_step_s_all"] = cpu[key]
        m["cpu_step_s"] = statistics.median(cpu[key])
        m["structures_per_cpu_s"] = batch.n_structures / m["cpu_step_s"]
    res = {"command": " ".join(["python", "benchmarks/esen_fairchem.py", *(argv or sys.argv[1:])]),
           "fairchem_version": peer["fairchem_version"], "torch": torch.__version__, "rounds": args.rounds,
           "allocator": args.allocator,
           "batch": {"structures": batch.n_structures, "atoms": batch.tokens, "edges": batch.n_edges},
           "loadavg": load0, "loadavg_end": os.getloadavg(), "models": models, "variants": variants}
    print_report(res)
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as exc:
        print(f"symscale: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
