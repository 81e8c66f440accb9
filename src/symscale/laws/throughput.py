"""Measured training throughput of one group: atoms per wall-second of training against model size N.

Each run contributes one point, its final checkpoint (largest D): ``atoms_per_s = D / H`` with H the run's
training wall time at that checkpoint (``train_time_s``; runs whose final H is 0 are left out). The fit is
ordinary least squares on logs,

    log atoms_per_s(N) = log_intercept + slope · log(N / N_ref),

with N_ref the geometric mean of the runs' N (so ``log_intercept`` is the throughput at a typical size).
With one run, or with every run at one N, the slope is 0 and ``log_intercept`` is the mean log throughput.
The training time of D atoms at size N is then D / atoms_per_s(N) (:func:`hours`); beyond the measured
sizes it is an extrapolation of the power law.

The entry in a group's ``fit`` summary (``"throughput"``, null when the group has no wall time)::

    {"form": "...",
     "atoms_per_s": {"log_intercept", "slope", "N_ref", "rms_log_residual", "n_runs"},
     "runs": [{"run", "N", "D", "seconds", "atoms_per_s"}, ...]}
"""

from __future__ import annotations

import math

import numpy as np

from .io import GroupData

FORM = "atoms_per_s(N) = exp(log_intercept) * (N / N_ref)^slope; training time of D atoms = D / atoms_per_s(N)"


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
    logn = np.log([p["N"] for p in runs])
    logr = np.log([p["atoms_per_s"] for p in runs])
    n_ref = float(np.exp(logn.mean()))
    x = logn - logn.mean()
    slope = float(np.dot(x, logr - logr.mean()) / np.dot(x, x)) if np.ptp(logn) > 0 else 0.0
    intercept = float(logr.mean())
    resid = logr - intercept - slope * x
    return {"form": FORM,
            "atoms_per_s": {"log_intercept": intercept, "slope": slope, "N_ref": n_ref,
                            "rms_log_residual": float(np.sqrt(np.mean(resid * resid))), "n_runs": len(runs)},
            "runs": runs}


def atoms_per_s(entry: dict, N):
    """Throughput (atoms per second) at size(s) ``N`` from a ``"throughput"`` entry."""
    p = entry["atoms_per_s"]
    return np.exp(p["log_intercept"]) * np.power(np.asarray(N, dtype=float) / p["N_ref"], p["slope"])


def hours(entry: dict, N, D):
    """Training wall time in hours of ``D`` atoms at size ``N`` (elementwise)."""
    return np.asarray(D, dtype=float) / atoms_per_s(entry, N) / 3600.0


def check_entry(entry, where: str) -> str | None:
    """None when ``entry`` is a usable ``"throughput"`` entry, else what is wrong (for a one-line error)."""
    try:
        p = entry["atoms_per_s"]
        values = [float(p[k]) for k in ("log_intercept", "slope", "N_ref")]
    except (TypeError, KeyError, ValueError):
        return f"{where}: 'throughput.atoms_per_s' needs numbers log_intercept, slope, N_ref"
    if not all(math.isfinite(v) for v in values) or values[2] <= 0:
        return f"{where}: 'throughput.atoms_per_s' has a non-finite value or N_ref <= 0"
    return None
