"""The sum law L(N, D) = L∞ + A·N^(−α) + B·D^(−β) fitted to all checkpoints.

Objective: the Huber loss (threshold ``delta`` on log residuals, default 1e-3) *summed* over checkpoints,
``Σ_i w_i · huber(log L̂_i − log L_i)`` -- summed, not averaged, so L-BFGS-B's absolute tolerances do not stop
it early (Besiroglu et al. 2024).

Method (variable projection):

1. for every (α, β) of a dense grid, (L∞, A, B) ≥ 0 solve an exact weighted NNLS (weights ∝ 1/L², so the
   linear residual is the relative error ≈ the log residual) -- the normal equations of the whole grid are
   sums over points accumulated in cache-sized blocks and solved in closed form over active sets
   (:func:`solvers.nnls_small`);
2. the grid points with the lowest true Huber objective start L-BFGS-B on all five parameters with analytic
   gradients, followed by a projected Gauss-Newton polish; the lowest objective wins. They are found
   exactly without scoring every grid point on every checkpoint (:func:`top_candidates`).

Bootstrap refits (:func:`fit_batched`) start from a coarse local grid around the full-data optimum -- its
normal equations for every replicate are ``counts @ per-run sums``, since a replicate weights whole runs --
and run the batched projected Gauss-Newton (:func:`solvers.refine`) on blocks of replicates, with the
Gauss-Newton matrix formed from per-N sums (:meth:`_Problem.model_normal`); it minimises the same objective.
No array of replicates × checkpoints is ever built, so memory is a constant per checkpoint. Internally N and
D are divided by their geometric means for conditioning; A and B are reported in the data's units, unrounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .solvers import CHUNK, huber, huber_psi, nnls_small, power_of_two_scale, refine

ALPHA_GRID = np.linspace(0.02, 2.0, 100)
BOUNDS = (0.005, 4.0)
#: Block size (pairs) of the cache-sized loops over grid values (scoring candidates, normal equations).
BLOCK = 1 << 15


@dataclass
class SumLawFit:
    """Fitted parameters, arrays of shape (B,) (B = 1 for the full-data fit)."""

    L_inf: np.ndarray
    A: np.ndarray
    B: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    objective: np.ndarray
    #: full-data fit only: fraction of the searched α (β) grid whose least-squares profile lies within the
    #: 95 % likelihood-ratio threshold of the minimum (:func:`profile_flatness`); None for replicates
    flat: dict | None = None

    def predict(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        """(B, n) predicted loss."""
        return (self.L_inf[:, None] + self.A[:, None] * np.power(N[None, :], -self.alpha[:, None])
                + self.B[:, None] * np.power(D[None, :], -self.beta[:, None]))

    def row(self, i: int = 0) -> dict:
        return {k: float(getattr(self, k)[i]) for k in ("L_inf", "A", "B", "alpha", "beta", "objective")}


class _Problem:
    """Normalised coordinates x = log(N/N0), z = log(D/D0) and the model in scaled parameters.

    ``order`` (optional) permutes the points after N0 and D0 are taken: :func:`fit_batched` sorts them by
    N so that every distinct N is one contiguous segment, which :meth:`model_normal` needs.
    """

    def __init__(self, N: np.ndarray, D: np.ndarray, loss: np.ndarray, order: np.ndarray | None = None):
        self.N0 = float(np.exp(np.mean(np.log(N))))
        self.D0 = float(np.exp(np.mean(np.log(D))))
        if order is not None:
            N, D, loss = N[order], D[order], loss[order]
        self.x = np.log(N / self.N0)
        # N takes one value per run (and D often one value per evaluation step shared by all runs):
        # exponentiate the distinct values only, then gather -- the same numbers, computed fewer times.
        self.ux, self.uinv = np.unique(self.x, return_inverse=True)
        self.z = np.log(D / self.D0)
        self.uz, self.zinv = np.unique(self.z, return_inverse=True)
        if self.uz.size > self.z.size // 2:
            self.uz, self.zinv = self.z, None
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.uinv) != 0])   # segments of equal N (if sorted)
        self.loss = loss
        self.logy = np.log(loss)
        self.om_scale = power_of_two_scale(loss) ** 2   # NNLS weights (2^k / L)², 2^k ≈ the typical loss
        self.lower = np.array([0.0, 0.0, 0.0, BOUNDS[0], BOUNDS[0]])
        self.upper = np.array([np.inf, np.inf, np.inf, BOUNDS[1], BOUNDS[1]])

    def _uv(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """u = exp(−α x) per distinct x (b, n_ux) and v = exp(−β z) per point (b, n)."""
        u = np.exp(-theta[:, 3:4] * self.ux[None, :])
        v = np.exp(-theta[:, 4:5] * self.uz[None, :])
        return u, (v if self.zinv is None else v[:, self.zinv])

    def model(self, theta: np.ndarray, jac: bool = True, rows: np.ndarray | None = None):
        ug, v = self._uv(theta)
        u = ug[:, self.uinv]
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

    def model_normal(self, theta: np.ndarray, jac: bool = True, rows: np.ndarray | None = None):
        """:meth:`model` for :func:`solvers.refine` that returns the normal-equation builder, not J.

        Needs the points sorted by N. The Jacobian columns are 1, u, v, −A·u·x, −B·v·z with u and x constant
        on each distinct N: every sum Σ t·J_k·J_l reduces to per-N sums of t, t·v, t·v², t·v·z, t·v²·z,
        t·v²·z², so no (b, n, 5) array is formed.
        """
        ug, v = self._uv(theta)
        pred = theta[:, 0:1] + theta[:, 1:2] * ug[:, self.uinv] + theta[:, 2:3] * v
        if not jac:
            return pred
        starts = self.starts
        z, xg = self.z[None, :], self.ux[None, :]
        A, Bc = theta[:, 1:2], theta[:, 2:3]

        def normal(g: np.ndarray, t: np.ndarray):
            def seg(a):
                return np.add.reduceat(a, starts, axis=1)
            tv = t * v
            tvv = tv * v
            tvz = tv * z
            tvvz = tvv * z
            S0, S1, S2, S3, S4, S5 = seg(t), seg(tv), seg(tvv), seg(tvz), seg(tvvz), seg(tvvz * z)
            gv = g * v
            G0, G1, G2 = seg(g), seg(gv), seg(gv * z)
            U, AUX = ug, A * ug * xg                      # per distinct N: u and A·u·x (J_3 = −A·u·x)
            grad = np.stack([G0.sum(1), (U * G0).sum(1), G1.sum(1), -(AUX * G0).sum(1),
                             -Bc[:, 0] * G2.sum(1)], axis=1)
            H = np.empty((t.shape[0], 5, 5))
            b = Bc[:, 0]
            entries = {(0, 0): S0.sum(1), (0, 1): (U * S0).sum(1), (0, 2): S1.sum(1), (0, 3): -(AUX * S0).sum(1),
                       (0, 4): -b * S3.sum(1), (1, 1): (U * U * S0).sum(1), (1, 2): (U * S1).sum(1),
                       (1, 3): -(U * AUX * S0).sum(1), (1, 4): -b * (U * S3).sum(1), (2, 2): S2.sum(1),
                       (2, 3): -(AUX * S1).sum(1), (2, 4): -b * S4.sum(1), (3, 3): (AUX * AUX * S0).sum(1),
                       (3, 4): b * (AUX * S3).sum(1), (4, 4): b * b * S5.sum(1)}
            for (k, m), val in entries.items():
                H[:, k, m] = H[:, m, k] = val
            return grad, H

        return pred, normal

    def grid_stats(self, alphas: np.ndarray, betas: np.ndarray, cell: np.ndarray, n_cells: int) -> dict:
        """Per-cell sums of the terms of the NNLS normal equations over the (α, β) grid (weights ω = (2^k/L)²).

        A *cell* is a set of points that share their weight in every replicate (a run, for the bootstrap):
        the weighted sums of any replicate are then ``counts @ stats``. Points are visited in blocks of at
        most :data:`BLOCK` grid values, so the memory does not grow with ``len(alphas) × n``.

        Returns:
            (n_cells, ...) arrays: ``om`` = Σ ω, ``om_u``, ``om_uu``, ``om_v``, ``om_vv`` (Σ ω·u etc.
            for u = (N/N0)^-α, v = (D/D0)^-β), ``om_uv`` (n_cells, na, nb), ``oy`` = Σ ω·L, ``oy_u``,
            ``oy_v`` and ``oy_y`` = Σ ω·L².
        """
        na, nb = alphas.size, betas.size
        st = {"om": np.zeros(n_cells), "om_u": np.zeros((n_cells, na)), "om_uu": np.zeros((n_cells, na)),
              "om_v": np.zeros((n_cells, nb)), "om_vv": np.zeros((n_cells, nb)),
              "om_uv": np.zeros((n_cells, na, nb)), "oy": np.zeros(n_cells), "oy_u": np.zeros((n_cells, na)),
              "oy_v": np.zeros((n_cells, nb)), "oy_y": np.zeros(n_cells)}
        order = np.argsort(cell, kind="stable")
        bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
        step = max(1, BLOCK // max(na, nb))
        for g in range(n_cells):
            for lo in range(bounds[g], bounds[g + 1], step):
                idx = order[lo:min(lo + step, bounds[g + 1])]
                u = np.exp(-alphas[None, :] * self.x[idx, None])            # (m, na)
                v = np.exp(-betas[None, :] * self.z[idx, None])             # (m, nb)
                om = self.om_scale / self.loss[idx] ** 2
                oy = om * self.loss[idx]
                omu = om[:, None] * u
                st["om"][g] += om.sum()
                st["om_u"][g] += omu.sum(0)
                st["om_uu"][g] += (omu * u).sum(0)
                st["om_v"][g] += om @ v
                st["om_vv"][g] += om @ (v * v)
                st["om_uv"][g] += omu.T @ v
                st["oy"][g] += oy.sum()
                st["oy_u"][g] += oy @ u
                st["oy_v"][g] += oy @ v
                st["oy_y"][g] += (oy * self.loss[idx]).sum()
        return st

    def grid(self, alphas: np.ndarray, betas: np.ndarray, counts: np.ndarray, cell: np.ndarray):
        """NNLS over the (α, β) grid for each replicate: returns coef (B, na, nb, 3), obj (B, na, nb).

        ``counts`` (B, n_cells): weight of each cell's points in each replicate; ``cell`` (n,) the cell of
        each point. Normal equations use weights 1/L² so the linear residual is the relative error.
        """
        st = self.grid_stats(alphas, betas, cell, counts.shape[1])
        K = np.asarray(counts, dtype=float)
        B, na, nb = K.shape[0], alphas.size, betas.size
        shape = (B, na, nb)
        G = np.empty(shape + (3, 3))
        G[..., 0, 0] = (K @ st["om"])[:, None, None]
        G[..., 0, 1] = G[..., 1, 0] = (K @ st["om_u"])[:, :, None]
        G[..., 0, 2] = G[..., 2, 0] = (K @ st["om_v"])[:, None, :]
        G[..., 1, 1] = (K @ st["om_uu"])[:, :, None]
        G[..., 2, 2] = (K @ st["om_vv"])[:, None, :]
        G[..., 1, 2] = G[..., 2, 1] = (K @ st["om_uv"].reshape(K.shape[1], -1)).reshape(shape)
        h = np.empty(shape + (3,))
        h[..., 0] = (K @ st["oy"])[:, None, None]
        h[..., 1] = (K @ st["oy_u"])[:, :, None]
        h[..., 2] = (K @ st["oy_v"])[:, None, :]
        yy = np.broadcast_to((K @ st["oy_y"])[:, None, None], shape)
        return nnls_small(G, h, yy)

    def huber_sums(self, coef: np.ndarray, ia: np.ndarray, ib: np.ndarray, alphas: np.ndarray,
                   betas: np.ndarray, points: np.ndarray, delta: float) -> np.ndarray:
        """Σ over ``points`` of the Huber loss of grid candidates (L∞, A, B) = ``coef`` at (alphas[ia], betas[ib]).

        Works on blocks of at most :data:`BLOCK` (candidate, point) pairs; every term is computed with the
        same operations in the same order as :meth:`model` and :func:`solvers.huber` (only the order of
        the summation differs).
        """
        out = np.zeros(coef.shape[0])
        ps = max(1, min(points.size, 1024))
        cs = max(1, BLOCK // ps)
        half = 0.5 * delta
        for lo in range(0, points.size, ps):
            p = points[lo:lo + ps]
            U = np.exp(-alphas[:, None] * self.x[None, p])
            V = np.exp(-betas[:, None] * self.z[None, p])
            ly = self.logy[p]
            for c in range(0, coef.shape[0], cs):
                sl = slice(c, c + cs)
                r = coef[sl, 0:1] + coef[sl, 1:2] * U[ia[sl]]
                r += coef[sl, 2:3] * V[ib[sl]]
                np.maximum(r, 1e-300, out=r)
                np.log(r, out=r)
                r -= ly
                a = np.abs(r)
                quad = a <= delta
                np.multiply(r, r, out=r)
                r *= 0.5                              # 0.5·r² (scaling by 0.5 is exact)
                a -= half
                a *= delta
                np.copyto(a, r, where=quad)
                out[sl] += a.sum(axis=1)
        return out

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


def top_candidates(prob: _Problem, coef: np.ndarray, ls_obj: np.ndarray, alphas: np.ndarray,
                   betas: np.ndarray, delta: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` grid candidates with the lowest summed Huber objective, found exactly without scoring all.

    Candidate (i, j) is (L∞, A, B) = ``coef[i, j]`` at (alphas[i], betas[j]). The ``k`` best by the least-
    squares objective ``ls_obj`` are scored on every point; their largest objective is a threshold T that the
    k-th best objective cannot exceed. All other candidates are scored on growing blocks of a fixed random
    order of the points, and a candidate is dropped once its partial sum exceeds T: Huber terms are ≥ 0,
    so its full objective would exceed T too. The survivors are scored on every point. Ties go to the lower
    flat index (row-major over (α, β)).

    Returns:
        ``(index, objective)``: flat indices of the ``k`` best (ascending objective) and their objectives.
    """
    na, nb = alphas.size, betas.size
    flat = coef.reshape(-1, 3)
    ia, ib = np.repeat(np.arange(na), nb), np.tile(np.arange(nb), na)
    n = prob.x.size
    every = np.arange(n)
    total = np.full(flat.shape[0], np.inf)
    seeds = np.argsort(ls_obj.reshape(-1), kind="stable")[:k]
    total[seeds] = prob.huber_sums(flat[seeds], ia[seeds], ib[seeds], alphas, betas, every, delta)
    threshold = total[seeds].max()
    alive = np.setdiff1d(np.arange(flat.shape[0]), seeds)
    partial = np.zeros(flat.shape[0])
    perm = np.random.default_rng(0).permutation(n)
    pos, block = 0, 256
    while pos < n and alive.size:
        pts = perm[pos:pos + block]
        partial[alive] += prob.huber_sums(flat[alive], ia[alive], ib[alive], alphas, betas, pts, delta)
        alive = alive[partial[alive] <= threshold]
        pos += pts.size
        block = max(block * 2, CHUNK // max(alive.size, 1))
    total[alive] = partial[alive]
    best = np.argsort(total, kind="stable")[:k]
    return best, total[best]


def fit(N: np.ndarray, D: np.ndarray, loss: np.ndarray, *, delta: float = 1e-3, n_starts: int = 3,
        alphas: np.ndarray = ALPHA_GRID, betas: np.ndarray = ALPHA_GRID) -> SumLawFit:
    """Full-data fit: dense (α, β) grid with NNLS, then L-BFGS-B and a Gauss-Newton polish.

    The ``n_starts`` grid points with the lowest Huber objective (:func:`top_candidates`) start L-BFGS-B.
    """
    prob = _Problem(N, D, loss)
    w = np.ones((1, loss.size))
    coef, ls_obj = prob.grid(alphas, betas, np.ones((1, 1)), np.zeros(loss.size, dtype=np.intp))
    best, _ = top_candidates(prob, coef[0], ls_obj[0], alphas, betas, delta, n_starts)
    ia, ib = np.unravel_index(best, (alphas.size, betas.size))
    cand = np.column_stack([coef[0][ia, ib], alphas[ia], betas[ib]])
    best_theta, best_obj = None, np.inf
    for start in cand:
        start = start.copy()
        start[:3] = np.maximum(start[:3], 1e-9 * loss.min())  # off the bound so both terms can move
        theta, obj = _lbfgsb(prob, start, w[0], delta)
        polished, pobj = refine(prob.model, theta[None, :], w, prob.logy, prob.lower, prob.upper, delta,
                               rtol=1e-14, xtol=1e-12, max_iter=500)
        if pobj[0] < obj:
            theta, obj = polished[0], float(pobj[0])
        if obj < best_obj:
            best_theta, best_obj = theta, obj
    if best_theta is None:   # every start gave a non-finite objective
        best_theta, best_obj = np.full(5, np.nan), np.nan
    out = prob.unscale(best_theta[None, :], np.array([best_obj]))
    out.flat = profile_flatness(ls_obj[0], loss.size)
    return out


#: A profile is *flat* when more than this fraction of the searched exponent grid is within the 95 %
#: likelihood-ratio threshold (χ²₁ = 3.84) of its minimum: the data then cannot tell most exponents apart.
FLAT_FRACTION = 0.5


def profile_flatness(ls_obj: np.ndarray, n: int) -> dict:
    """Fraction of the α (β) grid whose profile objective is within χ²₁(95 %) of the minimum.

    ``ls_obj`` (na, nb): weighted least-squares objective of the grid's NNLS fits (relative residuals);
    the profile of α is its minimum over β. σ² is estimated from the best grid point with n − 5 degrees
    of freedom, so the threshold is 3.84·σ² on the objective (a Gaussian likelihood-ratio interval).
    """
    obj = np.asarray(ls_obj, dtype=float)
    best = float(obj.min())
    sigma2 = max(best / max(n - 5, 1), 1e-300)
    out = {}
    for key, prof in (("alpha", obj.min(axis=1)), ("beta", obj.min(axis=0))):
        out[key] = float(np.mean((prof - best) / sigma2 < 3.84))
    return out


class ResidualRefitter:
    """Refits of the sum law to many simulated loss vectors on one design (the residual bootstrap).

    Every replicate shares the points (N, D) of the data and differs only in its losses, so the problem
    (points sorted by N, scaled coordinates) is built once; each replicate starts the batched projected
    Gauss-Newton (:func:`solvers.refine`, normal equations from per-N sums) at ``center`` -- the law the
    replicates were simulated from. Blocks hold at most :data:`CHUNK` (replicate, point) pairs.
    """

    def __init__(self, N: np.ndarray, D: np.ndarray, center: SumLawFit, delta: float = 1e-3,
                 rtol: float = 1e-6, xtol: float = 3e-4):
        self.order = np.argsort(N, kind="stable")
        mu = center.predict(N, D)[0]
        self.prob = _Problem(N, D, mu, order=self.order)
        p = self.prob
        c = center
        self.theta0 = np.array([c.L_inf[0], c.A[0] / p.N0 ** c.alpha[0], c.B[0] / p.D0 ** c.beta[0],
                                c.alpha[0], c.beta[0]])
        self.theta0[:3] = np.maximum(self.theta0[:3], 1e-9 * mu.min())
        self.delta, self.rtol, self.xtol = delta, rtol, xtol

    def __call__(self, loss: np.ndarray) -> SumLawFit:
        """Fits to ``loss`` (b, n) (points in the data's order); returns a SumLawFit of b replicates."""
        logy = np.log(loss[:, self.order])
        b = logy.shape[0]
        theta0 = np.broadcast_to(self.theta0, (b, 5))
        theta, obj = refine(self.prob.model_normal, theta0, np.ones_like(logy), logy, self.prob.lower,
                            self.prob.upper, self.delta, rtol=self.rtol, xtol=self.xtol)
        return self.prob.unscale(theta, obj)


def cells_of(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(counts (B, n_cells), cell (n,))`` with ``weights == counts[:, cell]``: points whose weights agree in
    every replicate share a cell (the runs, for bootstrap multiplicities)."""
    counts, cell = np.unique(np.asarray(weights, dtype=float), axis=1, return_inverse=True)
    return counts, cell.reshape(-1)


def fit_batched(N: np.ndarray, D: np.ndarray, loss: np.ndarray, weights: np.ndarray, center: SumLawFit, *,
                cell: np.ndarray | None = None, delta: float = 1e-3, half_width: float = 0.25, n_grid: int = 9,
                rtol: float = 1e-6, xtol: float = 3e-4) -> SumLawFit:
    """Refit for each replicate (bootstrap multiplicities), warm-started near ``center``.

    Args:
        weights: (B, n) weight of every point in every replicate, or, with ``cell``, (B, n_cells) weight of
            every cell (a point's weight is ``weights[:, cell[i]]``; the bootstrap passes run multiplicities
            and the run of every point, so nothing of size B × n is built at once).
        cell: (n,) cell (run) index of every point.

    The grid step uses per-cell sums (``counts @ stats``); the Gauss-Newton refinement
    (:func:`solvers.refine`) runs on blocks of replicates of at most :data:`CHUNK` (replicate, point)
    pairs -- replicates are independent, so blocking does not change any result. The Huber objective near
    its L1 regime makes the re-weighted Gauss-Newton converge linearly; a replicate stops when a step moves
    no parameter by more than ``xtol`` (relative) or gains less than ``rtol``. ``tests/laws`` checks the
    result against L-BFGS-B on single replicates (α, β within 2e-3).
    """
    counts, cell = (np.asarray(weights, dtype=float), np.asarray(cell)) if cell is not None else cells_of(weights)
    order = np.argsort(N, kind="stable")
    prob = _Problem(N, D, loss, order=order)
    cell = cell[order]
    a0, b0 = float(center.alpha[0]), float(center.beta[0])
    alphas = np.clip(np.linspace(a0 - half_width, a0 + half_width, n_grid), *BOUNDS)
    betas = np.clip(np.linspace(b0 - half_width, b0 + half_width, n_grid), *BOUNDS)
    coef, obj = prob.grid(alphas, betas, counts, cell)
    B = counts.shape[0]
    flat = obj.reshape(B, -1).argmin(axis=1)
    ia, ib = np.unravel_index(flat, obj.shape[1:])
    rows = np.arange(B)
    theta0 = np.column_stack([coef[rows, ia, ib], alphas[ia], betas[ib]])
    theta0[:, :3] = np.maximum(theta0[:, :3], 1e-9 * loss.min())
    theta, fobj = np.empty_like(theta0), np.empty(B)
    step = max(1, CHUNK // max(loss.size, 1))
    for lo in range(0, B, step):
        sl = slice(lo, min(lo + step, B))
        theta[sl], fobj[sl] = refine(prob.model_normal, theta0[sl], counts[sl][:, cell], prob.logy, prob.lower,
                                     prob.upper, delta, rtol=rtol, xtol=xtol)
    return prob.unscale(theta, fobj)
