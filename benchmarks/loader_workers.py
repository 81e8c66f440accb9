"""Loader throughput with 0, 1, 2 background workers next to each family's training consumption rate.

Usage (the figures of docs/benchmarks.md, section "Input pipeline: loader workers")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loader_workers.py --workers 0 1 2 --batches 150 \
        --steps 30 --json /tmp/loader_workers.json

On the embedded dataset (or ``--data PATH``), training split, ``--batch-size`` structures per batch, cutoff
5 Å, shuffled:

* **loader** (``symscale.data.prefetch.Prefetcher`` over ``StreamingLoader``, exactly the training path):
  for each ``--workers`` value, atoms/s over ``--batches`` batches after the first one (its wait, worker
  start-up included, is reported separately as ``first batch s``); the consumer does nothing else;
* **consumption** (one torch thread): for each family at a small width (``--widths``, default the smallest
  width of ``examples/quickstart.yaml``), the atoms/s of full training steps (zero_grad, forward, the run's
  loss, backward, schedule-free AdamW step, as ``symscale.train.run``) on batches built beforehand, median
  of ``--repeats`` blocks of ``--steps`` steps after 3 warm-up steps;
* **end to end**: the same steps taking each batch from the loader with 0 and with 1 worker (batch building
  included), so the cost of building batches inline and what a background worker saves are visible.

``headroom`` = loader atoms/s / consumption atoms/s: above 1 the loader can feed that family on its own.
Prints Markdown tables; ``--json OUT`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from symscale.data import open_dataset  # noqa: E402
from symscale.data.loader import StreamingLoader  # noqa: E402
from symscale.data.prefetch import Prefetcher  # noqa: E402
from symscale.models import build, count_parameters  # noqa: E402
from symscale.train.config import OptimizerConfig  # noqa: E402
from symscale.train.loss import LossFunction  # noqa: E402
from symscale.train.optim import build_optimizer, parameter_groups, train_mode  # noqa: E402

#: The smallest quickstart width of each family, with its options.
DEFAULT_WIDTHS = {"mpnn": (16, {}), "gemnet": (8, {}), "egnn": (16, {}), "esen": (4, {"lmax": 2, "num_layers": 2})}


def loader(dataset, args, epochs: int = 50) -> StreamingLoader:
    return StreamingLoader(dataset, "train", batch_size=args.batch_size, cutoff=5.0, seed=0, epochs=epochs)


def loader_rate(dataset, workers: int, args) -> dict:
    """Atoms/s of the loader alone over ``args.batches`` batches after the first."""
    t0 = time.perf_counter()
    it = iter(Prefetcher(loader(dataset, args), workers))
    next(it)
    first = time.perf_counter() - t0
    atoms = 0
    t1 = time.perf_counter()
    for _, batch in zip(range(args.batches), it):
        atoms += batch.tokens
    wall = time.perf_counter() - t1
    it.close()
    return {"workers": workers, "batches": args.batches, "atoms": atoms, "seconds": wall,
            "atoms_per_s": atoms / wall, "first_batch_s": first}


def trainer(family: str, width: int, options: dict, dataset):
    """A model, optimiser and step function as a training run builds them (float32, one group)."""
    torch.manual_seed(0)
    norm = dataset.normalization
    model = build(family, width, cutoff=5.0, **options)
    model.set_normalization(norm["e0"], norm["energy_scale"], norm["force_scale"])
    cfg = OptimizerConfig()
    opt = build_optimizer(parameter_groups(model, cfg.lr), cfg)
    train_mode(opt)
    loss_fn = LossFunction(norm["energy_scale"], norm["force_scale"])

    def step(batch) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(batch), batch).backward()
        opt.step()

    return model, step


def consumption(family: str, width: int, options: dict, dataset, args) -> dict:
    """Training atoms/s on prebuilt batches, and end to end with the loader at 0 and 1 workers."""
    model, step = trainer(family, width, options, dataset)
    src = loader(dataset, args)
    batches = [b for _, b in zip(range(args.steps), src)]
    for b in batches[:3]:
        step(b)
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for b in batches:
            step(b)
        rates.append(sum(b.tokens for b in batches) / (time.perf_counter() - t0))
    out = {"family": family, "width": width, "params": count_parameters(model),
           "train_atoms_per_s": statistics.median(rates), "train_atoms_per_s_all": rates, "end_to_end": {}}
    for workers in args.end_to_end:
        it = iter(Prefetcher(loader(dataset, args), workers))
        for _ in range(3):
            step(next(it))
        atoms, t0 = 0, time.perf_counter()
        for _, b in zip(range(args.steps * args.repeats), it):
            step(b)
            atoms += b.tokens
        out["end_to_end"][workers] = atoms / (time.perf_counter() - t0)
        it.close()
    return out


def report(doc: dict) -> str:
    lines = [f"loader: batch {doc['batch_size']}, {doc['batches']} batches after the first; "
             f"load average before / after: {doc['load_before']} / {doc['load_after']}", "",
             "| loader workers | atoms/s | first batch s |", "|---|---|---|"]
    for r in doc["loader"]:
        lines.append(f"| {r['workers']} | {r['atoms_per_s']:,.0f} | {r['first_batch_s']:.2f} |")
    ws = [r["workers"] for r in doc["loader"]]
    e2e = doc["end_to_end_workers"]
    lines += ["", "| family | width | params | training atoms/s (1 thread) | "
              + " | ".join(f"headroom {w}w" for w in ws) + " | "
              + " | ".join(f"end to end {w}w atoms/s" for w in e2e) + " |",
              "|---|---|---|---|" + "---|" * (len(ws) + len(e2e))]
    for c in doc["consumption"]:
        head = " | ".join(f"{r['atoms_per_s'] / c['train_atoms_per_s']:.1f}" for r in doc["loader"])
        ends = " | ".join(f"{c['end_to_end'][w]:,.0f}" for w in e2e)
        lines.append(f"| {c['family']} | {c['width']} | {c['params']:,} | {c['train_atoms_per_s']:,.0f} | "
                     f"{head} | {ends} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="prepared dataset (default: the embedded one)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=150, help="loader batches timed per worker count")
    p.add_argument("--families", nargs="*", default=list(DEFAULT_WIDTHS), help="none: the loader alone")
    p.add_argument("--widths", nargs="*", default=[], help="FAMILY=WIDTH overrides, e.g. mpnn=32")
    p.add_argument("--steps", type=int, default=30, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--end-to-end", type=int, nargs="*", default=[0, 1], help="loader workers for end-to-end")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    widths = {f: w for f, w in DEFAULT_WIDTHS.items()}
    for item in args.widths:
        fam, _, w = item.partition("=")
        widths[fam] = (int(w), widths.get(fam, (0, {}))[1])
    dataset = open_dataset(args.data)
    doc = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "threads": args.threads, "batch_size": args.batch_size, "batches": args.batches,
           "load_before": round(os.getloadavg()[0], 2), "dataset": str(dataset.path),
           "end_to_end_workers": args.end_to_end}
    doc["loader"] = [loader_rate(dataset, w, args) for w in args.workers]
    doc["consumption"] = [consumption(f, *widths[f], dataset, args) for f in args.families]
    doc["load_after"] = round(os.getloadavg()[0], 2)
    print(report(doc))
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
