"""Fit every law of one group on all its checkpoints, and the 95 % intervals of every quantity.

Intervals (``docs/laws.md``, "Intervals"): by default a **residual bootstrap** from the fitted sum law.
Each replicate keeps the design (every checkpoint's N, D, C, H) and draws new losses
``L* = L̂(N, D)·exp(ε*)``: ε* are the within-run log residuals of the full fit resampled with replacement
(scaled to their degrees of freedom), plus a run offset ~ N(0, τ̂²) when the residuals show run-level
scatter beyond what the checkpoint noise explains (method-of-moments variance component). Every law is
refitted to every replicate -- the sum law, and the frontiers on the replicate's own lower envelope -- so
the frontier can move down as well as up (resampling whole runs can only remove corners, which made those
intervals one-sided). The bootstrap world's truth of each quantity is its value for the noise-free fitted
law on the same design (for γ_c: the L = F·C^-γ fit to the envelope of L̂ over the data's budgets).
Frontier quantities get the basic interval θ̂ − quantiles of (θ* − θ₀) (:func:`basic_quantity`): their
estimator's error is mostly a shift (the envelope of noisy curves sits below the noise-free one), which
the basic interval removes. Sum-law quantities get the bias-corrected percentile interval
(:func:`bc_quantity`): α, β and what derives from them have skewed distributions, which percentile
intervals follow. Positive scale factors (A, B, F, G, N*, D*) use ratios; bounds are clipped to the
quantity's range. Coverage is measured by ``tests/laws/test_coverage.py``.

When the sum law is not fitted (too few distinct (N, D)), or with ``intervals="runs"``, the intervals are
the former percentile bootstrap over whole runs (a replicate with run multiplicities (n_boot, n_runs)).

Every reported quantity Q is ``{"value", "ci_low", "ci_high", "identified"}``; what the data do not
identify (:mod:`.checks`) keeps its value and interval for diagnostics with ``identified: false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from . import allocation, checks, frontier, sumlaw, throughput
from .io import GroupData
from .solvers import CHUNK


def quantity(value: float, samples: np.ndarray) -> dict:
    """Q = value with its percentile 95 % interval over the finite ``samples`` (the run bootstrap)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    lo, hi = (np.percentile(s, [2.5, 97.5]) if s.size else (np.nan, np.nan))
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "identified": True}


def basic_quantity(value: float, samples: np.ndarray, centre: float, *, log: bool = False,
                   lower: float = -np.inf, upper: float = np.inf) -> dict:
    """Q = value with the basic (pivotal) 95 % interval [θ̂ − q97.5(θ* − θ₀), θ̂ − q2.5(θ* − θ₀)].

    ``centre`` θ₀ is the quantity in the bootstrap world; ``log`` uses ratios θ*/θ₀ (positive scale
    factors). Bounds are clipped to [lower, upper].
    """
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    v, c = float(value), float(centre)
    lo = hi = np.nan
    if s.size and np.isfinite(v) and np.isfinite(c):
        if log and v > 0 and c > 0 and np.all(s > 0):
            q_lo, q_hi = np.percentile(np.log(s / c), [2.5, 97.5])
            lo, hi = v * np.exp(-q_hi), v * np.exp(-q_lo)
        else:
            q_lo, q_hi = np.percentile(s - c, [2.5, 97.5])
            lo, hi = v - q_hi, v - q_lo
        lo, hi = float(np.clip(lo, lower, upper)), float(np.clip(hi, lower, upper))
    return {"value": v, "ci_low": float(lo), "ci_high": float(hi), "identified": True}


def bc_quantity(value: float, samples: np.ndarray, centre: float, *, log: bool = False,
                lower: float = -np.inf, upper: float = np.inf) -> dict:
    """Q = value with the bias-corrected (BC) percentile 95 % interval of the residual bootstrap.

    ``centre`` θ₀ is the quantity in the bootstrap world (the law the replicates were simulated from). The
    replicates are first moved so that this truth sits at the estimate (θ* + θ̂ − θ₀; ratios θ*·θ̂/θ₀ with
    ``log`` for positive scale factors), then Efron's bias correction z₀ = Φ⁻¹(share of θ* below θ₀) picks
    the percentiles Φ(2z₀ ∓ 1.96): the interval follows a skewed sampling distribution (percentile) and
    corrects the estimator's median bias (the envelope of noisy curves sits below the noise-free one).
    Bounds are clipped to [lower, upper].
    """
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    v, c = float(value), float(centre)
    lo = hi = np.nan
    if s.size and np.isfinite(v) and np.isfinite(c):
        share = (np.count_nonzero(s < c) + 0.5 * np.count_nonzero(s == c)) / s.size
        z0 = ndtri(np.clip(share, 0.5 / s.size, 1 - 0.5 / s.size))
        p_lo, p_hi = ndtr(2 * z0 - 1.959963984540054), ndtr(2 * z0 + 1.959963984540054)
        q_lo, q_hi = np.percentile(s, [100 * p_lo, 100 * p_hi])
        if log and v > 0 and c > 0 and q_lo > 0:
            lo, hi = q_lo * v / c, q_hi * v / c
        else:
            lo, hi = q_lo + v - c, q_hi + v - c
        lo, hi = float(np.clip(lo, lower, upper)), float(np.clip(hi, lower, upper))
    return {"value": v, "ci_low": float(lo), "ci_high": float(hi), "identified": True}


#: How each kind of quantity's interval is formed: (log scale, lower, upper, kind). Frontier quantities use
#: the basic interval (their estimator's error is mostly a shift: the envelope of noisy curves sits below
#: the noise-free one); sum-law quantities the BC percentile interval (their distribution is skewed).
_FRONTIER_SCALE = {"gamma": (False, -np.inf, np.inf, "basic"), "F": (True, 0.0, np.inf, "basic"),
                   "L_inf": (False, 0.0, np.inf, "basic")}
_SUMLAW_SCALE = {"alpha": (False, *sumlaw.BOUNDS, "bc"), "beta": (False, *sumlaw.BOUNDS, "bc"),
                 "L_inf": (False, 0.0, np.inf, "bc"), "A": (True, 0.0, np.inf, "bc"), "B": (True, 0.0, np.inf, "bc"),
                 "a": (False, 0.0, 1.0, "bc"), "b": (False, 0.0, 1.0, "bc"), "gamma_c_derived": (False, 0.0, np.inf, "bc"),
                 "G": (True, 0.0, np.inf, "bc"), "N_star_at_C_ref": (True, 0.0, np.inf, "bc"),
                 "D_star_at_C_ref": (True, 0.0, np.inf, "bc")}


def _q(value, samples, centre, scale) -> dict:
    """Percentile Q (run bootstrap: ``centre`` None), else basic or BC Q (residual bootstrap)."""
    if centre is None:
        return quantity(value, samples)
    log, lower, upper, kind = scale
    fn = basic_quantity if kind == "basic" else bc_quantity
    return fn(value, samples, centre, log=log, lower=lower, upper=upper)


@dataclass
class FrontierResult:
    """Full-data fits (B = 1) and bootstrap fits of one frontier (``x`` = C or H).

    ``centre_fixed`` / ``centre_free``: the fits to the envelope of the noise-free fitted sum law on the
    same budgets (the bootstrap world's truth; None for the run bootstrap).
    """

    x: np.ndarray
    loss: np.ndarray
    fixed: frontier.FrontierFit
    free: frontier.FrontierFit
    free_selected: bool
    boot_fixed: frontier.FrontierFit | None = None
    boot_free: frontier.FrontierFit | None = None
    centre_fixed: frontier.FrontierFit | None = None
    centre_free: frontier.FrontierFit | None = None

    def summary(self, missing: dict[str, str] | None = None, prefix: str = "frontier_c") -> dict:
        """JSON entry; a law listed in ``missing`` (``"<prefix>.fixed"``, ...) gets ``identified: false``."""
        missing = missing or {}
        out = {"n_corners": int(self.fixed.n[0]), "selected": "free" if self.free_selected else "fixed",
               "criterion": f"AICc on log residuals; free L_inf needs an AICc drop > {frontier.AICC_MARGIN:g}"}
        for name in ("fixed", "free"):
            fit, boot = getattr(self, name), getattr(self, f"boot_{name}")
            centre = getattr(self, f"centre_{name}")
            entry = {"aicc": _finite(fit.aicc[0]), "rss_log": _finite(fit.rss[0])}
            need = checks.FRONTIER_MIN_CORNERS[name]
            for key in ("gamma", "F", "L_inf"):
                samples = np.where(boot.n >= need, getattr(boot, key), np.nan) if boot is not None else np.array([])
                entry[key] = _q(getattr(fit, key)[0], samples,
                                None if centre is None else getattr(centre, key)[0], _FRONTIER_SCALE[key])
                entry[key]["identified"] = f"{prefix}.{name}" not in missing
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


class EnvelopeFitter:
    """Both frontier laws fitted to the lower envelopes of many loss vectors on the same budgets ``x``.

    Points are sorted by budget once; points sharing a budget count as one (their lowest loss). A point is
    a corner when its loss is below every loss at a smaller budget. Work is done on blocks of at most
    :data:`~.solvers.CHUNK` values per array.
    """

    def __init__(self, x: np.ndarray):
        self.order = np.argsort(x, kind="stable")
        xs = x[self.order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(xs) > 0])
        self.ux = xs[self.starts]
        self.x0 = float(np.exp(np.mean(np.log(x))))

    def __call__(self, loss: np.ndarray) -> tuple[frontier.FrontierFit, frontier.FrontierFit]:
        """``loss`` (b, n) in the order of ``x``; returns the (fixed, free) fits of the b envelopes."""
        gm = np.minimum.reduceat(loss[:, self.order], self.starts, axis=1)
        prev = np.minimum.accumulate(np.concatenate([np.full((gm.shape[0], 1), np.inf), gm[:, :-1]], axis=1),
                                     axis=1)
        mask = gm < prev
        m = max(int(mask.sum(1).max()), 1)
        pick = np.argsort(~mask, axis=1, kind="stable")[:, :m]
        bx, bl = self.ux[pick], np.take_along_axis(gm, pick, axis=1)
        bw = np.take_along_axis(mask, pick, axis=1).astype(float)
        fixed, free = [], []
        sub = max(1, CHUNK // (m * frontier.GAMMA_GRID.size))
        for j in range(0, bx.shape[0], sub):
            part = slice(j, j + sub)
            fixed.append(frontier.fit_fixed(bx[part], bl[part], bw[part]))
            free.append(frontier.fit_free(bx[part], bl[part], bw[part], x0=self.x0))
        return frontier.concat(fixed), frontier.concat(free)


def noise_model(data: GroupData, mu: np.ndarray) -> tuple[np.ndarray, float]:
    """(pooled within-run log residuals scaled to their degrees of freedom, run-offset variance τ̂²).

    Residuals r = log L − log L̂ split into run means r̄_k and within-run deviations e. The within-run
    variance is s² = Σe²/(n − R − 2) (R run means and the two parameters B, β that shape a run's curve);
    the run offsets' variance component is τ̂² = max(0, var(r̄) − mean(s²/m_k)) (m_k checkpoints in run k):
    the scatter of run means beyond what checkpoint noise alone gives.
    """
    r = np.log(data.loss) - np.log(mu)
    R, n = data.n_runs, data.n_points
    m = np.bincount(data.run, minlength=R).astype(float)
    mean = np.bincount(data.run, weights=r, minlength=R) / np.maximum(m, 1)
    e = r - mean[data.run]
    dof = max(n - R - 2, 1)
    s2 = float(np.sum(e * e)) / dof
    e = (e - e.mean()) * np.sqrt(n / dof)
    tau2 = max(0.0, float(np.var(mean, ddof=1)) - float(np.mean(s2 / np.maximum(m, 1)))) if R >= 2 else 0.0
    return e, tau2


@dataclass
class Replicates:
    """Residual-bootstrap replicates: sum-law refits and frontier refits (``"c"``, ``"h"``) with their centres."""

    sumlaw: sumlaw.SumLawFit
    front: dict
    tau2: float = 0.0


def residual_bootstrap(data: GroupData, fit: sumlaw.SumLawFit, n_boot: int, seed: int, delta: float,
                       h_keep: np.ndarray | None) -> Replicates:
    """``n_boot`` replicates simulated from ``fit`` (see the module docstring); memory bounded by blocks."""
    mu = fit.predict(data.N, data.D)[0]
    e, tau2 = noise_model(data, mu)
    pick_rng, run_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    refit = sumlaw.ResidualRefitter(data.N, data.D, fit, delta=delta)
    fitters = {"c": EnvelopeFitter(data.C)}
    if h_keep is not None:
        fitters["h"] = EnvelopeFitter(data.H[h_keep])
    n = data.n_points
    sums, fronts = [], {k: [] for k in fitters}
    step = max(1, CHUNK // n)
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = np.minimum((pick_rng.random((b, n)) * n).astype(np.intp), n - 1)
        eps = e[idx]
        offsets = run_rng.standard_normal((b, data.n_runs))
        if tau2 > 0:
            eps += np.sqrt(tau2) * offsets[:, data.run]
        loss = mu * np.exp(eps)
        sums.append(refit(loss))
        for key, fitter in fitters.items():
            fronts[key].append(fitter(loss if key == "c" else loss[:, h_keep]))
    boot = sumlaw.SumLawFit(**{k: np.concatenate([getattr(f, k) for f in sums])
                               for k in ("L_inf", "A", "B", "alpha", "beta", "objective")})
    front = {}
    for key, fitter in fitters.items():
        base = mu if key == "c" else mu[h_keep]
        cf, cfree = fitter(base[None, :])
        front[key] = (frontier.concat([f for f, _ in fronts[key]]), frontier.concat([f for _, f in fronts[key]]),
                      cf, cfree)
    return Replicates(sumlaw=boot, front=front, tau2=tau2)


@dataclass
class GroupAnalysis:
    """Everything fitted for one group; ``summary`` is its JSON entry (public key names, see docs/laws.md).

    ``fit`` holds NaN and ``boot`` is None when the sum law is not fitted (see :mod:`.checks`). ``counts``
    holds the run multiplicities of the run bootstrap (None for the residual bootstrap).
    """

    data: GroupData
    fit: sumlaw.SumLawFit
    boot: sumlaw.SumLawFit | None
    front_c: FrontierResult
    front_h: FrontierResult | None
    summary: dict = field(default_factory=dict)
    counts: np.ndarray | None = None
    ident: checks.Identification | None = None
    method: str = "runs"


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


INTERVALS = ("residual", "runs")


def analyse_group(data: GroupData, *, n_boot: int = 1000, seed: int = 0, delta: float = 1e-3,
                  holdout: float = 0.2, intervals: str = "residual") -> GroupAnalysis:
    """Frontiers (C, and H when known), sum law, allocation, back-test and 95 % intervals of one group.

    ``intervals``: ``"residual"`` (default; falls back to ``"runs"`` when the sum law is not fitted) or
    ``"runs"`` (percentile bootstrap over whole runs). Raises DataError when nothing can be fitted
    (:func:`.checks.require_something`).
    """
    if intervals not in INTERVALS:
        raise ValueError(f"intervals must be one of {INTERVALS}, got {intervals!r}")
    ident = checks.identify(data.N, data.D)
    fit = sumlaw.fit(data.N, data.D, data.loss, delta=delta) if ident.sumlaw_fitted else _nan_fit()
    method = "residual" if intervals == "residual" and ident.sumlaw_fitted and n_boot > 0 else "runs"
    counts = run_counts(data.n_runs, n_boot, seed).astype(float) if n_boot > 0 and method == "runs" else None
    front_c = _frontier(data.C, data.loss, data.run, counts)
    checks.check_frontier(ident, int(front_c.fixed.n[0]), "frontier_c", "compute")
    checks.require_something(ident, data.source, data.name, data.n_points)
    h_keep = None
    if data.H is not None and np.count_nonzero(data.H > 0) >= 3:
        h_keep = data.H > 0
    boot = None
    if counts is not None and ident.sumlaw_fitted:
        boot = sumlaw.fit_batched(data.N, data.D, data.loss, counts, fit, cell=data.run, delta=delta)
    front_h = None
    if h_keep is not None:
        front_h = _frontier(data.H[h_keep], data.loss[h_keep], data.run[h_keep], counts)
        checks.check_frontier(ident, int(front_h.fixed.n[0]), "frontier_h", "time")
    if method == "residual":
        reps = residual_bootstrap(data, fit, n_boot, seed, delta, h_keep)
        boot = reps.sumlaw
        for key, fr in (("c", front_c), ("h", front_h)):
            if fr is not None:
                fr.boot_fixed, fr.boot_free, fr.centre_fixed, fr.centre_free = reps.front[key]
    res = GroupAnalysis(data=data, fit=fit, boot=boot, front_c=front_c, front_h=front_h, counts=counts,
                        ident=ident, method=method if n_boot > 0 else "none")
    res.summary = _summarise(res, holdout)
    return res


def boot_samples(res: GroupAnalysis) -> dict[str, np.ndarray]:
    """Replicate values of the sum-law parameters; NaN where a replicate's runs do not identify them."""
    boot, data = res.boot, res.data
    if boot is None:
        return {k: np.array([]) for k in ("alpha", "beta", "L_inf", "A", "B")}
    if res.counts is None:            # residual bootstrap: every replicate has the data's design
        return {k: getattr(boot, k) for k in ("alpha", "beta", "L_inf", "A", "B")}
    has_n = checks.replicate_spread(data.N, data.run, data.n_runs, res.counts)
    has_d = checks.replicate_spread(data.D, data.run, data.n_runs, res.counts)
    ok = {"alpha": has_n, "A": has_n, "beta": has_d, "B": has_d, "L_inf": has_n & has_d}
    return {k: np.where(m, getattr(boot, k), np.nan) for k, m in ok.items()}


#: Most sum-law replicates a summary keeps (``"replicates"``, read by ``symscale plan``): the first ones drawn.
SUMMARY_REPLICATES = 1000


def _summarise(res: GroupAnalysis, holdout: float) -> dict:
    data, fit, boot = res.data, res.fit, res.boot
    residual = res.method == "residual"
    empty = np.array([])
    reps = boot_samples(res)
    b = reps.__getitem__
    centre = (lambda v: v) if residual else (lambda v: None)
    missing = res.ident.missing
    out: dict = {}
    fc = res.front_c.summary(missing, "frontier_c")
    fh = res.front_h.summary(missing, "frontier_h") if res.front_h is not None else None
    out["gamma_c"] = fc["fixed"]["gamma"]
    out["gamma_h"] = fh["fixed"]["gamma"] if fh is not None else None
    for key in ("alpha", "beta", "L_inf", "A", "B"):
        v = getattr(fit, key)[0]
        out[key] = _q(v, b(key), centre(v), _SUMLAW_SCALE[key])
    if fit.flat is not None:
        checks.check_sumlaw_exponents(res.ident, fit, out, {k: b(k) for k in ("alpha", "beta")})
    full = allocation.exponents(fit.alpha, fit.beta)
    derived = allocation.exponents(b("alpha"), b("beta")) if boot is not None else {k: empty for k in full}
    for key in ("a", "b", "gamma_c_derived"):
        out[key] = _q(full[key][0], derived[key], centre(full[key][0]), _SUMLAW_SCALE[key])
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
    with np.errstate(divide="ignore"):  # a replicate with A = 0 puts no compute into N: D* is infinite
        d_full, d_boot = k_max / n_full, k_max / n_boot
    sc = _SUMLAW_SCALE
    out["allocation"] = {
        "formula": "N*(C) = G (C/(3 kappa))^a, D*(C) = (C/(3 kappa)) / N*(C)",
        "kappa": data.kappa, "G": _q(g_full[0], g_boot, centre(g_full[0]), sc["G"]), "C_ref": c_max,
        "N_star_at_C_ref": _q(n_full, n_boot, centre(n_full), sc["N_star_at_C_ref"]),
        "D_star_at_C_ref": _q(d_full, d_boot, centre(d_full), sc["D_star_at_C_ref"])}
    for key in checks.SUMLAW_KEYS:
        if key in missing:
            (out["allocation"] if key in out["allocation"] else out)[key]["identified"] = False
    out["interval_method"] = res.method
    out["sumlaw_objective"] = float(fit.objective[0])
    out["n_bootstrap"] = 0 if res.front_c.boot_fixed is None else int(res.front_c.boot_fixed.gamma.size)
    out["runs"] = run_inventory(data)
    # the planner's inputs: sum-law replicates (6 significant digits; null without a fitted law or bootstrap)
    # and the measured throughput (null without wall time)
    out["replicates"] = ({k: [float(f"{v:.6g}") for v in b(k)[:SUMMARY_REPLICATES]] for k in ("L_inf", "A", "B",
                          "alpha", "beta")} if boot is not None and res.ident.sumlaw_fitted else None)
    out["throughput"] = throughput.fit_throughput(data)
    out["warnings"] = checks.warnings(out, data, res.ident)
    return out


def run_inventory(data: GroupData) -> list[dict]:
    """One row per run of ``data`` (the ``"runs"`` entry of a group's summary): name, status, N, the number
    of its checkpoints, its largest D and C, its best loss."""
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
            holdout: float = 0.2, jobs: int = 1, intervals: str = "residual") -> dict[str, GroupAnalysis]:
    """:func:`analyse_group` for every group (seed offset by the group's position in name order).

    ``jobs > 1`` fits groups in that many worker processes; results are identical to ``jobs=1``.
    """
    items = sorted(groups.items())
    kwargs = [dict(n_boot=n_boot, seed=seed + i, delta=delta, holdout=holdout, intervals=intervals) for i in range(len(items))]
    if jobs > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(items))) as pool:
            futures = [pool.submit(analyse_group, g, **kw) for (_, g), kw in zip(items, kwargs)]
            return {name: fut.result() for (name, _), fut in zip(items, futures)}
    return {name: analyse_group(g, **kw) for (name, g), kw in zip(items, kwargs)}
