"""Fit every law of one group on all its checkpoints and bootstrap it by resampling whole runs.

Each bootstrap replicate draws ``n_runs`` runs with replacement (seeded); a run drawn k times contributes its
checkpoints with weight k. The frontier of a replicate is the envelope of the runs it contains. Every reported
quantity Q is ``{"value": full-data estimate, "ci_low", "ci_high": 2.5 / 97.5 % percentiles of the replicates}``
(non-finite replicates, e.g. an envelope with too few corners or, for α, a replicate whose runs share one
N, are left out of the percentiles). What the data cannot identify (:mod:`.checks`) is reported as null.
Replicates are represented by their run multiplicities (n_boot, n_runs) only; the fits work on blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import allocation, checks, frontier, sumlaw
from .io import GroupData


def quantity(value: float, samples: np.ndarray) -> dict:
    """Q = value with its percentile 95 % interval over the finite ``samples``."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    lo, hi = (np.percentile(s, [2.5, 97.5]) if s.size else (np.nan, np.nan))
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi)}


NOT_IDENTIFIED = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}


@dataclass
class FrontierResult:
    """Full-data fits (B = 1) and bootstrap fits of one frontier (``x`` = C or H)."""

    x: np.ndarray
    loss: np.ndarray
    fixed: frontier.FrontierFit
    free: frontier.FrontierFit
    free_selected: bool
    boot_fixed: frontier.FrontierFit | None = None
    boot_free: frontier.FrontierFit | None = None

    def summary(self, missing: dict[str, str] | None = None, prefix: str = "frontier_c") -> dict:
        """JSON entry; a law listed in ``missing`` (``"<prefix>.fixed"``, ...) is reported as not identified."""
        missing = missing or {}
        out = {"n_corners": int(self.fixed.n[0]), "selected": "free" if self.free_selected else "fixed",
               "criterion": f"AICc on log residuals; free L_inf needs an AICc drop > {frontier.AICC_MARGIN:g}"}
        for name in ("fixed", "free"):
            fit, boot = getattr(self, name), getattr(self, f"boot_{name}")
            if f"{prefix}.{name}" in missing:
                out[name] = {"aicc": None, "rss_log": None,
                             **{k: dict(NOT_IDENTIFIED) for k in ("gamma", "F", "L_inf")}}
                continue
            entry = {"aicc": _finite(fit.aicc[0]), "rss_log": float(fit.rss[0])}
            need = checks.FRONTIER_MIN_CORNERS[name]
            for key in ("gamma", "F", "L_inf"):
                samples = np.where(boot.n >= need, getattr(boot, key), np.nan) if boot is not None else np.array([])
                entry[key] = quantity(getattr(fit, key)[0], samples)
            out[name] = entry
        return out


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _frontier(x: np.ndarray, loss: np.ndarray, run: np.ndarray, counts: np.ndarray | None) -> FrontierResult:
    env = frontier.envelope_mask(x, loss).astype(float)
    fixed, free = frontier.fit_fixed(x, loss, env), frontier.fit_free(x, loss, env)
    res = FrontierResult(x=x, loss=loss, fixed=fixed, free=free, free_selected=bool(frontier.select(fixed, free)[0]))
    if counts is not None:
        x0 = float(np.exp(np.mean(np.log(x))))     # the full-data fit's scale, shared by every replicate
        res.boot_fixed, res.boot_free = frontier.fit_replicates(x, loss, run, counts, x0)
    return res


@dataclass
class GroupAnalysis:
    """Everything fitted for one group; ``summary`` is its JSON entry (public key names, see docs/laws.md).

    ``fit`` holds NaN and ``boot`` is None when the sum law is not fitted (see :mod:`.checks`).
    """

    data: GroupData
    fit: sumlaw.SumLawFit
    boot: sumlaw.SumLawFit | None
    front_c: FrontierResult
    front_h: FrontierResult | None
    summary: dict = field(default_factory=dict)
    counts: np.ndarray | None = None
    ident: checks.Identification | None = None


def run_counts(n_runs: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_runs) multiplicities of the runs in each replicate (whole runs drawn with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot)


def run_weights(data: GroupData, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_points) multiplicities of every checkpoint (:func:`run_counts` spread over the points)."""
    return run_counts(data.n_runs, n_boot, seed)[:, data.run].astype(float)


def _nan_fit() -> sumlaw.SumLawFit:
    nan = np.array([np.nan])
    return sumlaw.SumLawFit(L_inf=nan, A=nan, B=nan, alpha=nan, beta=nan, objective=nan)


def analyse_group(data: GroupData, *, n_boot: int = 1000, seed: int = 0, delta: float = 1e-3,
                  holdout: float = 0.2) -> GroupAnalysis:
    """Frontiers (C, and H when known), sum law, allocation, back-test and bootstrap CIs of one group.

    Raises DataError when nothing can be fitted (:func:`.checks.require_something`).
    """
    counts = run_counts(data.n_runs, n_boot, seed).astype(float) if n_boot > 0 else None
    ident = checks.identify(data.N, data.D)
    front_c = _frontier(data.C, data.loss, data.run, counts)
    checks.check_frontier(ident, int(front_c.fixed.n[0]), "frontier_c", "compute")
    checks.require_something(ident, data.source, data.name, data.n_points)
    fit, boot = _nan_fit(), None
    if ident.sumlaw_fitted:
        fit = sumlaw.fit(data.N, data.D, data.loss, delta=delta)
        if counts is not None:
            boot = sumlaw.fit_batched(data.N, data.D, data.loss, counts, fit, cell=data.run, delta=delta)
    front_h = None
    if data.H is not None and np.count_nonzero(data.H > 0) >= 3:
        keep = data.H > 0
        front_h = _frontier(data.H[keep], data.loss[keep], data.run[keep], counts)
        checks.check_frontier(ident, int(front_h.fixed.n[0]), "frontier_h", "time")
    res = GroupAnalysis(data=data, fit=fit, boot=boot, front_c=front_c, front_h=front_h, counts=counts,
                        ident=ident)
    res.summary = _summarise(res, holdout)
    return res


def boot_samples(res: GroupAnalysis) -> dict[str, np.ndarray]:
    """Replicate values of the sum-law parameters; NaN where a replicate's runs do not identify them."""
    boot, data = res.boot, res.data
    if boot is None:
        return {k: np.array([]) for k in ("alpha", "beta", "L_inf", "A", "B")}
    has_n = checks.replicate_spread(data.N, data.run, data.n_runs, res.counts)
    has_d = checks.replicate_spread(data.D, data.run, data.n_runs, res.counts)
    ok = {"alpha": has_n, "A": has_n, "beta": has_d, "B": has_d, "L_inf": has_n & has_d}
    return {k: np.where(m, getattr(boot, k), np.nan) for k, m in ok.items()}


def _summarise(res: GroupAnalysis, holdout: float) -> dict:
    data, fit, boot, missing = res.data, res.fit, res.boot, res.ident.missing
    empty = np.array([])
    reps = boot_samples(res)
    b = reps.__getitem__
    out: dict = {}
    fc = res.front_c.summary(missing, "frontier_c")
    fh = res.front_h.summary(missing, "frontier_h") if res.front_h is not None else None
    out["gamma_c"] = fc["fixed"]["gamma"]
    out["gamma_h"] = fh["fixed"]["gamma"] if fh is not None else None
    for key in ("alpha", "beta", "L_inf", "A", "B"):
        out[key] = quantity(getattr(fit, key)[0], b(key))
    full = allocation.exponents(fit.alpha, fit.beta)
    derived = allocation.exponents(b("alpha"), b("beta")) if boot is not None else {k: empty for k in full}
    for key in ("a", "b", "gamma_c_derived"):
        out[key] = quantity(full[key][0], derived[key])
    out["n_runs"] = data.n_runs
    out["n_points"] = data.n_points
    bt = frontier.backtest(data.C, data.loss, holdout)
    out["backtest_rel_error"] = bt["fixed"] if bt["fixed"] is not None else float("nan")
    out["backtest"] = bt
    out["kappa"] = data.kappa
    out["frontier_c"] = fc
    out["frontier_h"] = fh
    c_max = float(data.C.max())
    g_full = allocation.coefficient(fit.A, fit.B, fit.alpha, fit.beta)
    g_boot = allocation.coefficient(b("A"), b("B"), b("alpha"), b("beta")) if boot is not None else empty
    n_full = allocation.optimal_n(np.array([c_max]), data.kappa, fit.A, fit.B, fit.alpha, fit.beta)[0, 0]
    n_boot = (allocation.optimal_n(np.array([c_max]), data.kappa, b("A"), b("B"), b("alpha"), b("beta"))[:, 0]
              if boot is not None else empty)
    k_max = c_max / (3.0 * data.kappa)
    out["allocation"] = {
        "formula": "N*(C) = G (C/(3 kappa))^a, D*(C) = (C/(3 kappa)) / N*(C)",
        "kappa": data.kappa, "G": quantity(g_full[0], g_boot), "C_ref": c_max,
        "N_star_at_C_ref": quantity(n_full, n_boot), "D_star_at_C_ref": quantity(k_max / n_full, k_max / n_boot)}
    for key in checks.SUMLAW_KEYS:
        if key in missing:
            (out["allocation"] if key in out["allocation"] else out)[key] = dict(NOT_IDENTIFIED)
    out["sumlaw_objective"] = float(fit.objective[0])
    out["n_bootstrap"] = 0 if res.counts is None else int(res.counts.shape[0])
    out["runs"] = _inventory(data)
    out["warnings"] = checks.warnings(out, data, res.ident)
    return out


def _inventory(data: GroupData) -> list[dict]:
    order = np.argsort(data.run, kind="stable")
    parts = np.split(order, np.flatnonzero(np.diff(data.run[order])) + 1)
    rows = []
    for idx in parts:
        i = int(data.run[idx[0]])
        rows.append({"run": data.run_names[i], "status": data.run_status[i] if data.run_status else "completed",
                     "N": float(np.median(data.N[idx])), "n_points": int(idx.size), "D_max": float(data.D[idx].max()),
                     "C_max": float(data.C[idx].max()), "best_loss": float(data.loss[idx].min())})
    return rows


def analyse(groups: dict[str, GroupData], *, n_boot: int = 1000, seed: int = 0, delta: float = 1e-3,
            holdout: float = 0.2, jobs: int = 1) -> dict[str, GroupAnalysis]:
    """:func:`analyse_group` for every group (seed offset by the group's position in name order).

    ``jobs > 1`` fits groups in that many worker processes; results are identical to ``jobs=1``.
    """
    items = sorted(groups.items())
    kwargs = [dict(n_boot=n_boot, seed=seed + i, delta=delta, holdout=holdout) for i in range(len(items))]
    if jobs > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(items))) as pool:
            futures = [pool.submit(analyse_group, g, **kw) for (_, g), kw in zip(items, kwargs)]
            return {name: fut.result() for (name, _), fut in zip(items, futures)}
    return {name: analyse_group(g, **kw) for (name, g), kw in zip(items, kwargs)}
