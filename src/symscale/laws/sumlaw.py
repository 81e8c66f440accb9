"""The sum law L(N, D) = L∞ + A·N^(−α) + B·D^(−β) fitted to all checkpoints.

Objective: the Huber loss (threshold ``delta`` on log residuals, default 1e-3) *summed* over checkpoints,
``Σ_i w_i · huber(log L̂_i − log L_i)`` -- summed, not averaged, so L-BFGS-B's absolute tolerances do not stop
it early (Besiroglu et al. 2024).

Method (variable projection):

1. for every (α, β) of a dense grid, (L∞, A, B) ≥ 0 solve an exact weighted NNLS (weights 1/L², so the linear
   residual is the relative error ≈ the log residual) -- the normal equations are assembled for the whole grid
   with a few matrix products and solved in closed form over active sets (:func:`solvers.nnls_small`);
2. the best grid points (scored with the true Huber objective) start L-BFGS-B on all five parameters with
   analytic gradients, followed by a projected Gauss-Newton polish; the lowest objective wins.

Bootstrap refits (:func:`fit_batched`) start from a coarse local grid around the full-data optimum and run the
batched projected Gauss-Newton (:func:`solvers.refine`) on all replicates at once; it minimises the same
objective. Internally N and D are divided by their geometric means for conditioning; A and B are reported in
the data's units, unrounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .solvers import huber, huber_psi, nnls_small, refine

ALPHA_GRID = np.linspace(0.02, 2.0, 100)
BOUNDS = (0.005, 4.0)


@dataclass
class SumLawFit:
    """Fitted parameters, arrays of shape (B,) (B = 1 for the full-data fit)."""

    L_inf: np.ndarray
    A: np.ndarray
    B: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    objective: np.ndarray

    def predict(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """(B, n) predicted loss."""
        return (self.L_inf[:, None] + self.A[:, None] * np.power(N[None, :], -self.alpha[:, None])
                + self.B[:, None] * np.power(D[None, :], -self.beta[:, None]))

    def row(self, i: int = 0) -> dict:
        return {k: float(getattr(self, k)[i]) for k in ("L_inf", "A", "B", "alpha", "beta", "objective")}


class _Problem:
    """Normalised coordinates x = log(N/N0), z = log(D/D0) and the model in scaled parameters."""

    def __init__(self, N: np.ndarray, D: np.ndarray, loss: np.ndarray):
        self.N0 = float(np.exp(np.mean(np.log(N))))
        self.D0 = float(np.exp(np.mean(np.log(D))))
        self.x = np.log(N / self.N0)
        # N takes one value per run: exponentiate the distinct values only, then gather.
        self.ux, self.uinv = np.unique(self.x, return_inverse=True)
        self.z = np.log(D / self.D0)
        self.loss = loss
        self.logy = np.log(loss)
        self.lower = np.array([0.0, 0.0, 0.0, BOUNDS[0], BOUNDS[0]])
        self.upper = np.array([np.inf, np.inf, np.inf, BOUNDS[1], BOUNDS[1]])

    def model(self, theta: np.ndarray, jac: bool = True, rows: np.ndarray | None = None):
        u = np.exp(-theta[:, 3:4] * self.ux[None, :])[:, self.uinv]
        v = np.exp(-theta[:, 4:5] * self.z[None, :])
        au, bv = theta[:, 1:2] * u, theta[:, 2:3] * v
        pred = theta[:, 0:1] + au + bv
        if not jac:
            return pred
        J = np.empty(pred.shape + (5,))
        J[..., 0] = 1.0
        J[..., 1] = u
        J[..., 2] = v
        J[..., 3] = -au * self.x[None, :]
        J[..., 4] = -bv * self.z[None, :]
        return pred, J

    def grid(self, alphas: np.ndarray, betas: np.ndarray, weights: np.ndarray):
        """NNLS over the (α, β) grid for each replicate: returns coef (B, na, nb, 3), obj (B, na, nb)."""
        u = np.exp(-alphas[None, :] * self.x[:, None])               # (n, na)
        v = np.exp(-betas[None, :] * self.z[:, None])                # (n, nb)
        om = weights / self.loss[None, :] ** 2                        # (B, n)
        oy = om * self.loss[None, :]
        shape = (weights.shape[0], alphas.size, betas.size)
        G = np.empty(shape + (3, 3))
        G[..., 0, 0] = om.sum(1)[:, None, None]
        G[..., 0, 1] = G[..., 1, 0] = (om @ u)[:, :, None]
        G[..., 0, 2] = G[..., 2, 0] = (om @ v)[:, None, :]
        G[..., 1, 1] = (om @ (u * u))[:, :, None]
        G[..., 2, 2] = (om @ (v * v))[:, None, :]
        G[..., 1, 2] = G[..., 2, 1] = np.einsum("bia,ic->bac", om[:, :, None] * u[None], v)
        h = np.empty(shape + (3,))
        h[..., 0] = oy.sum(1)[:, None, None]
        h[..., 1] = (oy @ u)[:, :, None]
        h[..., 2] = (oy @ v)[:, None, :]
        yy = np.broadcast_to((oy * self.loss[None, :]).sum(1)[:, None, None], shape)
        return nnls_small(G, h, yy)

    def unscale(self, theta: np.ndarray, obj: np.ndarray) -> SumLawFit:
        return SumLawFit(L_inf=theta[:, 0], A=theta[:, 1] * self.N0 ** theta[:, 3],
                         B=theta[:, 2] * self.D0 ** theta[:, 4], alpha=theta[:, 3], beta=theta[:, 4],
                         objective=obj)


def _lbfgsb(prob: _Problem, theta0: np.ndarray, w: np.ndarray, delta: float) -> tuple[np.ndarray, float]:
    def fun(t):
        pred, jac = prob.model(t[None, :])
        pred = np.maximum(pred[0], 1e-300)
        r = np.log(pred) - prob.logy
        grad = (w * huber_psi(r, delta) / pred) @ jac[0]
        return float(np.sum(w * huber(r, delta))), grad

    bounds = list(zip(prob.lower, [None if np.isinf(u) else u for u in prob.upper]))
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
    return res.x, float(res.fun)


def fit(N: np.ndarray, D: np.ndarray, loss: np.ndarray, *, delta: float = 1e-3, n_starts: int = 3,
        alphas: np.ndarray = ALPHA_GRID, betas: np.ndarray = ALPHA_GRID) -> SumLawFit:
    """Full-data fit: dense (α, β) grid with NNLS, then L-BFGS-B and a Gauss-Newton polish."""
    prob = _Problem(N, D, loss)
    w = np.ones((1, loss.size))
    coef, _ = prob.grid(alphas, betas, w)
    coef = coef[0]
    aa, bb = np.meshgrid(alphas, betas, indexing="ij")
    cand = np.concatenate([coef.reshape(-1, 3), aa.reshape(-1, 1), bb.reshape(-1, 1)], axis=1)
    hub = np.empty(cand.shape[0])
    for sl in np.array_split(np.arange(cand.shape[0]), max(1, cand.shape[0] // 2000)):
        pred = prob.model(cand[sl], jac=False)
        hub[sl] = np.sum(huber(np.log(np.maximum(pred, 1e-300)) - prob.logy, delta), axis=1)
    best_theta, best_obj = None, np.inf
    for idx in np.argsort(hub)[:n_starts]:
        start = cand[idx].copy()
        start[:3] = np.maximum(start[:3], 1e-9 * loss.min())  # off the bound so both terms can move
        theta, obj = _lbfgsb(prob, start, w[0], delta)
        polished, pobj = refine(prob.model, theta[None, :], w, prob.logy, prob.lower, prob.upper, delta,
                               rtol=1e-14, xtol=1e-12, max_iter=500)
        if pobj[0] < obj:
            theta, obj = polished[0], float(pobj[0])
        if obj < best_obj:
            best_theta, best_obj = theta, obj
    return prob.unscale(best_theta[None, :], np.array([best_obj]))


def fit_batched(N: np.ndarray, D: np.ndarray, loss: np.ndarray, weights: np.ndarray, center: SumLawFit, *,
                delta: float = 1e-3, half_width: float = 0.25, n_grid: int = 9, rtol: float = 1e-6,
                xtol: float = 3e-4) -> SumLawFit:
    """Refit for each row of ``weights`` (B, n) (bootstrap multiplicities), warm-started near ``center``.

    The Huber objective near its L1 regime makes the re-weighted Gauss-Newton converge linearly; a replicate
    stops when a step moves no parameter by more than ``xtol`` (relative) or gains less than ``rtol``.
    ``tests/laws`` checks the result against L-BFGS-B on single replicates (α, β within 2e-3).
    """
    prob = _Problem(N, D, loss)
    a0, b0 = float(center.alpha[0]), float(center.beta[0])
    alphas = np.clip(np.linspace(a0 - half_width, a0 + half_width, n_grid), *BOUNDS)
    betas = np.clip(np.linspace(b0 - half_width, b0 + half_width, n_grid), *BOUNDS)
    coef, obj = prob.grid(alphas, betas, weights)
    B = weights.shape[0]
    flat = obj.reshape(B, -1).argmin(axis=1)
    ia, ib = np.unravel_index(flat, obj.shape[1:])
    rows = np.arange(B)
    theta0 = np.column_stack([coef[rows, ia, ib], alphas[ia], betas[ib]])
    theta0[:, :3] = np.maximum(theta0[:, :3], 1e-9 * loss.min())
    theta, fobj = refine(prob.model, theta0, weights, prob.logy, prob.lower, prob.upper, delta,
                         rtol=rtol, xtol=xtol)
    return prob.unscale(theta, fobj)
