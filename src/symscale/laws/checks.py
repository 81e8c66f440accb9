"""What the data of one group can identify, and the warnings of its summary.

Rules (documented in ``docs/laws.md``, section "What is identified"):

- the sum law L∞ + A·N^(−α) + B·D^(−β) is fitted only when the group has more distinct (N, D) points than
  the law has identifiable parameters (1 for L∞, + 2 for (A, α) when N varies, + 2 for (B, β) when D
  varies) and at least one of N, D varies;
- α and A need at least 2 distinct N, β and B at least 2 distinct D, L∞ both (with one N the N term is a
  constant indistinguishable from L∞); a, b, γ derived need α and β; the allocation needs all four;
- a frontier law needs more corners than parameters: 3 for L = F·x^(−γ), 4 for L = L∞ + F·x^(−γ);
- the same rules apply to every bootstrap replicate: a replicate whose runs share one N gives no α
  (left out of α's percentiles, like a replicate envelope with too few corners);
- an exponent α (β) whose 95 % interval reaches the searched range :data:`sumlaw.BOUNDS`, of which more
  than 2.5 % of the bootstrap replicates sit at a bound, or whose least-squares profile is flat (within
  the 95 % likelihood-ratio threshold of its minimum) over more than half of the searched grid, is not
  identified, and neither are the quantities derived from it (A or B, a, b, γ derived, the allocation);
- a group where neither the sum law nor the compute frontier can be fitted is a DataError.

A quantity that is not identified keeps its value and interval (for diagnostics) with ``"identified":
false`` in its Q object, and is named in a warning ``"<keys> not identified: <reason>"``; tables and the
report print it as ``not identified (value [low, high])`` and draw no consistency check from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from . import sumlaw

N_TERM = ("alpha", "A")
D_TERM = ("beta", "B")
SUMLAW_KEYS = ("alpha", "beta", "L_inf", "A", "B", "a", "b", "gamma_c_derived", "G", "N_star_at_C_ref",
               "D_star_at_C_ref")
FRONTIER_MIN_CORNERS = {"fixed": 3, "free": 4}


@dataclass
class Identification:
    """Which quantities of one group are not identified, each with its reason (``missing[key]``)."""

    n_N: int
    n_D: int
    n_distinct: int
    sumlaw_fitted: bool
    missing: dict[str, str] = field(default_factory=dict)
    corners: dict[str, int] = field(default_factory=dict)

    def mark(self, keys, reason: str) -> None:
        for k in keys:
            self.missing.setdefault(k, reason)


def identify(N: np.ndarray, D: np.ndarray) -> Identification:
    """Identification of the sum law's quantities from the distinct N, D and (N, D) of a group."""
    n_N, n_D = int(np.unique(N).size), int(np.unique(D).size)
    n_distinct = int(np.unique(np.stack([N, D]), axis=1).shape[1])
    n_params = 1 + 2 * (n_N >= 2) + 2 * (n_D >= 2)
    fitted = n_params > 1 and n_distinct > n_params
    ident = Identification(n_N=n_N, n_D=n_D, n_distinct=n_distinct, sumlaw_fitted=fitted)
    if not fitted:
        ident.mark(SUMLAW_KEYS, f"the sum law is not fitted: {n_distinct} distinct (N, D) point(s) for "
                                f"{n_params} identifiable parameter(s) (N takes {n_N} value(s), D {n_D})")
    derived = ("L_inf", "a", "b", "gamma_c_derived", "G", "N_star_at_C_ref", "D_star_at_C_ref")
    if n_N < 2:
        ident.mark(N_TERM + derived, f"every run has N = {N[0]:g} (at least 2 distinct N are needed)")
    if n_D < 2:
        ident.mark(D_TERM + derived, f"every checkpoint has D = {D[0]:g} (at least 2 distinct D are needed)")
    return ident


DERIVED = ("a", "b", "gamma_c_derived", "G", "N_star_at_C_ref", "D_star_at_C_ref")
#: share of bootstrap replicates at a bound of the searched exponent range that marks the interval as
#: reaching it (the 2.5 % tail of a 95 % interval)
BOUND_SHARE = 0.025


def check_sumlaw_exponents(ident: Identification, fit, out: dict, samples: dict[str, np.ndarray]) -> None:
    """Mark α (β) and what derives from it as not identified when the data do not pin it down.

    ``out[key]``: the exponent's Q (interval already formed); ``samples[key]``: its bootstrap replicates;
    ``fit.flat[key]``: the share of the searched grid where its profile is flat (:func:`sumlaw.profile_flatness`).
    """
    lo_b, hi_b = sumlaw.BOUNDS
    for key, term in (("alpha", N_TERM), ("beta", D_TERM)):
        q, s = out[key], np.asarray(samples[key], dtype=float)
        if key in ident.missing or not np.isfinite(q["value"]):
            continue
        s = s[np.isfinite(s)]
        at_bound = float(np.mean(np.isclose(s, lo_b, rtol=1e-3) | np.isclose(s, hi_b, rtol=1e-3))) if s.size else 0.0
        reason = None
        if np.isfinite(q["ci_low"]) and (q["ci_low"] <= lo_b * (1 + 1e-3) or q["ci_high"] >= hi_b * (1 - 1e-3)):
            reason = (f"the 95% interval of {key} [{q['ci_low']:.3g}, {q['ci_high']:.3g}] reaches the searched "
                      f"range [{lo_b:g}, {hi_b:g}]")
        elif at_bound > BOUND_SHARE:
            reason = f"{100 * at_bound:.0f}% of the bootstrap fits put {key} at a bound of [{lo_b:g}, {hi_b:g}]"
        elif fit.flat is not None and fit.flat.get(key, 0.0) > sumlaw.FLAT_FRACTION:
            g = sumlaw.ALPHA_GRID
            reason = (f"the profile likelihood of {key} is flat over {100 * fit.flat[key]:.0f}% of the searched "
                      f"grid [{g[0]:g}, {g[-1]:g}]")
        if reason:
            ident.mark(term + DERIVED, reason)


def check_frontier(ident: Identification, n_corners: int, prefix: str, name: str) -> None:
    """Mark the frontier laws (keys ``<prefix>.fixed`` / ``<prefix>.free``) with too few corners."""
    ident.corners[prefix] = n_corners
    for law, need in FRONTIER_MIN_CORNERS.items():
        if n_corners < need:
            ident.mark([f"{prefix}.{law}"], f"the {name} frontier has {n_corners} corner(s); "
                                            f"the {law} law needs at least {need}")


def require_something(ident: Identification, source: str, group: str, n_points: int) -> None:
    """DataError when neither the sum law nor the compute frontier (fixed law) can be fitted."""
    if not ident.sumlaw_fitted and "frontier_c.fixed" in ident.missing:
        raise DataError(f"{source}: group '{group}': nothing can be fitted from {n_points} checkpoint(s): "
                        f"{ident.n_distinct} distinct (N, D) ({ident.n_N} distinct N, {ident.n_D} distinct D) "
                        f"and {ident.corners.get('frontier_c', 0)} compute-frontier corner(s)")


def replicate_spread(values: np.ndarray, run: np.ndarray, n_runs: int, counts: np.ndarray) -> np.ndarray:
    """(B,) True where the runs drawn by a replicate (``counts`` (B, R) > 0) take at least 2 distinct values."""
    lo, hi = np.full(n_runs, np.inf), np.full(n_runs, -np.inf)
    np.minimum.at(lo, run, values)
    np.maximum.at(hi, run, values)
    drawn = counts > 0
    return np.where(drawn, hi, -np.inf).max(axis=1) > np.where(drawn, lo, np.inf).min(axis=1)


def warnings(out: dict, data, ident: Identification) -> list[str]:
    """The warnings of one group's summary ``out`` (data: its :class:`~symscale.laws.io.GroupData`)."""
    w = list(data.notes)
    by_reason: dict[str, list[str]] = {}
    for key, reason in ident.missing.items():
        by_reason.setdefault(reason, []).append(key)
    w += [f"{', '.join(keys)} not identified: {reason}" for reason, keys in by_reason.items()]
    if data.n_runs < 3:
        w.append(f"only {data.n_runs} runs: exponents in N rest on too few sizes")
    for label, arr in (("N", data.N), ("C", data.C)):
        dec = float(np.log10(arr.max() / arr.min()))
        if dec < 1.0:
            w.append(f"{label} spans {dec:.2f} decades (< 1): extrapolation is unreliable")
    for key in ("gamma_c", "gamma_h", "alpha", "beta", "a", "b", "gamma_c_derived"):
        q = out.get(key)
        if key in ident.missing:      # already named as not identified: its interval is diagnostic only
            continue
        if q and np.isfinite(q["ci_low"]) and q["ci_high"] - q["ci_low"] > abs(q["value"]):
            w.append(f"{key}: 95% interval [{q['ci_low']:.3g}, {q['ci_high']:.3g}] is wider than the value")
    for key, term in (("A", "model-size term A·N^-alpha"), ("B", "data term B·D^-beta")):
        if out[key]["value"] <= 0.0:
            w.append(f"{key} = 0: the {term} vanished, so its exponent and the allocation a, b are not identified")
    for key in ("alpha", "beta"):
        v = out[key]["value"]
        if np.isclose(v, sumlaw.BOUNDS[0], rtol=1e-3) or np.isclose(v, sumlaw.BOUNDS[1], rtol=1e-3):
            w.append(f"{key} = {v:.3g} sits at the bound of the searched range {sumlaw.BOUNDS}: "
                     "no interior optimum, the exponent is not identified by these data")
    for key in ("alpha", "beta", "gamma_c"):
        q = out.get(key)
        if key in ident.missing:
            continue
        if q and np.isfinite(q["ci_low"]) and not (q["ci_low"] <= q["value"] <= q["ci_high"]):
            w.append(f"{key}: the estimate {q['value']:.3g} lies outside its own bootstrap interval "
                     f"[{q['ci_low']:.3g}, {q['ci_high']:.3g}]: resampled runs disagree with the full fit")
    if out["frontier_c"]["selected"] == "free":
        w.append("compute frontier: the data support a non-zero L_inf (AICc); gamma_c assumes L_inf = 0")
    diverged = [s for s in data.run_status if s == "diverged"]
    if diverged:
        w.append(f"{len(diverged)} diverged run(s): only checkpoints before divergence are used")
    return w
