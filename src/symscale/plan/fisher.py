"""Expected 95 % interval widths of α, β and a = β/(α+β) for a study design, before it is run.

Model of the data (the one the residual bootstrap of :mod:`symscale.laws.bootstrap` simulates): every run
k at N_k is evaluated at token counts D_kj, and its log losses are

    y_kj = log L(N_k, D_kj; θ) + o_k + e_kj,     o_k ~ N(0, τ²) (run offset),  e_kj ~ N(0, σ²),

with θ = (L∞, log A, log B, α, β). The fitter (:mod:`symscale.laws.sumlaw`) minimises an *unweighted* sum
over checkpoints of log residuals, so its estimator is least squares that ignores the run offsets. Its
asymptotic covariance is the sandwich

    Cov(θ̂) = G⁻¹ (M + σ⁴ P) G⁻¹,    G = H + σ² P,
    H = Σ_k J_kᵀ J_k,    M = Σ_k J_kᵀ (σ² I + τ² 11ᵀ) J_k = σ² H + τ² Σ_k s_k s_kᵀ,   s_k = J_kᵀ 1,

where J_k is the Jacobian of log L at run k's checkpoints. H and M are sums over runs, so a run's
contribution is computed once and a design's covariance is two 5 × 5 sums away. P is a weak Gaussian prior
precision on θ (:func:`prior_precision`) that keeps the covariance finite while the runs do not yet identify
every parameter (with P = 0 and τ = 0 this is σ² H⁻¹, the inverse Fisher information); with it, the formula
is the expected squared error of the penalised estimator averaged over the prior. The half-width of a 95 %
interval of a quantity q(θ) is 1.96·sqrt(∇qᵀ Cov ∇q) (the delta method).

Coordinates: log N and log D are centred on fixed references N0, D0, which re-parameterises log A, log B
linearly; without the prior that leaves the variances of α, β and a unchanged, but the prior on log A,
log B then sits at a different point, so the widths of designs that barely identify the law depend on the
centring (the planner centres on a group's finished runs, :class:`~.search._GroupState`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: 95 % two-sided normal quantile
Z95 = 1.959963984540054
#: prior standard deviations of (log A, log B, α, β) in :func:`prior_precision` (L∞: the loss scale)
PRIOR_SD = (5.0, 5.0, 1.0, 1.0)


@dataclass(frozen=True)
class Noise:
    """Within-run standard deviation ``sigma`` of log losses and run-offset standard deviation ``tau``."""

    sigma: float
    tau: float


def theta_array(L_inf, A, B, alpha, beta) -> np.ndarray:
    """(K, 5) parameter points (L∞, A, B, α, β) from K-vectors (or scalars)."""
    cols = [np.atleast_1d(np.asarray(v, dtype=float)) for v in (L_inf, A, B, alpha, beta)]
    return np.stack(np.broadcast_arrays(*cols), axis=1)


def run_matrices(theta: np.ndarray, N: np.ndarray, D: np.ndarray, noise: Noise, N0: float,
                 D0: float) -> tuple[np.ndarray, np.ndarray]:
    """Contributions (H_k, M_k) of runs to H and M of the module docstring, at every parameter point.

    Args:
        theta: (K, 5) parameter points (L∞, A, B, α, β).
        N: (n,) parameters of each run.
        D: (n, m) checkpoint token counts of each run, NaN-padded (a run with fewer checkpoints).
        noise: σ and τ of log losses.
        N0, D0: centring references of log N, log D (any positive numbers, the same for all runs).

    Returns:
        ``(H, M)``, each (K, n, 5, 5).
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    N = np.asarray(N, dtype=float)
    D = np.atleast_2d(np.asarray(D, dtype=float))
    mask = np.isfinite(D)
    Dz = np.where(mask, D, D0)
    L_inf, A, B, alpha, beta = (theta[:, i, None, None] for i in range(5))
    x = np.log(N / N0)[None, :, None]                     # (1, n, 1)
    z = np.log(Dz / D0)[None, :, :]                       # (1, n, m)
    au = A * N0 ** -alpha * np.exp(-alpha * x)            # A·N^-α, (K, n, 1)
    bv = B * D0 ** -beta * np.exp(-beta * z)              # B·D^-β, (K, n, m)
    mu = L_inf + au + bv
    J = np.stack(np.broadcast_arrays(L_inf * 0 + 1.0, au, bv, -au * x, -bv * z), axis=-1) / mu[..., None]
    J = J * mask[None, :, :, None]                        # padded checkpoints contribute nothing
    H = np.einsum("knmi,knmj->knij", J, J)
    s = J.sum(axis=2)
    M = noise.sigma ** 2 * H + noise.tau ** 2 * s[..., :, None] * s[..., None, :]
    return H, M


def prior_precision(theta: np.ndarray, loss_scale: float) -> np.ndarray:
    """(K, 5, 5) diagonal prior precision: sd of L∞ = ``loss_scale``, the others :data:`PRIOR_SD`.

    The prior only matters where the runs carry little information (a design that does not vary N, say);
    L∞ is a loss, so its scale is the loss's.
    """
    K = np.atleast_2d(theta).shape[0]
    sd = np.array([loss_scale, *PRIOR_SD], dtype=float)
    return np.broadcast_to(np.diag(1.0 / sd ** 2), (K, 5, 5)).copy()


def covariance(H: np.ndarray, M: np.ndarray, P: np.ndarray, noise: Noise) -> np.ndarray:
    """(…, 5, 5) covariance G⁻¹ (M + σ⁴ P) G⁻¹ with G = H + σ² P (module docstring)."""
    s2 = noise.sigma ** 2
    G = H + s2 * P
    Gi = np.linalg.inv(G)
    return Gi @ (M + s2 * s2 * P) @ Gi


def gradients(theta: np.ndarray) -> np.ndarray:
    """(K, 3, 5) gradients of α, β and a = β/(α+β) with respect to (L∞, log A, log B, α, β)."""
    theta = np.atleast_2d(theta)
    alpha, beta = theta[:, 3], theta[:, 4]
    g = np.zeros((theta.shape[0], 3, 5))
    g[:, 0, 3] = 1.0
    g[:, 1, 4] = 1.0
    s2 = (alpha + beta) ** 2
    g[:, 2, 3] = -beta / s2
    g[:, 2, 4] = alpha / s2
    return g


def widths(cov: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """(…, 3) full widths 2·1.96·sd of α, β, a from covariances (…, 5, 5) and gradients (K, 3, 5).

    ``cov``'s leading axis is the parameter point K (further axes, e.g. candidates, follow it).
    """
    extra = cov.ndim - 3
    g = grads.reshape(grads.shape[:1] + (1,) * extra + grads.shape[1:])
    var = np.einsum("...qi,...ij,...qj->...q", g, cov, g)
    return 2.0 * Z95 * np.sqrt(np.maximum(var, 0.0))
