"""Synthetic checkpoints from a known sum law L = L∞ + A·N^-α + B·D^-β with multiplicative log-normal noise,
written as GroupData, a CSV or a fake study directory (metrics.jsonl + summary.json per run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from symscale.laws.io import GroupData

TRUTH = dict(L_inf=0.02, A=40.0, B=300.0, alpha=0.45, beta=0.40)


def make_group(name: str = "g", *, n_runs: int = 8, n_ckpt: int = 30, noise: float = 0.01, seed: int = 0,
               kappa: float = 3.0, n_range=(1e5, 1e7), d_range=(1e6, 1e10), run_noise: float = 0.0,
               **truth) -> GroupData:
    """``noise``: log-normal σ of each checkpoint; ``run_noise``: σ of a log offset shared by a run's checkpoints."""
    p = {**TRUTH, **truth}
    rng = np.random.default_rng(seed)
    Ns = np.geomspace(*n_range, n_runs)
    Ds = np.geomspace(*d_range, n_ckpt)
    N, D = (a.ravel() for a in np.meshgrid(Ns, Ds, indexing="ij"))
    loss = p["L_inf"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
    loss = loss * np.exp(rng.normal(0.0, noise, loss.size))
    if run_noise:
        loss = loss * np.exp(rng.normal(0.0, run_noise, n_runs))[np.repeat(np.arange(n_runs), n_ckpt)]
    C = 3.0 * kappa * N * D
    H = C / (1e11 * (N / 1e5) ** 0.2)
    return GroupData(name=name, run=np.repeat(np.arange(n_runs), n_ckpt), N=N, D=D, C=C, H=H, loss=loss,
                     kappa=kappa, run_names=[f"{name}-{i}" for i in range(n_runs)],
                     run_status=["completed"] * n_runs)


def write_csv(path: Path, groups: list[GroupData]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "run", "N", "D", "C", "time_s", "loss"])
        for g in groups:
            for i in range(g.n_points):
                w.writerow([g.name, g.run_names[g.run[i]], f"{g.N[i]:.8g}", f"{g.D[i]:.8g}", f"{g.C[i]:.8g}",
                            f"{g.H[i]:.8g}", f"{g.loss[i]:.8g}"])
    return path


def write_study(root: Path, groups: list[GroupData], diverge: str | None = None) -> Path:
    """One run directory per run under ``root/<group>/<run>``; ``diverge`` = a run name that diverges halfway."""
    for g in groups:
        for r, label in enumerate(g.run_names):
            d = root / g.name / label
            d.mkdir(parents=True)
            m = np.flatnonzero(g.run == r)
            status = "diverged" if label == diverge else "completed"
            with open(d / "metrics.jsonl", "w") as fh:
                for k, i in enumerate(m):
                    loss = float("nan") if status == "diverged" and k >= len(m) // 2 else float(g.loss[i])
                    rec = {"step": k, "tokens": g.D[i], "params": g.N[i], "kappa": g.kappa, "compute": g.C[i],
                           "flops_measured": g.C[i], "train_time_s": g.H[i], "energy_mae_per_atom": loss / 2,
                           "force_mae": loss * 1.5, "force_l2": loss * 2, "loss": loss}
                    fh.write(json.dumps(rec) + "\n")
            (d / "summary.json").write_text(json.dumps({
                "run_id": label, "model": g.name, "width": r, "params": float(g.N[m[0]]), "kappa": g.kappa,
                "status": status, "reason": "loss is NaN" if status == "diverged" else "",
                "tokens": float(g.D[m].max()), "steps": int(m.size)}))
    return root
