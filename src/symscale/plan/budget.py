"""Budgets on the compute-optimal path of a fitted L(N, D) = L∞ + A·N^(−α) + B·D^(−β).

With K = C/(3κ) and the optimal allocation of :mod:`symscale.laws.allocation` (N* = G·K^a, D* = K/N*,
a = β/(α+β), G = (αA/(βB))^(1/(α+β))), the loss along the path is

    L*(C) = L∞ + E·K^(−γ),    E = A·G^(−α) + B·G^β,    γ = αβ/(α+β),

strictly decreasing in C. Hence, in closed form (no root finding):

- :func:`for_target` -- the compute reaching a target loss L: K = (E/(L − L∞))^(1/γ), then N*, D*,
  C = 3κ·N*·D*; a target L ≤ L∞ is never reached (unreachable);
- :func:`at_compute` -- the loss and N*, D* at compute C; its loss is L(N*, D*) evaluated on the law.

Both are elementwise over rows of parameters: the point fit and each bootstrap replicate. Point values
satisfy the fitted law to rounding (L(N, D) = target, C = 3κND). Training hours come from the measured
throughput (:func:`symscale.laws.throughput.hours`: D / atoms_per_s(N)); without it they are null.

Intervals (:func:`interval`): the 2.5 and 97.5 percentiles of the replicate solutions -- each replicate's
law solved like the point fit -- with the point value as ``value``. For a target, a replicate that cannot
reach it (its L∞ ≥ target) counts as needing unbounded N, D, C and time: when more than 2.5 % cannot, the
upper bound is unbounded and written as null (``unreachable_share`` says how many). Replicates with a
vanished term (A or B = 0: no optimal allocation) are left out. The throughput fit's own uncertainty is not
in the hours interval.
"""

from __future__ import annotations

import numpy as np

from ..laws import _clean, allocation
from ..laws import throughput as _throughput
from .source import GroupLaw

#: Percentiles of the replicate solutions that bound the 95 % intervals.
PERCENTILES = (2.5, 97.5)
_INTERVALS = ("95 % intervals: 2.5 and 97.5 percentiles of the bootstrap replicates' solutions (an unreachable "
              "target counts as unbounded; a null ci_high means more than 2.5 % of replicates cannot reach it)")


def path_constants(P: np.ndarray) -> dict[str, np.ndarray]:
    """G, a, γ, E of the optimal path for parameter rows ``P`` (m, 5) = (L∞, A, B, α, β); NaN where invalid."""
    L_inf, A, B, alpha, beta = (P[:, i] for i in range(5))
    G = allocation.coefficient(A, B, alpha, beta)
    ex = allocation.exponents(alpha, beta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        E = A * np.power(G, -alpha) + B * np.power(G, beta)
    ok = np.all(np.isfinite(P), axis=1) & np.isfinite(G) & (G > 0) & np.isfinite(E) & (E > 0)
    nan = np.full(P.shape[0], np.nan)
    return {"L_inf": L_inf, "G": np.where(ok, G, nan), "a": np.where(ok, ex["a"], nan),
            "gamma": np.where(ok, ex["gamma_c_derived"], nan), "E": np.where(ok, E, nan), "ok": ok}


def _split(K: np.ndarray, pc: dict) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        N = pc["G"] * np.power(K, pc["a"])
        return N, K / N


def for_target(P: np.ndarray, kappa: float, target: float) -> dict[str, np.ndarray]:
    """N, D, C reaching loss ``target`` per row of ``P``: NaN for invalid rows, +inf where unreachable."""
    pc = path_constants(P)
    gap = target - pc["L_inf"]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        K = np.power(pc["E"] / gap, 1.0 / pc["gamma"])
    reach = pc["ok"] & (gap > 0) & np.isfinite(K)
    K = np.where(reach, K, np.where(pc["ok"], np.inf, np.nan))
    N, D = _split(K, pc)
    N, D = np.where(reach, N, K), np.where(reach, D, K)
    return {"N": N, "D": D, "C": 3.0 * kappa * N * D, "reachable": reach, "valid": pc["ok"]}


def at_compute(P: np.ndarray, kappa: float, C: float) -> dict[str, np.ndarray]:
    """N*, D* and the law's loss L(N*, D*) at compute ``C`` per row of ``P`` (NaN for invalid rows)."""
    pc = path_constants(P)
    N, D = _split(np.full(P.shape[0], C / (3.0 * kappa)), pc)
    with np.errstate(over="ignore", invalid="ignore"):
        loss = P[:, 0] + P[:, 1] * np.power(N, -P[:, 3]) + P[:, 2] * np.power(D, -P[:, 4])
    return {"N": N, "D": D, "loss": loss, "valid": pc["ok"] & np.isfinite(loss)}


def interval(samples: np.ndarray | None) -> tuple[float, float]:
    """(2.5, 97.5) percentiles of ``samples`` ignoring NaN; +inf entries sort last (an unbounded bound)."""
    if samples is None:
        return np.nan, np.nan
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if not s.size:
        return np.nan, np.nan
    fin = np.sort(s[np.isfinite(s)])
    out = []
    for q in PERCENTILES:
        pos = q / 100.0 * (s.size - 1)
        out.append(float(np.interp(pos, np.arange(fin.size), fin)) if fin.size and pos <= fin.size - 1 else np.inf)
    return out[0], out[1]


def _q(value: float, samples: np.ndarray | None, identified: bool) -> dict:
    lo, hi = interval(samples)
    return {"value": float(value), "ci_low": lo, "ci_high": hi, "identified": identified}


def _hours(law: GroupLaw, N, D):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return None if law.throughput is None else _throughput.hours(law.throughput, N, D)


def _warnings(law: GroupLaw) -> list[str]:
    bad = [k for k in ("L_inf", "A", "B", "alpha", "beta") if not law.identified.get(k, False)]
    if not bad:
        return []
    return [f"{', '.join(bad)} not identified: the planned quantities rest on an unidentified law "
            "(marked identified: false)"]


def _common(law: GroupLaw) -> dict:
    n = 0 if law.replicates is None else int(np.count_nonzero(path_constants(law.replicates)["ok"]))
    return {"kappa": law.kappa, "identified": law.all_identified, "n_replicates": n}


def plan_target(laws: dict[str, GroupLaw], target: float) -> dict:
    """The budget document for loss ``target`` (keys in ``docs/laws.md``, "Planning")."""
    groups = {}
    for name, law in laws.items():
        ok = law.all_identified
        point = for_target(law.params(), law.kappa, target)
        reps = None if law.replicates is None else for_target(law.replicates, law.kappa, target)
        entry = {"target_loss": float(target), "reachable": bool(point["reachable"][0]), "reason": None}
        for key in ("N", "D", "C", "hours"):
            entry[key] = None
        if entry["reachable"]:
            N, D = point["N"][0], point["D"][0]
            entry.update({k: _q(point[k][0], None if reps is None else reps[k], ok) for k in ("N", "D", "C")})
            if law.throughput is not None:
                rep_h = None
                if reps is not None:   # an unreachable replicate needs unbounded time (inf / inf would be NaN)
                    rep_h = np.where(reps["reachable"], _hours(law, reps["N"], reps["D"]),
                                     np.where(reps["valid"], np.inf, np.nan))
                entry["hours"] = _q(_hours(law, N, D), rep_h, ok)
        elif not point["valid"][0]:
            entry["reason"] = "the fitted law has a vanished term (A or B = 0): no compute-optimal allocation"
        elif target <= law.L_inf:
            entry["reason"] = f"target {target:g} is at or below the fitted L_inf = {law.L_inf:.6g}"
        else:
            entry["reason"] = "the target needs more compute than floating point represents"
        share = None
        if reps is not None and reps["valid"].any():
            share = float(np.count_nonzero(reps["valid"] & ~reps["reachable"]) / np.count_nonzero(reps["valid"]))
        entry["unreachable_share"] = share
        entry.update(_common(law))
        entry["warnings"] = _warnings(law)
        groups[name] = entry
    return _clean({"mode": "target_loss", "target_loss": float(target), "groups": groups,
                   "intervals": _INTERVALS})


def plan_compute(laws: dict[str, GroupLaw], compute: float) -> dict:
    """The document for compute ``compute``: best loss and N*, D* per group, the best group and its share."""
    groups, rep_loss = {}, {}
    for name, law in laws.items():
        ok = law.all_identified
        point = at_compute(law.params(), law.kappa, compute)
        reps = None if law.replicates is None else at_compute(law.replicates, law.kappa, compute)
        entry = {"compute": float(compute), "loss": None, "N": None, "D": None, "hours": None, "reason": None}
        if point["valid"][0]:
            N, D = point["N"][0], point["D"][0]
            entry.update({k: _q(point[k][0], None if reps is None else np.where(reps["valid"], reps[k], np.nan), ok)
                          for k in ("loss", "N", "D")})
            if law.throughput is not None:
                entry["hours"] = _q(_hours(law, N, D), None if reps is None else
                                    np.where(reps["valid"], _hours(law, reps["N"], reps["D"]), np.nan), ok)
        else:
            entry["reason"] = "the fitted law has a vanished term (A or B = 0): no compute-optimal allocation"
        entry.update(_common(law))
        entry["warnings"] = _warnings(law)
        groups[name] = entry
        rep_loss[name] = None if reps is None else np.where(reps["valid"], reps["loss"], np.nan)
    point_loss = {n: g["loss"]["value"] for n, g in groups.items() if g["loss"] is not None}
    best = min(point_loss, key=point_loss.get) if point_loss else None
    share, n_paired = best_share(rep_loss)
    return _clean({"mode": "compute", "compute": float(compute), "best_group": best, "best_share": share,
                   "n_paired_replicates": n_paired, "groups": groups, "intervals": _INTERVALS})


def best_share(rep_loss: dict[str, np.ndarray | None]) -> tuple[dict[str, float] | None, int]:
    """Share of resamples in which each group has the lowest loss, pairing replicate i of every group.

    Only replicate indices present in every group, with a finite loss in every group, are counted; the
    shares are None when a group has no replicates or no index qualifies.
    """
    if not rep_loss or any(v is None for v in rep_loss.values()):
        return None, 0
    m = min(v.size for v in rep_loss.values())
    names = list(rep_loss)
    table = np.stack([rep_loss[n][:m] for n in names], axis=1)
    keep = np.all(np.isfinite(table), axis=1)
    if not keep.any():
        return None, 0
    wins = np.bincount(np.argmin(table[keep], axis=1), minlength=len(names))
    return {n: float(w / keep.sum()) for n, w in zip(names, wins)}, int(keep.sum())

