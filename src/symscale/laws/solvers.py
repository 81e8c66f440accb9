"""Small batched solvers shared by the frontier and sum-law fits.

Two pieces, both vectorised over a leading batch axis (grid points and/or bootstrap replicates):

- :func:`nnls_small` -- exact non-negative least squares for 2 or 3 unknowns from the normal equations,
  by enumerating active sets (the NNLS optimum is the least-squares solution on its own support, so the best
  feasible support solution *is* the optimum);
- :func:`refine` -- a projected, damped Gauss-Newton (Levenberg-Marquardt) minimiser of a weighted sum of
  Huber (or squared) losses on log residuals, with iteratively re-weighted Gauss-Newton curvature for the
  Huber part. It monotonically decreases each replicate's objective (steps are only accepted on decrease).

:func:`huber` is the objective both use, so scipy's L-BFGS-B and :func:`refine` minimise the same thing.
:data:`CHUNK` bounds the size of the temporary arrays of batched work; :func:`power_of_two_scale` keeps
least-squares weights of very small or very large losses in range without changing any result.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np

ModelFn = Callable[..., "np.ndarray | tuple[np.ndarray, np.ndarray]"]

_TINY = 1e-300

#: Largest number of (candidate or replicate, point) pairs evaluated at once: bounds every temporary array
#: (1 MiB of float64 each; one replicate at least), so memory stays a constant per checkpoint whatever
#: the replicate count. Blocks this small also stay in cache and are reused by the allocator.
CHUNK = 1 << 17


def power_of_two_scale(values: np.ndarray) -> float:
    """2^k nearest to the geometric mean of ``values`` (> 0).

    Least-squares weights 1/L² are multiplied by 2^(−2k): exactly, since scaling by a power of two is
    exact in floating point, so the NNLS solutions do not change by a single bit, while normal equations
    built from very small or very large losses (down to 1e-30, up to 1e30) stay far from overflow.
    """
    return float(2.0 ** np.round(np.mean(np.log2(values))))


def huber(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Elementwise Huber loss of residuals ``r`` (``0.5 r^2`` inside ``delta``, linear outside).

    ``delta=None`` gives the plain squared loss ``0.5 r^2``.
    """
    if delta is None:
        return 0.5 * r * r
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_psi(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Derivative of :func:`huber` with respect to ``r``."""
    if delta is None:
        return r
    return np.clip(r, -delta, delta)


def solve_small(G: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Batched solve of (..., k, k) symmetric systems for k <= 3 by the adjugate (no LAPACK call overhead)."""
    k = G.shape[-1]
    if k == 1:
        return h / G[..., 0]
    if k == 2:
        a, b, d = G[..., 0, 0], G[..., 0, 1], G[..., 1, 1]
        det = a * d - b * b
        return np.stack([d * h[..., 0] - b * h[..., 1], a * h[..., 1] - b * h[..., 0]], axis=-1) / det[..., None]
    if k == 3:
        a, b, c = G[..., 0, 0], G[..., 0, 1], G[..., 0, 2]
        d, e, f = G[..., 1, 1], G[..., 1, 2], G[..., 2, 2]
        A, B, C = d * f - e * e, c * e - b * f, b * e - c * d
        D, E, F = a * f - c * c, b * c - a * e, a * d - b * b
        det = a * A + b * B + c * C
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        return np.stack([A * x + B * y + C * z, B * x + D * y + E * z, C * x + E * y + F * z], axis=-1) / det[..., None]
    return np.linalg.solve(G, h[..., None])[..., 0]


def nnls_small(G: np.ndarray, h: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched NNLS from normal equations: minimise ``yy - 2 θ·h + θᵀ G θ`` over ``θ >= 0``.

    Args:
        G: (..., k, k) Gram matrices ``Xᵀ W X`` (k = 2 or 3, small).
        h: (..., k) ``Xᵀ W y``.
        yy: (...) ``yᵀ W y``.

    Returns:
        ``(theta, obj)``: (..., k) optimal coefficients and (...) the weighted residual sum of squares.
    """
    k = G.shape[-1]
    best = np.zeros(h.shape)
    best_obj = np.array(yy, dtype=float, copy=True)
    for size in range(1, k + 1):
        for support in combinations(range(k), size):
            idx = list(support)
            gs = G[..., idx, :][..., :, idx]
            hs = h[..., idx]
            scale = np.trace(gs, axis1=-2, axis2=-1)[..., None, None] / size
            ridge = (1e-13 * scale + _TINY) * np.eye(size)
            with np.errstate(divide="ignore", invalid="ignore"):
                sol = solve_small(gs + ridge, hs)
            sol = np.where(np.isfinite(sol), sol, -1.0)   # a singular support is never selected
            obj = yy - np.sum(sol * hs, axis=-1)
            ok = np.all(sol >= 0.0, axis=-1) & (obj < best_obj)
            best_obj = np.where(ok, obj, best_obj)
            full = np.zeros(h.shape)
            full[..., idx] = sol
            best = np.where(ok[..., None], full, best)
    return best, np.maximum(best_obj, 0.0)


def objective(model: ModelFn, theta: np.ndarray, w: np.ndarray, logy: np.ndarray,
              delta: float | None) -> np.ndarray:
    """Per-replicate objective ``Σ_i w_bi · huber(log pred_bi − log y_i)`` for ``theta`` (B, p)."""
    pred = model(theta, jac=False, rows=np.arange(theta.shape[0]))
    r = np.log(np.maximum(pred, _TINY)) - logy
    return np.sum(w * huber(r, delta), axis=-1)


def refine(model: ModelFn, theta0: np.ndarray, w: np.ndarray, logy: np.ndarray, lower: np.ndarray,
           upper: np.ndarray, delta: float | None, *, max_iter: int = 200, rtol: float = 1e-10,
           xtol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the summed (Huber) log-residual loss independently for each of B replicates.

    Args:
        model: ``model(theta (b, p), jac=True, rows=idx) -> (pred (b, n), dpred/dtheta (b, n, p))``, and
            with ``jac=False`` only ``pred``; ``rows`` (b,) says which replicates ``theta`` belongs to (for
            models whose abscissae differ per replicate). Predictions must be > 0. Instead of the Jacobian
            a model may return a function ``normal(g (b, n), t (b, n)) -> (Σ g·J (b, p), Σ t·J Jᵀ (b, p, p))``
            that forms the gradient and Gauss-Newton matrix without building J.
        theta0: (B, p) starting points (projected onto the bounds).
        w: (B, n) non-negative point weights (bootstrap multiplicities).
        logy: (n,) or (B, n) log of the observed values.
        lower, upper: (p,) bounds.
        delta: Huber threshold on log residuals; ``None`` for squared loss.
        max_iter: iteration cap. A replicate stops once an accepted step lowers its objective by less than
            ``rtol`` (relative) or moves no parameter by more than ``xtol`` (relative), or once the damping
            has grown past 1e6 without an accepted step.

    Returns:
        ``(theta, obj)`` of shapes (B, p) and (B,).
    """
    theta = np.clip(np.asarray(theta0, dtype=float), lower, upper).copy()
    n_rep, p = theta.shape
    eye = np.eye(p)
    lam = np.full(n_rep, 1e-3)
    live = np.arange(n_rep)          # replicates still moving; finished ones are dropped from the work
    ly = np.broadcast_to(logy, w.shape)
    pred = np.maximum(model(theta, jac=False, rows=live), _TINY)
    obj = np.sum(w * huber(np.log(pred) - ly, delta), axis=-1)
    th, pr, ob, lm, ww = theta, pred, obj, lam, w
    for _ in range(max_iter):
        r = np.log(pr) - ly
        dp = model(th, jac=True, rows=live)[1]          # d pred / d theta; d log pred = dp / pred
        psi = huber_psi(r, delta)
        if delta is None:
            q = 1.0
        else:                                           # IRLS weight psi(r)/r of the Huber loss
            with np.errstate(divide="ignore"):
                q = np.minimum(1.0, delta / np.abs(r))
        if callable(dp):                                # the model forms the normal equations itself
            grad, hess = dp(ww * psi / pr, ww * q / (pr * pr))
        else:
            grad = np.matmul((ww * psi / pr)[:, None, :], dp)[:, 0]
            hess = np.matmul(dp.transpose(0, 2, 1), dp * (ww * q / (pr * pr))[..., None])
        # Projected Newton: variables on a bound whose gradient pushes outwards are held fixed.
        fixed = ((th <= lower) & (grad > 0)) | ((th >= upper) & (grad < 0))
        grad = np.where(fixed, 0.0, grad)
        keep = ~fixed
        hess = hess * keep[:, :, None] * keep[:, None, :] + eye * fixed[:, :, None]
        diag = np.einsum("bii->bi", hess)
        damp = hess + (lm[:, None] * diag + 1e-12 * (diag.max(axis=1, keepdims=True) + _TINY))[..., None] * eye
        step = -np.linalg.solve(damp, grad[..., None])[..., 0]
        trial = np.clip(th + step, lower, upper)
        tpred = np.maximum(model(trial, jac=False, rows=live), _TINY)
        tobj = np.sum(ww * huber(np.log(tpred) - ly, delta), axis=-1)
        better = np.isfinite(tobj) & (tobj < ob)
        gain = np.where(better, (ob - tobj) / np.maximum(ob, _TINY), 0.0)
        moved = np.max(np.abs(trial - th) / (np.abs(th) + xtol), axis=1)
        th = np.where(better[:, None], trial, th)
        pr = np.where(better[:, None], tpred, pr)
        ob = np.where(better, tobj, ob)
        lm = np.where(better, np.maximum(lm / 4.0, 1e-9), lm * 5.0)
        theta[live], obj[live], lam[live] = th, ob, lm
        active = np.where(better, (gain > rtol) & (moved > xtol), lm < 1e6)
        if not active.any():
            break
        if not active.all():
            live, th, pr, ob, lm, ww, ly = (a[active] for a in (live, th, pr, ob, lm, ww, ly))
    return theta, obj
