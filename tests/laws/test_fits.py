"""Recovery of known laws, optimiser checks and bootstrap coverage."""

import numpy as np
import pytest
from scipy.optimize import minimize, nnls

from symscale.laws import analyse_group, frontier, sumlaw
from symscale.laws.solvers import huber, nnls_small
from synth import TRUTH, make_group


def test_nnls_small_matches_scipy():
    rng = np.random.default_rng(0)
    for k in (2, 3):
        for _ in range(30):
            X = rng.normal(size=(12, k))
            y = rng.normal(size=12)
            ref, _ = nnls(X, y)
            sol, obj = nnls_small(X.T @ X, X.T @ y, np.array(y @ y))
            assert np.allclose(sol, ref, atol=1e-8)
            assert np.isclose(obj, np.sum((X @ ref - y) ** 2), atol=1e-8)


@pytest.fixture(scope="module")
def clean_group():
    return make_group(n_runs=10, n_ckpt=30, noise=0.01, seed=3)


def test_sumlaw_recovers_exponents(clean_group):
    g = clean_group
    f = sumlaw.fit(g.N, g.D, g.loss)
    assert abs(f.alpha[0] - TRUTH["alpha"]) < 0.02
    assert abs(f.beta[0] - TRUTH["beta"]) < 0.02
    # the fitted law predicts the noiseless truth within the noise level
    true = TRUTH["L_inf"] + TRUTH["A"] * g.N ** -TRUTH["alpha"] + TRUTH["B"] * g.D ** -TRUTH["beta"]
    assert np.max(np.abs(np.log(f.predict(g.N, g.D)[0] / true))) < 0.02


def test_sumlaw_optimum_beats_fine_brute_force_grid(clean_group):
    """No point of a fine (α, β) grid around the optimum, with (L∞, A, B) optimised by L-BFGS-B, is lower."""
    g = clean_group
    f = sumlaw.fit(g.N, g.D, g.loss)
    logy = np.log(g.loss)
    best = np.inf
    for a in f.alpha[0] + np.linspace(-0.03, 0.03, 9):
        for b in f.beta[0] + np.linspace(-0.03, 0.03, 9):
            u, v = g.N ** -a, g.D ** -b

            def obj(t, u=u, v=v):
                pred = t[0] + t[1] * u + t[2] * v
                r = np.log(pred) - logy
                psi = np.clip(r, -1e-3, 1e-3) / pred
                return np.sum(huber(r, 1e-3)), np.array([psi.sum(), psi @ u, psi @ v])

            starts = [[f.L_inf[0] + 1e-6, f.A[0] * g.N.mean() ** (a - f.alpha[0]),
                       f.B[0] * g.D.mean() ** (b - f.beta[0])]]
            for t0 in starts:
                r = minimize(obj, t0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * 3)
                best = min(best, r.fun)
    assert f.objective[0] <= best * (1 + 1e-6)


def test_bootstrap_refit_matches_lbfgsb(clean_group):
    """Batched Gauss-Newton refits equal full L-BFGS-B fits on the same resampled data."""
    from symscale.laws.bootstrap import run_weights

    g = clean_group
    full = sumlaw.fit(g.N, g.D, g.loss)
    w = run_weights(g, 3, seed=5)
    boot = sumlaw.fit_batched(g.N, g.D, g.loss, w, full)
    for i in range(3):
        rep = np.repeat(np.arange(g.n_points), w[i].astype(int))
        ref = sumlaw.fit(g.N[rep], g.D[rep], g.loss[rep])
        assert abs(boot.alpha[i] - ref.alpha[0]) < 2e-3
        assert abs(boot.beta[i] - ref.beta[0]) < 2e-3
        assert boot.objective[i] <= ref.objective[0] * (1 + 1e-3)


def _power_points(seed, L_inf, gamma=0.3, F=50.0, noise=0.005, n=60):
    rng = np.random.default_rng(seed)
    x = np.geomspace(1e12, 1e18, n)
    loss = (L_inf + F * x ** -gamma) * np.exp(rng.normal(0, noise, n))
    return x, loss


def test_frontier_gamma_recovered_and_selection():
    for seed in range(3):
        x, loss = _power_points(seed, 0.0, F=5e4)
        w = frontier.envelope_mask(x, loss).astype(float)
        fixed, free = frontier.fit_fixed(x, loss, w), frontier.fit_free(x, loss, w)
        assert abs(fixed.gamma[0] - 0.3) < 0.01
        assert not frontier.select(fixed, free)[0]
        x, loss = _power_points(seed, 0.05, F=5e4)
        w = frontier.envelope_mask(x, loss).astype(float)
        fixed, free = frontier.fit_fixed(x, loss, w), frontier.fit_free(x, loss, w)
        assert frontier.select(fixed, free)[0]
        assert abs(free.gamma[0] - 0.3) < 0.02 and abs(free.L_inf[0] - 0.05) < 0.005


def test_envelope_is_running_minimum():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.5])
    loss = np.array([5.0, 4.0, 4.5, 3.0, 3.5, 3.9])
    m = frontier.envelope_mask(x, loss)[0]
    assert m.tolist() == [True, True, False, True, False, True]
    inc = np.array([[True, True, True, True, True, False]])
    assert frontier.envelope_mask(x, loss, inc)[0].tolist() == [True, True, False, True, False, False]


def test_backtest_small_on_exact_power_law():
    x, loss = _power_points(0, 0.0, F=5e4, noise=0.002)
    bt = frontier.backtest(x, loss, 0.2)
    assert bt["fixed"] < 0.01 and bt["n_heldout"] > 3


def test_frontier_matches_derived_gamma():
    g = make_group(n_runs=12, n_ckpt=40, noise=0.005, seed=1, L_inf=0.0, n_range=(1e4, 1e8))
    r = analyse_group(g, n_boot=20, seed=0)
    s = r.summary
    assert abs(s["gamma_c"]["value"] - s["gamma_c_derived"]["value"]) < 0.04
    assert abs(s["a"]["value"] + s["b"]["value"] - 1) < 1e-12
    for key in ("gamma_c", "gamma_h", "alpha", "beta", "a", "b", "L_inf", "A", "B", "gamma_c_derived"):
        q = s[key]
        assert q["ci_low"] <= q["ci_high"]


def _coverage(n_seeds, n_boot):
    hits = total = 0
    for s in range(n_seeds):
        g = make_group(n_runs=8, n_ckpt=15, noise=0.02, seed=100 + s)
        r = analyse_group(g, n_boot=n_boot, seed=s)
        for key in ("alpha", "beta"):
            q = r.summary[key]
            hits += q["ci_low"] <= TRUTH[key] <= q["ci_high"]
            total += 1
    return hits / total


def test_bootstrap_coverage_small():
    assert _coverage(5, 100) >= 0.8


@pytest.mark.slow
def test_bootstrap_coverage_50_repetitions():
    assert _coverage(50, 1000) >= 0.85


def test_parallel_groups_identical():
    from symscale.laws import analyse

    groups = {n: make_group(n, n_runs=4, n_ckpt=10, seed=i) for i, n in enumerate(("x", "y"))}
    seq = analyse(groups, n_boot=10, jobs=1)
    par = analyse(groups, n_boot=10, jobs=2)
    for n in groups:
        assert seq[n].summary["alpha"] == par[n].summary["alpha"]
        assert seq[n].summary["gamma_c"] == par[n].summary["gamma_c"]


def test_warnings_flag_unidentified_fits():
    """A data term that vanishes (loss flat in D) is reported, not silently turned into exponents."""
    flat_in_d = make_group("flat", n_runs=5, n_ckpt=12, noise=0.002, seed=3, B=0.0)
    w = analyse_group(flat_in_d, n_boot=20, seed=0).summary["warnings"]
    print("\n".join(w))
    assert any(x.startswith("B = 0") for x in w)
    clean = analyse_group(make_group("ok", n_runs=6, n_ckpt=15, seed=1), n_boot=20, seed=0).summary["warnings"]
    assert not any("vanished" in x or "outside its own" in x or "edge of the searched" in x for x in clean), clean
