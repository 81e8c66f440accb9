"""Figures of the fitted laws (matplotlib, Agg canvas, no global pyplot state). Each figure is written as PNG
and SVG, atomically (temporary name, then rename).

- ``frontiers``: every group's checkpoints, frontier corners and L∞ = 0 fit with its 95 % bootstrap band, and
  the free-L∞ fit dashed; FLOPs panel and, when times are known, wall-time panel;
- ``curves_<group>``: learning curves (loss vs C) per run coloured by log N, with the compute frontier fit;
- ``sumlaw_<group>``: L(N, D) against the data (loss vs D per run) and log residuals;
- ``allocation``: N*(C) and D*(C) with 95 % bands;
- ``exponents``: γ_c, γ_h, α, β and derived γ with their intervals, across groups.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from ..atomic import atomic_path
from . import allocation
from .frontier import frontier_points
from .bootstrap import FrontierResult, GroupAnalysis, boot_samples

COLORS = ["#1b6ca8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#5c5c5c", "#8ab17d", "#b56576"]


def safe_name(name: str) -> str:
    """A file-name-safe version of a group name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "group"


def _plain(v: float, _pos=None) -> str:
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


_PLAIN = FuncFormatter(_plain)


def _fast_ticks(fig: Figure) -> None:
    """Plain-text major tick labels (no mathtext) and no minor ticks on log axes: drawing cost drops ~10x."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                lo, hi = axis.get_view_interval()
                span = np.log10(hi / lo) if lo > 0 and hi > lo else 10.0
                # short spans (a loss that falls by 30 %) would show no decade tick at all: label 1-2-5 or 1..9
                if span < 0.7:  # under a factor 5: evenly spaced plain numbers read best
                    axis.set_major_locator(MaxNLocator(nbins=6))
                    axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.4g}"))
                else:
                    subs = (1.0,) if span >= 2.0 else (1.0, 2.0, 5.0)
                    axis.set_major_locator(LogLocator(subs=subs, numticks=12))
                    axis.set_major_formatter(_PLAIN)
                axis.set_minor_locator(NullLocator())


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    FigureCanvasAgg(fig)
    _fast_ticks(fig)
    fig.tight_layout()
    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        for ext in ("png", "svg"):
            final = out_dir / f"{stem}.{ext}"
            with atomic_path(final, fsync=False) as tmp:
                fig.savefig(tmp, format=ext, dpi=100)
            paths.append(final)
    return paths


def _band(boot, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if boot is None:
        return None
    pred = boot.predict(grid)[boot.n >= 3]
    if pred.shape[0] < 2:
        return None
    return np.nanpercentile(pred, 2.5, axis=0), np.nanpercentile(pred, 97.5, axis=0)


def _missing(r: GroupAnalysis) -> dict[str, str]:
    """Keys of the quantities that the data of ``r`` do not identify (see :mod:`.checks`)."""
    return r.ident.missing if r.ident is not None else {}


def _frontier_panel(ax, fr: FrontierResult, color: str, label: str, missing: dict, prefix: str) -> None:
    """Checkpoints, corners and the fitted laws that are identified (a law with too few corners is not drawn)."""
    x, loss = fr.x, fr.loss
    ax.scatter(x, loss, s=4, color=color, alpha=0.15, linewidths=0)
    fx, fy = frontier_points(x, loss)
    ax.plot(fx, fy, "o", ms=3, color=color)
    grid = np.geomspace(x.min(), x.max(), 120)
    if f"{prefix}.fixed" in missing:
        ax.plot([], [], "o", ms=3, color=color, label=f"{label}: γ not identified")
        return
    g = fr.fixed.gamma[0]
    ax.plot(grid, fr.fixed.predict(grid)[0], color=color, lw=1.6, label=f"{label}: γ={g:.3f}")
    if f"{prefix}.free" not in missing:
        ax.plot(grid, fr.free.predict(grid)[0], color=color, lw=1.0, ls="--")
    band = _band(fr.boot_fixed, grid)
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color=color, alpha=0.2, lw=0)


def plot_frontiers(results: dict[str, GroupAnalysis], out_dir: Path) -> list[Path]:
    has_h = any(r.front_h is not None for r in results.values())
    fig = Figure(figsize=(11 if has_h else 6, 4.5))
    axes = fig.subplots(1, 2 if has_h else 1, squeeze=False)[0]
    for i, (name, r) in enumerate(results.items()):
        color = COLORS[i % len(COLORS)]
        _frontier_panel(axes[0], r.front_c, color, name, _missing(r), "frontier_c")
        if has_h and r.front_h is not None:
            _frontier_panel(axes[1], r.front_h, color, name, _missing(r), "frontier_h")
    axes[0].set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="loss",
                title="Compute frontier (solid: L∞=0 fit ± 95% band; dashed: free L∞)")
    if has_h:
        axes[1].set(xscale="log", yscale="log", xlabel="wall time H (s)", ylabel="loss", title="Time frontier")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, "frontiers")


def _run_colors(r: GroupAnalysis):
    from matplotlib import colormaps
    n_run = np.array([np.median(r.data.N[r.data.run == i]) for i in range(r.data.n_runs)])
    ln = np.log(n_run)
    span = np.ptp(ln) or 1.0
    cmap = colormaps["viridis"]
    return [cmap(0.9 * (v - ln.min()) / span) for v in ln], n_run


def plot_curves(r: GroupAnalysis, out_dir: Path) -> list[Path]:
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    colors, n_run = _run_colors(r)
    d = r.data
    for i in range(d.n_runs):
        m = d.run == i
        order = np.argsort(d.C[m])
        ax.plot(d.C[m][order], d.loss[m][order], color=colors[i], lw=1.2, label=f"N={n_run[i]:.3g}")
    if "frontier_c.fixed" not in _missing(r):
        grid = np.geomspace(d.C.min(), d.C.max(), 120)
        ax.plot(grid, r.front_c.fixed.predict(grid)[0], "k--", lw=1.4, label="frontier fit")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="loss", title=f"{d.name}: learning curves")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, f"curves_{safe_name(d.name)}")


def plot_sumlaw(r: GroupAnalysis, out_dir: Path) -> list[Path]:
    """L(N, D) against the data and the log residuals; only the data when the sum law is not fitted."""
    fig = Figure(figsize=(11, 4.5))
    ax, axr = fig.subplots(1, 2)
    colors, _ = _run_colors(r)
    d = r.data
    fitted = r.ident is None or r.ident.sumlaw_fitted
    pred = r.fit.predict(d.N, d.D)[0] if fitted else None
    for i in range(d.n_runs):
        m = d.run == i
        order = np.argsort(d.D[m])
        ax.plot(d.D[m][order], d.loss[m][order], "o", ms=2.5, color=colors[i])
        if fitted:
            dd = np.geomspace(d.D[m].min(), d.D[m].max(), 60)
            ax.plot(dd, r.fit.predict(np.full_like(dd, np.median(d.N[m])), dd)[0], color=colors[i], lw=1.2)
            axr.plot(d.D[m], np.log(d.loss[m] / pred[m]), "o", ms=2.5, color=colors[i])
    p = r.fit.row()
    if fitted:
        unknown = [k for k in ("alpha", "beta", "L_inf") if k in _missing(r)]
        title = (f"{d.name}: L = {p['L_inf']:.3g} + {p['A']:.3g}·N^-{p['alpha']:.3f} + "
                 f"{p['B']:.3g}·D^-{p['beta']:.3f}" + (f" ({', '.join(unknown)} not identified)" if unknown else ""))
    else:
        title = f"{d.name}: sum law not fitted (too few distinct points)"
    ax.set(xscale="log", yscale="log", xlabel="tokens D (atoms)", ylabel="loss", title=title)
    axr.axhline(0.0, color="k", lw=0.8)
    axr.set(xscale="log", xlabel="tokens D (atoms)", ylabel="log(observed / fit)", title="residuals")
    if not fitted:
        axr.set_xlim(d.D.min() * 0.9, d.D.max() * 1.1)
    for a in (ax, axr):
        a.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, f"sumlaw_{safe_name(d.name)}")


def plot_allocation(results: dict[str, GroupAnalysis], out_dir: Path) -> list[Path]:
    fig = Figure(figsize=(11, 4.5))
    axn, axd = fig.subplots(1, 2)
    undefined = []
    for i, (name, r) in enumerate(results.items()):
        color = COLORS[i % len(COLORS)]
        f, b, k = r.fit, r.boot, r.data.kappa
        grid = np.geomspace(r.data.C.min(), r.data.C.max() * 100, 100)
        if not (f.A > 0 and f.B > 0) or "G" in _missing(r):  # a vanished or unidentified term: no optimum
            undefined.append(name)
            continue
        for ax, fn in ((axn, allocation.optimal_n), (axd, allocation.optimal_d)):
            ax.plot(grid, fn(grid, k, f.A, f.B, f.alpha, f.beta)[0], color=color, label=name)
            if b is not None and b.alpha.size > 1:
                s = boot_samples(r)      # replicates whose runs do not identify a parameter are NaN
                reps = fn(grid, k, s["A"], s["B"], s["alpha"], s["beta"])
                ax.fill_between(grid, np.nanpercentile(reps, 2.5, axis=0), np.nanpercentile(reps, 97.5, axis=0),
                                color=color, alpha=0.2, lw=0)
    if undefined:
        note = "no optimum (A or B = 0, or not identified): " + ", ".join(undefined)
        for ax in (axn, axd):
            ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=8, color="0.3")
    if len(undefined) == len(results):
        for ax in (axn, axd):  # nothing positive to put on log axes
            ax.set_xticks([])
            ax.set_yticks([])
        axn.set(xlabel="compute C (FLOPs)", ylabel="N* (parameters)", title="Compute-optimal model size")
        axd.set(xlabel="compute C (FLOPs)", ylabel="D* (atoms)", title="Compute-optimal data")
        return _save(fig, out_dir, "allocation")
    axn.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N* (parameters)",
            title="Compute-optimal model size")
    axd.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="D* (atoms)",
            title="Compute-optimal data")
    for ax in (axn, axd):
        ax.legend(fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, "allocation")


def plot_exponents(results: dict[str, GroupAnalysis], out_dir: Path) -> list[Path]:
    keys = ["gamma_c", "gamma_h", "alpha", "beta", "gamma_c_derived"]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    width = 0.8 / max(len(results), 1)
    for i, (name, r) in enumerate(results.items()):
        for j, key in enumerate(keys):
            q = r.summary.get(key)
            if not q:
                continue
            pos = j + (i - (len(results) - 1) / 2) * width
            lo = max(q["value"] - q["ci_low"], 0.0) if np.isfinite(q["ci_low"]) else 0.0
            hi = max(q["ci_high"] - q["value"], 0.0) if np.isfinite(q["ci_high"]) else 0.0
            ok = q.get("identified", True)     # not identified: open marker, dashed bar (diagnostic only)
            bar = ax.errorbar([pos], [q["value"]], yerr=[[lo], [hi]], fmt="o", color=COLORS[i % len(COLORS)],
                              capsize=3, label=name if j == 0 else None, mfc=None if ok else "none")
            if not ok:
                bar[2][0].set_linestyle("--")
    ax.set_xticks(range(len(keys)), ["γ_c", "γ_h", "α", "β", "γ derived"])
    ax.set(ylabel="exponent (95% CI)", title="Exponents across groups (open marker: not identified)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.25)
    return _save(fig, out_dir, "exponents")


def write_all(results: dict[str, GroupAnalysis], out_dir: str | Path) -> list[Path]:
    """Write every figure into ``out_dir`` (created); returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = plot_frontiers(results, out_dir) + plot_allocation(results, out_dir) + plot_exponents(results, out_dir)
    for r in results.values():
        paths += plot_curves(r, out_dir) + plot_sumlaw(r, out_dir)
    return paths
