"""Fit every law of one group on all its checkpoints and bootstrap it by resampling whole runs.

Each bootstrap replicate draws ``n_runs`` runs with replacement (seeded); a run drawn k times contributes its
checkpoints with weight k. The frontier of a replicate is the envelope of the runs it contains. Every reported
quantity Q is ``{"value": full-data estimate, "ci_low", "ci_high": 2.5 / 97.5 % percentiles of the replicates}``
(non-finite replicates, e.g. an envelope with fewer than 3 corners, are left out of the percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import allocation, frontier, sumlaw
from .io import GroupData


def quantity(value: float, samples: np.ndarray) -> dict:
    """Q = value with its percentile 95 % interval over the finite ``samples``."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    lo, hi = (np.percentile(s, [2.5, 97.5]) if s.size else (np.nan, np.nan))
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi)}


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

    def summary(self) -> dict:
        out = {"n_corners": int(self.fixed.n[0]), "selected": "free" if self.free_selected else "fixed",
               "criterion": f"AICc on log residuals; free L_inf needs an AICc drop > {frontier.AICC_MARGIN:g}"}
        for name in ("fixed", "free"):
            fit, boot = getattr(self, name), getattr(self, f"boot_{name}")
            entry = {"aicc": _finite(fit.aicc[0]), "rss_log": float(fit.rss[0])}
            for key in ("gamma", "F", "L_inf"):
                samples = _mask_small(getattr(boot, key), boot) if boot is not None else np.array([])
                entry[key] = quantity(getattr(fit, key)[0], samples)
            out[name] = entry
        return out


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _mask_small(values: np.ndarray, fit: frontier.FrontierFit) -> np.ndarray:
    return np.where(fit.n >= 3, values, np.nan)


def _frontier(x: np.ndarray, loss: np.ndarray, weights: np.ndarray | None) -> FrontierResult:
    env = frontier.envelope_mask(x, loss).astype(float)
    fixed, free = frontier.fit_fixed(x, loss, env), frontier.fit_free(x, loss, env)
    res = FrontierResult(x=x, loss=loss, fixed=fixed, free=free, free_selected=bool(frontier.select(fixed, free)[0]))
    if weights is not None:
        bx, bl, bw = frontier.compact(x, loss, frontier.envelope_mask(x, loss, weights > 0))
        res.boot_fixed = frontier.fit_fixed(bx, bl, bw)
        res.boot_free = frontier.fit_free(bx, bl, bw)
    return res


@dataclass
class GroupAnalysis:
    """Everything fitted for one group; ``summary`` is its JSON entry (public key names, see docs/laws.md)."""

    data: GroupData
    fit: sumlaw.SumLawFit
    boot: sumlaw.SumLawFit | None
    front_c: FrontierResult
    front_h: FrontierResult | None
    summary: dict = field(default_factory=dict)


def run_weights(data: GroupData, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_points) multiplicities from resampling whole runs with replacement."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(data.n_runs, np.full(data.n_runs, 1.0 / data.n_runs), size=n_boot)
    return counts[:, data.run].astype(float)


def analyse_group(data: GroupData, *, n_boot: int = 1000, seed: int = 0, delta: float = 1e-3,
                  holdout: float = 0.2) -> GroupAnalysis:
    """Frontiers (C, and H when known), sum law, allocation, back-test and bootstrap CIs of one group."""
    weights = run_weights(data, n_boot, seed) if n_boot > 0 else None
    fit = sumlaw.fit(data.N, data.D, data.loss, delta=delta)
    boot = sumlaw.fit_batched(data.N, data.D, data.loss, weights, fit, delta=delta) if n_boot > 0 else None
    front_c = _frontier(data.C, data.loss, weights)
    front_h = None
    if data.H is not None and np.count_nonzero(data.H > 0) >= 3:
        keep = data.H > 0
        front_h = _frontier(data.H[keep], data.loss[keep], None if weights is None else weights[:, keep])
    res = GroupAnalysis(data=data, fit=fit, boot=boot, front_c=front_c, front_h=front_h)
    res.summary = _summarise(res, holdout)
    return res


def _summarise(res: GroupAnalysis, holdout: float) -> dict:
    data, fit, boot = res.data, res.fit, res.boot
    empty = np.array([])
    b = (lambda key: getattr(boot, key)) if boot is not None else (lambda key: empty)
    out: dict = {}
    fc = res.front_c.summary()
    out["gamma_c"] = fc["fixed"]["gamma"]
    out["gamma_h"] = res.front_h.summary()["fixed"]["gamma"] if res.front_h is not None else None
    for key in ("alpha", "beta", "L_inf", "A", "B"):
        out[key] = quantity(getattr(fit, key)[0], b(key))
    full = allocation.exponents(fit.alpha, fit.beta)
    reps = allocation.exponents(b("alpha"), b("beta")) if boot is not None else {k: empty for k in full}
    for key in ("a", "b", "gamma_c_derived"):
        out[key] = quantity(full[key][0], reps[key])
    out["n_runs"] = data.n_runs
    out["n_points"] = data.n_points
    bt = frontier.backtest(data.C, data.loss, holdout)
    out["backtest_rel_error"] = bt["fixed"] if bt["fixed"] is not None else float("nan")
    out["backtest"] = bt
    out["kappa"] = data.kappa
    out["frontier_c"] = fc
    out["frontier_h"] = res.front_h.summary() if res.front_h is not None else None
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
    out["sumlaw_objective"] = float(fit.objective[0])
    out["n_bootstrap"] = 0 if boot is None else int(boot.alpha.size)
    out["runs"] = _inventory(data)
    out["warnings"] = _warnings(out, data)
    return out


def _inventory(data: GroupData) -> list[dict]:
    rows = []
    for i, name in enumerate(data.run_names):
        m = data.run == i
        rows.append({"run": name, "status": data.run_status[i] if data.run_status else "completed",
                     "N": float(np.median(data.N[m])), "n_points": int(m.sum()), "D_max": float(data.D[m].max()),
                     "C_max": float(data.C[m].max()), "best_loss": float(data.loss[m].min())})
    return rows


def _warnings(out: dict, data: GroupData) -> list[str]:
    w = []
    if data.n_runs < 3:
        w.append(f"only {data.n_runs} runs: exponents in N rest on too few sizes")
    for label, arr in (("N", data.N), ("C", data.C)):
        dec = float(np.log10(arr.max() / arr.min()))
        if dec < 1.0:
            w.append(f"{label} spans {dec:.2f} decades (< 1): extrapolation is unreliable")
    for key in ("gamma_c", "gamma_h", "alpha", "beta", "a", "b", "gamma_c_derived"):
        q = out.get(key)
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
        if q and np.isfinite(q["ci_low"]) and not (q["ci_low"] <= q["value"] <= q["ci_high"]):
            w.append(f"{key}: the estimate {q['value']:.3g} lies outside its own bootstrap interval "
                     f"[{q['ci_low']:.3g}, {q['ci_high']:.3g}]: resampled runs disagree with the full fit")
    if out["frontier_c"]["selected"] == "free":
        w.append("compute frontier: the data support a non-zero L_inf (AICc); gamma_c assumes L_inf = 0")
    diverged = [s for s in data.run_status if s == "diverged"]
    if diverged:
        w.append(f"{len(diverged)} diverged run(s): only checkpoints before divergence are used")
    return w


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
