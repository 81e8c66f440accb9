"""Compute frontiers: the lower envelope of loss against a budget x (FLOPs C or wall time H) and its power law.

The frontier is the set of Pareto corners: a checkpoint is on it when its loss is strictly lower than that of
every checkpoint with a smaller (or equal) budget, over all runs. Two laws are fitted to these corners by least
squares on log residuals:

- ``fixed``: L = F·x^(−γ) (L∞ = 0, the study's choice) -- closed-form weighted regression in log space;
- ``free``:  L = L∞ + F·x^(−γ), L∞ ≥ 0 -- grid over γ with exact NNLS for (L∞, F), then Gauss-Newton.

Model choice uses the small-sample Akaike criterion on the corners (Gaussian log residuals; parameters
counted with σ): the free law is selected only when it lowers AICc by more than 2, i.e. when the data give
clear support for a floor (Burnham & Anderson's rule; below 2 both are plausible and the simpler one is kept).
The held-out back-test errors of both laws are reported next to it. Every function is batched over B
replicates: a (B, n) weight matrix marks which checkpoints each replicate contains. Bootstrap replicates
(:func:`fit_replicates`) only look at the corners of each run's own envelope (:func:`run_corners`; exact)
and are processed in blocks, so no (replicates × all checkpoints) array is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .solvers import CHUNK, nnls_small, power_of_two_scale, refine

GAMMA_GRID = np.linspace(0.005, 2.0, 48)
AICC_MARGIN = 2.0


def envelope_mask(x: np.ndarray, loss: np.ndarray, include: np.ndarray | None = None) -> np.ndarray:
    """Pareto corners of (x, loss) per replicate.

    Args:
        x, loss: (n,) budgets and losses. include: (B, n) boolean, which checkpoints each replicate contains
            (default: one replicate with all of them).

    Returns:
        (B, n) boolean mask in the original point order.
    """
    if include is None:
        include = np.ones((1, x.shape[0]), dtype=bool)
    order = np.lexsort((loss, x))
    lm = np.where(include[:, order], loss[order], np.inf)
    prev = np.minimum.accumulate(np.concatenate([np.full((lm.shape[0], 1), np.inf), lm[:, :-1]], axis=1),
                                 axis=1)
    on_sorted = include[:, order] & (lm < prev)
    out = np.zeros_like(on_sorted)
    out[:, order] = on_sorted
    return out


@dataclass
class FrontierFit:
    """Batched fit results (arrays of shape (B,)). ``F`` and ``L_inf`` are in the units of the data."""

    gamma: np.ndarray
    F: np.ndarray
    L_inf: np.ndarray
    rss: np.ndarray
    n: np.ndarray
    k: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, m) predictions at budgets ``x`` (m,)."""
        return self.L_inf[:, None] + self.F[:, None] * np.power(x[None, :], -self.gamma[:, None])

    @property
    def aicc(self) -> np.ndarray:
        """Small-sample AIC of Gaussian log residuals (k counts σ); NaN when n ≤ k + 1."""
        n = self.n.astype(float)
        k = self.k
        with np.errstate(divide="ignore", invalid="ignore"):
            val = n * np.log(np.maximum(self.rss, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
        return np.where(n > k + 1, val, np.nan)


def fit_fixed(x: np.ndarray, loss: np.ndarray, weights: np.ndarray) -> FrontierFit:
    """L = F·x^(−γ) by weighted least squares of log L on log x.

    ``x``, ``loss``: (n,) shared by all replicates or (B, n) per replicate; ``weights`` (B, n), 0 = unused.
    """
    s = np.broadcast_to(np.log(x), weights.shape)
    y = np.broadcast_to(np.log(loss), weights.shape)
    sw = np.maximum(weights.sum(1), 1e-300)
    ms = np.sum(weights * s, axis=1) / sw
    my = np.sum(weights * y, axis=1) / sw
    ds = s - ms[:, None]
    sxx = np.sum(weights * ds * ds, axis=1)
    sxy = np.sum(weights * ds * (y - my[:, None]), axis=1)
    slope = np.where(sxx > 0, sxy / np.maximum(sxx, 1e-300), 0.0)
    intercept = my - slope * ms
    res = y - intercept[:, None] - slope[:, None] * s
    rss = np.sum(weights * res * res, axis=1)
    return FrontierFit(gamma=-slope, F=np.exp(intercept), L_inf=np.zeros_like(slope), rss=rss,
                       n=np.count_nonzero(weights, axis=1), k=3)


def _free_model(s: np.ndarray):
    def model(theta: np.ndarray, jac: bool = True, rows: np.ndarray | None = None):
        sr = s[rows] if rows is not None else s
        e = np.exp(-theta[:, 2:3] * sr)
        pred = theta[:, 0:1] + theta[:, 1:2] * e
        if not jac:
            return pred
        J = np.stack([np.ones_like(e), e, -theta[:, 1:2] * sr * e], axis=-1)
        return pred, J
    return model


def fit_free(x: np.ndarray, loss: np.ndarray, weights: np.ndarray, x0: float | None = None) -> FrontierFit:
    """L = L∞ + F·x^(−γ), L∞, F ≥ 0, least squares on log residuals; shapes as in :func:`fit_fixed`.

    ``x0`` scales the budgets internally (x/x0; default: the geometric mean of ``x``); any value gives the
    same optimum up to rounding. Points with weight 0 in every replicate are dropped before fitting.
    """
    x = np.broadcast_to(x, weights.shape)
    loss = np.broadcast_to(loss, weights.shape)
    if x0 is None:
        x0 = np.exp(np.mean(np.log(x)))
    floor_f = 1e-12 * loss.max()   # smallest starting F (taken before unused points are dropped)
    used = np.any(weights > 0, axis=0)
    if not used.all():
        x, loss, weights = x[:, used], loss[:, used], weights[:, used]
    s = np.log(x / x0)
    e = np.exp(-GAMMA_GRID[None, None, :] * s[:, :, None])           # (B, n, G)
    # relative residuals ≈ log residuals; weights scaled by 2^(-2k) exactly (see solvers.power_of_two_scale)
    omega = weights / (loss ** 2 * power_of_two_scale(loss) ** -2)
    oy = omega * loss
    G = np.empty((weights.shape[0], GAMMA_GRID.size, 2, 2))
    G[..., 0, 0] = omega.sum(1)[:, None]
    G[..., 0, 1] = G[..., 1, 0] = np.matmul(omega[:, None, :], e)[:, 0]
    G[..., 1, 1] = np.matmul(omega[:, None, :], e * e)[:, 0]
    h = np.stack([np.broadcast_to(oy.sum(1)[:, None], G.shape[:2]), np.matmul(oy[:, None, :], e)[:, 0]], axis=-1)
    yy = np.broadcast_to((oy * loss).sum(1)[:, None], G.shape[:2])
    coef, obj = nnls_small(G, h, yy)
    best = np.argmin(obj, axis=1)
    rows = np.arange(weights.shape[0])
    theta0 = np.column_stack([coef[rows, best, 0], coef[rows, best, 1], GAMMA_GRID[best]])
    theta0[:, 1] = np.maximum(theta0[:, 1], floor_f)
    lower = np.array([0.0, 0.0, 1e-4])
    upper = np.array([np.inf, np.inf, 5.0])
    theta, obj = refine(_free_model(s), theta0, weights, np.log(loss), lower, upper, None)
    return FrontierFit(gamma=theta[:, 2], F=theta[:, 1] * x0 ** theta[:, 2], L_inf=theta[:, 0], rss=2 * obj,
                       n=np.count_nonzero(weights, axis=1), k=4)


def compact(x: np.ndarray, loss: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather each replicate's selected points into (B, m) arrays (m = largest count; padding has weight 0)."""
    m = max(int(mask.sum(1).max()), 1)
    order = np.argsort(~mask, axis=1, kind="stable")[:, :m]
    return x[order], loss[order], np.take_along_axis(mask, order, axis=1).astype(float)


def run_corners(x: np.ndarray, loss: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Ascending indices of the points that are corners of their own run's envelope.

    Only these can be corners of an envelope over whole runs: a point beaten within its run (by a point
    of that run with smaller or equal budget and lower or equal loss, earlier in the (x, loss) order) is
    beaten whenever its run is included. Envelopes of replicates computed on these points alone are
    therefore identical to envelopes over all points.
    """
    keep = np.zeros(x.size, dtype=bool)
    order = np.argsort(run, kind="stable")
    bounds = np.flatnonzero(np.diff(run[order])) + 1
    for idx in np.split(order, bounds):
        keep[idx[envelope_mask(x[idx], loss[idx])[0]]] = True
    return np.flatnonzero(keep)


def concat(fits: list[FrontierFit]) -> FrontierFit:
    """One FrontierFit holding the replicates of ``fits`` in order (same law)."""
    return FrontierFit(**{k: np.concatenate([getattr(f, k) for f in fits])
                          for k in ("gamma", "F", "L_inf", "rss", "n")}, k=fits[0].k)


def fit_replicates(x: np.ndarray, loss: np.ndarray, run: np.ndarray, counts: np.ndarray,
                   x0: float) -> tuple[FrontierFit, FrontierFit]:
    """Both laws fitted to the envelope of every replicate; replicate b contains run r ``counts[b, r]`` times.

    Corners count once whatever the multiplicity of their run. Work is done on the candidate corners of
    :func:`run_corners` and on blocks of replicates of at most :data:`~.solvers.CHUNK` values per array, so
    memory does not grow with replicates × points.
    """
    cand = run_corners(x, loss, run)
    xc, lc, rc = x[cand], loss[cand], run[cand]
    fixed, free = [], []
    step = max(1, CHUNK // max(cand.size, 1))
    for lo in range(0, counts.shape[0], step):
        mask = envelope_mask(xc, lc, counts[lo:lo + step][:, rc] > 0)
        bx, bl, bw = compact(xc, lc, mask)
        sub = max(1, CHUNK // (bx.shape[1] * GAMMA_GRID.size))
        for j in range(0, bx.shape[0], sub):
            part = slice(j, j + sub)
            fixed.append(fit_fixed(bx[part], bl[part], bw[part]))
            free.append(fit_free(bx[part], bl[part], bw[part], x0=x0))
    return concat(fixed), concat(free)


def select(fixed: FrontierFit, free: FrontierFit) -> np.ndarray:
    """``True`` where the free-L∞ law is selected (AICc lower by more than :data:`AICC_MARGIN`)."""
    a, b = fixed.aicc, free.aicc
    return np.isfinite(a) & np.isfinite(b) & (b < a - AICC_MARGIN)


def frontier_points(x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto corners (x, loss), sorted by x."""
    m = envelope_mask(x, loss)[0]
    order = np.argsort(x[m])
    return x[m][order], loss[m][order]


def backtest(x: np.ndarray, loss: np.ndarray, holdout: float = 0.2) -> dict:
    """Fit on checkpoints with log x below ``1 − holdout`` of the log-x range; score the held-out frontier.

    The held-out frontier is the set of corners (over all checkpoints) above the cut, plus the frontier value
    at the largest budget; the score is the mean relative error |pred/actual − 1| of each law.
    """
    lx = np.log(x)
    cut = lx.min() + (1.0 - holdout) * (lx.max() - lx.min())
    train = lx <= cut
    result = {"cut": float(np.exp(cut)), "holdout_fraction": holdout}
    env = envelope_mask(x[train], loss[train])
    on_all = envelope_mask(x, loss)[0]
    held = on_all & ~train
    hx, hy = list(x[held]), list(loss[held])
    top = int(np.argmax(x))
    if not held[top]:
        hx.append(float(x[top]))
        hy.append(float(loss[lx <= lx[top]].min()))
    hx, hy = np.array(hx), np.array(hy)
    result["n_heldout"] = int(hx.size)
    for name, fit in (("fixed", fit_fixed), ("free", fit_free)):
        if env.sum() < 3:
            result[name] = None
            continue
        res = fit(x[train], loss[train], env.astype(float))
        pred = res.predict(hx)[0]
        result[name] = float(np.mean(np.abs(pred / hy - 1.0)))
    return result
