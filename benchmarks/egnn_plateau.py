"""egnn's start-up plateau: the per-step force term of short training runs at several widths.

Every egnn run first shrinks its random initial forces and sits near the loss of predicting zero forces
until its edge messages resolve the radial shape of the bond forces. This prints, every 10 steps, the
normalised force term, |F_pred| / |F_ref| and the cosine between them, for each width (μP from
``--base-width``, schedule-free AdamW at ``--lr``), so the plateau's length can be compared across widths
(docs/models.md, "egnn start-up plateau and μP")::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/egnn_plateau.py runs/paper_mini2/data --widths 8,64,128
"""

from __future__ import annotations

import argparse

import torch

from symscale.train.config import RunConfig
from symscale.train.optim import clip_gradients
from symscale.train.run import prepare


def trace(data: str, width: int, steps: int, lr: float, base_width: int, seed: int) -> list[dict]:
    cfg = RunConfig.model_validate({
        "name": f"plateau-w{width}", "data": {"path": data, "cutoff": 5.0, "val_size": 16},
        "model": {"family": "egnn", "width": width}, "batch_size": 16,
        "optimizer": {"name": "schedulefree", "lr": lr, "warmup_steps": 10, "grad_clip": 10.0},
        "mup": {"base_width": base_width}, "seed": seed})
    torch.manual_seed(seed)
    s = prepare(cfg, torch.device("cpu"))
    batches, rows, tokens = iter(s.loader), [], 0
    for step in range(1, steps + 1):
        b = next(batches)
        s.optimizer.zero_grad(set_to_none=True)
        pred = s.net(b)
        e_term, f_term = s.loss_fn.terms(pred, b)
        (e_term + f_term).backward()
        clip_gradients(s.net.parameters(), 10.0)
        s.optimizer.step()
        tokens += b.tokens
        if step % 10 == 0 or step == steps:
            f, ref = pred["forces"].detach(), b.forces
            rows.append({"step": step, "tokens": tokens, "force_term": float(f_term.detach()),
                         "ratio": float(f.norm() / ref.norm()),
                         "cosine": float((f * ref).sum() / (f.norm() * ref.norm()).clamp_min(1e-12))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a prepared dataset directory (symscale data generate/prepare)")
    ap.add_argument("--widths", default="8,64,128")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for w in (int(x) for x in args.widths.split(",")):
        for r in trace(args.data, w, args.steps, args.lr, args.base_width, args.seed):
            print(f"width {w:4d} step {r['step']:4d} atoms {r['tokens']:6d} force term {r['force_term']:.3f} "
                  f"|F|/|F_ref| {r['ratio']:.3f} cos {r['cosine']:.3f}", flush=True)


if __name__ == "__main__":
    main()
