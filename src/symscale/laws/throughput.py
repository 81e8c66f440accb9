"""Measured training throughput of one group: seconds of training per atom against model size N.

Each run contributes one point, its final checkpoint (largest D): ``seconds per atom = H / D`` with H the
run's training wall time at that checkpoint (``train_time_s``; runs whose final H is 0 are left out). The
model is a fixed cost per atom plus a cost proportional to the parameters,

    seconds_per_atom(N) = overhead + per_param · N          (both >= 0),

because a step's arithmetic grows with N (3κN FLOPs per atom) while small models are bound by per-op
overhead that does not. It is fitted by non-negative least squares on relative residuals (every run weighs
the same whatever its speed). Beyond the measured sizes it extrapolates linearly in N, i.e. at the largest
measured models' FLOP rate: a power law in N fitted to overhead-bound small models would predict
large models many times too fast (seen on paper_mini2's pilot: 64× the pilot's widths at 1/10 of the
true cost). The training time of D atoms at size N is D · seconds_per_atom(N) (:func:`hours`).

The entry in a group's ``fit`` summary (``"throughput"``, null when the group has no wall time)::

    {"form": "...",
     "seconds_per_atom": {"overhead", "per_param", "rms_log_residual", "n_runs"},
     "runs": [{"run", "N", "D", "seconds", "atoms_per_s"}, ...]}
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import nnls

from .io import GroupData

FORM = "training time of D atoms at size N = D * (overhead + per_param * N) seconds"


def fit_throughput(data: GroupData) -> dict | None:
    """The ``"throughput"`` entry of ``data``'s summary, or None without wall time (or no run with H > 0)."""
    if data.H is None:
        return None
    runs = []
    for r in range(data.n_runs):
        idx = np.flatnonzero(data.run == r)
        if idx.size == 0:
            continue
        last = idx[np.argmax(data.D[idx])]
        N, D, H = float(data.N[last]), float(data.D[last]), float(data.H[last])
        if H > 0:
            runs.append({"run": data.run_names[r], "N": N, "D": D, "seconds": H, "atoms_per_s": D / H})
    if not runs:
        return None
    N = np.array([p["N"] for p in runs])
    y = np.array([p["seconds"] / p["D"] for p in runs])
    # minimise sum((overhead + per_param * N) / y - 1)^2 over overhead, per_param >= 0
    scale = float(N.max())
    coef, _ = nnls(np.column_stack([1.0 / y, N / scale / y]), np.ones_like(y))
    overhead, per_param = float(coef[0]), float(coef[1]) / scale
    if overhead + per_param * N.min() <= 0:  # degenerate (cannot happen with y > 0): the mean cost per atom
        overhead, per_param = float(y.mean()), 0.0
    pred = overhead + per_param * N
    resid = np.log(pred / y)
    return {"form": FORM,
            "seconds_per_atom": {"overhead": overhead, "per_param": per_param,
                                 "rms_log_residual": float(np.sqrt(np.mean(resid * resid))), "n_runs": len(runs)},
            "runs": runs}


def atoms_per_s(entry: dict, N):
    """Throughput (atoms per second) at size(s) ``N`` from a ``"throughput"`` entry."""
    p = entry["seconds_per_atom"]
    return 1.0 / (p["overhead"] + p["per_param"] * np.asarray(N, dtype=float))


def hours(entry: dict, N, D):
    """Training wall time in hours of ``D`` atoms at size ``N`` (elementwise)."""
    return np.asarray(D, dtype=float) / atoms_per_s(entry, N) / 3600.0


def check_entry(entry, where: str) -> str | None:
    """None when ``entry`` is a usable ``"throughput"`` entry, else what is wrong (for a one-line error)."""
    try:
        p = entry["seconds_per_atom"]
        values = [float(p[k]) for k in ("overhead", "per_param")]
    except (TypeError, KeyError, ValueError):
        return (f"{where}: 'throughput.seconds_per_atom' needs numbers overhead and per_param (a fit document "
                f"from before symscale 0.1's linear throughput model: re-run `symscale fit`)")
    if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        return f"{where}: 'throughput.seconds_per_atom' has a negative or non-finite value"
    return None
