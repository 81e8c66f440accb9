"""The reductions that make fits scale with the data are exact, and memory does not grow with replicates."""

import tracemalloc

import numpy as np
import pytest

from symscale.laws import frontier, load_csv, solvers, sumlaw
from symscale.laws.bootstrap import run_counts
from symscale.laws.solvers import huber
from synth import make_group, write_csv


@pytest.fixture(scope="module")
def group():
    return make_group("g", n_runs=7, n_ckpt=40, noise=0.02, seed=8)


def test_top_candidates_equal_exhaustive_scoring(group):
    """Pruned scoring returns the same best grid starts as scoring every candidate on every point."""
    g = group
    prob = sumlaw._Problem(g.N, g.D, g.loss)
    grid = sumlaw.ALPHA_GRID
    coef, ls_obj = prob.grid(grid, grid, np.ones((1, 1)), np.zeros(g.n_points, dtype=np.intp))
    aa, bb = np.meshgrid(grid, grid, indexing="ij")
    cand = np.concatenate([coef[0].reshape(-1, 3), aa.reshape(-1, 1), bb.reshape(-1, 1)], axis=1)
    full = np.sum(huber(np.log(np.maximum(prob.model(cand, jac=False), 1e-300)) - prob.logy, 1e-3), axis=1)
    best, obj = sumlaw.top_candidates(prob, coef[0], ls_obj[0], grid, grid, 1e-3, 5)
    assert list(best) == list(np.argsort(full, kind="stable")[:5])
    assert np.allclose(obj, full[best], rtol=1e-12, atol=0)


def test_per_run_sums_equal_per_point_sums(group):
    """Grid normal equations from per-run sums (counts @ stats) equal those from per-point weights."""
    g = group
    prob = sumlaw._Problem(g.N, g.D, g.loss)
    counts = run_counts(g.n_runs, 6, 3).astype(float)
    alphas = betas = np.linspace(0.2, 0.7, 5)
    c_run, o_run = prob.grid(alphas, betas, counts, g.run)
    c_pt, o_pt = prob.grid(alphas, betas, counts[:, g.run], np.arange(g.n_points))
    assert np.allclose(c_run, c_pt, rtol=1e-9, atol=1e-12) and np.allclose(o_run, o_pt, rtol=1e-9, atol=1e-15)


def test_loss_scaling_of_the_weights_is_exact(group):
    """Weights (2^k/L)² instead of 1/L² give bit-identical NNLS coefficients."""
    g = group
    loss = g.loss * 2.0 ** -50
    prob = sumlaw._Problem(g.N, g.D, loss)
    k = np.log2(solvers.power_of_two_scale(loss))
    assert k == round(k) and abs(k - np.mean(np.log2(loss))) <= 0.5 and prob.om_scale == 2.0 ** (2 * k)
    alphas = betas = np.linspace(0.2, 0.7, 5)
    cell = np.zeros(g.n_points, dtype=np.intp)
    scaled, _ = prob.grid(alphas, betas, np.ones((1, 1)), cell)
    prob.om_scale = 1.0
    plain, _ = prob.grid(alphas, betas, np.ones((1, 1)), cell)
    assert np.array_equal(scaled, plain)


def test_structured_normal_equations_match_the_jacobian(group):
    g = group
    order = np.argsort(g.N, kind="stable")
    prob = sumlaw._Problem(g.N, g.D, g.loss, order=order)
    rng = np.random.default_rng(0)
    theta = np.column_stack([rng.uniform(0, 0.1, 4), rng.uniform(1, 50, 4), rng.uniform(1, 500, 4),
                             rng.uniform(0.1, 1, 4), rng.uniform(0.1, 1, 4)])
    pred, J = prob.model(theta)
    pred2, normal = prob.model_normal(theta)
    w, t = rng.normal(size=pred.shape), rng.uniform(size=pred.shape)
    grad, hess = normal(w, t)
    assert np.array_equal(pred, pred2)
    assert np.allclose(grad, np.einsum("bn,bnk->bk", w, J), rtol=1e-10, atol=1e-10 * np.abs(grad).max())
    assert np.allclose(hess, np.einsum("bn,bnk,bnl->bkl", t, J, J), rtol=1e-10, atol=1e-12 * np.abs(hess).max())


def test_blocked_refits_agree_whatever_the_block_size(group, monkeypatch):
    """Sum-law replicates are refitted independently: blocks of any size give the same fits, to rounding (a
    reduction's SIMD path depends on the array's shape: on an AVX-512 EPYC the objectives differed in the last
    bits between blocks of 1 and of CHUNK replicates)."""
    g = group
    full = sumlaw.fit(g.N, g.D, g.loss)
    counts = run_counts(g.n_runs, 12, 1).astype(float)
    big = sumlaw.fit_batched(g.N, g.D, g.loss, counts, full, cell=g.run)
    monkeypatch.setattr(sumlaw, "CHUNK", 1)
    small = sumlaw.fit_batched(g.N, g.D, g.loss, counts, full, cell=g.run)
    for key in ("alpha", "beta", "L_inf", "A", "B", "objective"):
        assert np.allclose(getattr(big, key), getattr(small, key), rtol=1e-10, atol=0), key


@pytest.mark.parametrize("chunk", [1, solvers.CHUNK])
def test_frontier_replicates_equal_fits_on_all_points(group, monkeypatch, chunk):
    """Replicate frontier fits from per-run corners, in blocks, equal fits of envelopes over all points."""
    g = group
    counts = run_counts(g.n_runs, 15, 2)
    x0 = float(np.exp(np.mean(np.log(g.C))))
    mask = frontier.envelope_mask(g.C, g.loss, counts[:, g.run] > 0)
    bx, bl, bw = frontier.compact(g.C, g.loss, mask)
    ref = frontier.fit_fixed(bx, bl, bw), frontier.fit_free(bx, bl, bw, x0=x0)
    monkeypatch.setattr(frontier, "CHUNK", chunk)
    got = frontier.fit_replicates(g.C, g.loss, g.run, counts, x0)
    for a, b in zip(ref, got):
        assert np.array_equal(a.n, b.n)
        for key in ("gamma", "F", "L_inf", "rss"):
            assert np.allclose(getattr(a, key), getattr(b, key), rtol=1e-9, atol=1e-14), key


def test_envelopes_from_run_corners_are_exact():
    """Replicate envelopes computed on the per-run corners equal envelopes over all checkpoints."""
    rng = np.random.default_rng(2)
    n_runs = 9
    run = rng.integers(0, n_runs, 400)
    x = rng.choice(np.geomspace(1e10, 1e14, 60), 400)          # shared budgets: ties across runs
    loss = np.round(rng.uniform(0.1, 1.0, 400) * (x / 1e10) ** -0.2, 2)   # ties in loss too
    counts = run_counts(n_runs, 50, 0)
    ref = frontier.envelope_mask(x, loss, counts[:, run] > 0)
    cand = frontier.run_corners(x, loss, run)
    assert cand.size < x.size
    got = np.zeros_like(ref)
    got[:, cand] = frontier.envelope_mask(x[cand], loss[cand], counts[:, run[cand]] > 0)
    assert np.array_equal(got, ref)


def test_csv_reading_memory_per_row(tmp_path):
    """Reading keeps typed columns, not a Python object per row (the previous reader peaked at ~430 B/row)."""
    g = make_group("g", n_runs=10, n_ckpt=2000, seed=0)
    path = write_csv(tmp_path / "big.csv", [g])
    tracemalloc.start()
    try:
        load_csv(path, group_col="arch", run_col="run", time_col="time_s")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / g.n_points < 200


def test_bootstrap_memory_does_not_grow_with_replicates():
    """Peak memory of the bootstrap refits is the same for 20 and 160 replicates (blocks of CHUNK pairs)."""
    g = make_group("g", n_runs=10, n_ckpt=2000, seed=0)
    full = sumlaw.fit(g.N, g.D, g.loss)
    peaks = []
    for n_boot in (20, 160):
        counts = run_counts(g.n_runs, n_boot, 0).astype(float)
        tracemalloc.start()
        try:
            sumlaw.fit_batched(g.N, g.D, g.loss, counts, full, cell=g.run)
            frontier.fit_replicates(g.C, g.loss, g.run, counts, 1e15)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.25 * peaks[0]
    assert peaks[1] < 40 * solvers.CHUNK * 8     # a few dozen blocks, not replicates × points
