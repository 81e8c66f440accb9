"""Quantities derived from the sum law: compute-optimal allocation under C = 3κND and the implied exponents.

Minimising A·N^(−α) + B·D^(−β) subject to N·D = K = C/(3κ) gives αA·N^(−α) = βB·D^(−β), hence

    N*(C) = G · K^a,   D*(C) = K / N*(C) = K^b / G,   G = (αA / (βB))^(1/(α+β)),
    a = β/(α+β),       b = α/(α+β),                    γ_derived = αβ/(α+β),

where γ_derived is the exponent of the reducible loss along the optimal path, L − L∞ ∝ C^(−γ_derived).
All functions are elementwise in their array arguments (one entry per bootstrap replicate).
"""

from __future__ import annotations

import numpy as np


def exponents(alpha: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
    """``a``, ``b`` and ``gamma_c_derived`` from α and β."""
    s = alpha + beta
    return {"a": beta / s, "b": alpha / s, "gamma_c_derived": alpha * beta / s}


def coefficient(A: np.ndarray, B: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """G = (αA/(βB))^(1/(α+β)); NaN where A or B is 0 (a vanished term has no optimum)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # overflow: inf, reported as null
        g = np.power(alpha * A / (beta * B), 1.0 / (alpha + beta))
    return np.where((A > 0) & (B > 0), g, np.nan)


def optimal_n(C: np.ndarray, kappa: float, A, B, alpha, beta) -> np.ndarray:
    """N*(C) for budgets ``C`` (m,) and parameters (B,): returns (B, m)."""
    A, B, alpha, beta = (np.atleast_1d(np.asarray(v, dtype=float))[:, None] for v in (A, B, alpha, beta))
    K = np.asarray(C, dtype=float)[None, :] / (3.0 * kappa)
    with np.errstate(over="ignore", invalid="ignore"):
        return coefficient(A, B, alpha, beta) * np.power(K, beta / (alpha + beta))


def optimal_d(C: np.ndarray, kappa: float, A, B, alpha, beta) -> np.ndarray:
    """D*(C) = C / (3κ N*(C)), shape (B, m)."""
    return np.asarray(C, dtype=float)[None, :] / (3.0 * kappa) / optimal_n(C, kappa, A, B, alpha, beta)
