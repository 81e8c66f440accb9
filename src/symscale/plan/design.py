"""``symscale plan design``: the next runs of a study that most shrink the intervals of α, β and a.

Steps (``docs/laws.md``, "Planning a study: plan design"):

1. read the study (a study YAML file, or a study directory with its ``study.yaml``); when the YAML file's
   study directory has no store yet (the study was never run), run a short pilot first (:mod:`.pilot`);
2. per architecture entry (laws group): the fitted law and its bootstrap replicates (:mod:`.source`), the
   noise of log losses around it (within-run σ and run offset τ, :func:`symscale.laws.bootstrap.noise_model`;
   τ is taken as at least σ: a handful of runs cannot estimate it -- with 3 widths the law's three N
   parameters absorb every run offset), and the design of the finished runs;
3. options: new widths on a half-octave grid from 1/8 of the smallest to 4× the largest existing width
   (parameter counts from the model registry; not where N barely grows with width, :data:`MIN_ELASTICITY`),
   each at token budgets on a log grid (4 per decade) up to one epoch of the training data; and each
   finished width trained again for at least :data:`LONGER` times its budget, replacing its runs (the fits
   keep only the longer run, whose curve contains the shorter one's; not the widths a ``tune:`` sweep is
   derived from, whose budget sets the sweep's); an option's checkpoints are the study's evaluation points
   that survive the fits' warm-up drop; its cost is ``seeds × 3κN·tokens`` FLOPs, or in hours ``seeds × tokens ×`` the
   seconds per atom of a timed probe of that width calibrated on the measured runs (:mod:`.probe`);
4. :func:`.search.greedy` spends the budget; the plan is printed and written as a study file that extends
   the study (:mod:`.extend`): ``symscale study next.yaml`` reuses every finished run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from . import fisher, search
from .probe import run_overhead

#: most parameter points (the point fit + bootstrap replicates) the criterion averages over
MAX_POINTS = 64
#: option grids: widths from 1/8 of the smallest to 4× the largest existing width in half octaves;
#: token budgets 4 per decade, the shortest 1/1000 of an epoch but at least MIN_BATCHES batches
WIDTH_RANGE = (1 / 8, 4.0)
TOKENS_PER_DECADE = 4
MIN_BATCHES = 20
#: a finished width is offered again only at token budgets at least this many times its current one
LONGER = 2.0
#: a new width is offered only where N grows at least this fast with width, d log N / d log w between w
#: and 2w: below it most parameters do not depend on the width (gemnet's fixed-size many-body maps give
#: widths 1-8 N = 11.6k-18.3k), so the runs move the loss at almost constant N and confound α
MIN_ELASTICITY = 0.5


def fitted_checkpoints(tokens: int, points: int, first_tokens: int | None, batch_tokens: int,
                       drop_fraction: float, drop_tokens: float = 0.0) -> tuple[float, ...]:
    """Token counts of a run's evaluations that the fits keep (as :mod:`symscale.train.run` schedules them:
    ``points`` log-spaced from ``first_tokens``, default max(budget/1000, one batch), minus the warm-up
    drop of :func:`symscale.laws.drop_warmup`)."""
    from ..train.metrics import evaluation_points

    first = first_tokens or max(1, tokens // 1000, batch_tokens)
    d = np.array(evaluation_points(int(tokens), points, first), dtype=float)
    return tuple(float(x) for x in d[(d >= drop_fraction * d[-1]) & (d >= drop_tokens)])


def token_grid(max_tokens: int, batch_tokens: int) -> list[int]:
    """Token budgets 4 per decade from max(max_tokens/1000, :data:`MIN_BATCHES` batches) to ``max_tokens``."""
    lo = min(max(max_tokens / 1000, MIN_BATCHES * batch_tokens), max_tokens)
    n = max(2, int(np.ceil(TOKENS_PER_DECADE * np.log10(max_tokens / lo))) + 1)
    return sorted({int(round(t)) for t in np.geomspace(lo, max_tokens, n)})


def width_grid(existing: list[int]) -> list[int]:
    """Widths not in ``existing``: half octaves of the smallest one, within :data:`WIDTH_RANGE` of them."""
    lo, hi = min(existing) * WIDTH_RANGE[0], max(existing) * WIDTH_RANGE[1]
    k = np.arange(np.floor(2 * np.log2(lo / min(existing))), np.ceil(2 * np.log2(hi / min(existing))) + 1)
    grid = {int(round(min(existing) * 2 ** (j / 2))) for j in k}
    return sorted(w for w in grid if w >= 1 and lo <= w <= hi and w not in existing)


def parameter_counts(family: str, widths: list[int], options: dict) -> dict[int, int]:
    """{width: N} of the widths the family builds with ``options`` (others left out); built on the meta
    device when the family allows it (shapes only), else for real."""
    import torch

    from ..errors import SymscaleError
    from ..models import build
    from ..models.registry import count_parameters

    out = {}
    for w in widths:
        try:
            try:
                with torch.device("meta"):
                    model = build(family, w, **options)
            except SymscaleError:
                raise
            except Exception:  # noqa: BLE001 - families that need real tensors to construct
                model = build(family, w, **options)
        except (SymscaleError, TypeError, ValueError, RuntimeError):
            continue
        out[w] = count_parameters(model)
    return out


def size_elasticity(family: str, sizes: dict[int, int], options: dict) -> dict[int, float]:
    """{width: log(N(2w) / N(w)) / log 2} for the widths of ``sizes`` (``inf`` where 2w does not build)."""
    doubled = parameter_counts(family, [2 * w for w in sizes], options)
    return {w: (np.log(doubled[2 * w] / n) / np.log(2.0) if 2 * w in doubled else np.inf) for w, n in sizes.items()}


def make_options(group: str, sizes: dict[int, float], tokens: list[int], checkpoints, cost) -> list[search.Option]:
    """Every (width, token budget) option of a group; ``checkpoints(T)`` and ``cost(N, T)`` as in step 3.
    Budgets whose every checkpoint the fits drop (``report: drop_tokens`` past the budget) are not offered."""
    kept = {T: tuple(checkpoints(T)) for T in tokens}
    return [search.Option(group, int(w), float(N), int(T), float(cost(N, T)), kept[T])
            for w, N in sorted(sizes.items()) for T in tokens if kept[T]]


def run_design(data) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(N per run, NaN-padded (runs, m) fitted checkpoint tokens, index of each row in ``data.run_names``) of
    a group's finished runs (runs with no fitted checkpoint left out)."""
    rows, Ns, which = [], [], []
    for r in range(data.n_runs):
        idx = np.flatnonzero(data.run == r)
        if idx.size:
            Ns.append(float(np.median(data.N[idx])))
            rows.append(tuple(data.D[idx]))
            which.append(r)
    return np.array(Ns), search.padded(rows), which


def longer_options(group: str, data, runs: dict[str, dict], sizes: dict[int, float], tokens: list[int],
                   checkpoints, cost, fixed: set[int]) -> list[search.Option]:
    """Options that train a finished width again for longer (step 3): for each width of ``sizes`` (not in
    ``fixed``) whose runs in ``data`` all completed, every budget of ``tokens`` at least :data:`LONGER` times
    the width's current budget; ``runs`` maps run ids to their store rows (``width``, ``budget_tokens``)."""
    from ..study.store import run_budget

    kept = {T: tuple(checkpoints(T)) for T in tokens}
    _, _, which = run_design(data)
    rows: dict[int, list[int]] = {}
    for k, r in enumerate(which):
        run = runs.get(data.run_names[r])
        if run is not None:
            rows.setdefault(int(run["width"]), []).append(k)
    out = []
    for w, ks in sorted(rows.items()):
        names = [data.run_names[which[k]] for k in ks]
        if w in fixed or w not in sizes or any(runs[n]["status"] != "completed" for n in names):
            continue
        done = max(max(run_budget(runs[n]), float(data.D[data.run == which[k]].max()))  # a run has >= 1 point
                   for n, k in zip(names, ks))
        out += [search.Option(group, w, float(sizes[w]), int(T), float(cost(sizes[w], T)), kept[T], tuple(ks))
                for T in tokens if T >= LONGER * done and kept[T]]
    return out


def group_model(law, data, copies: int, rng: np.random.Generator, max_points: int = MAX_POINTS) -> search.GroupModel:
    """The :class:`~.search.GroupModel` of one group from its :class:`~.source.GroupLaw` and checkpoints.

    Parameter points: the point fit and up to ``max_points − 1`` bootstrap replicates (finite ones, drawn
    with ``rng``). Noise: σ from the within-run residuals around the point fit, τ = max(τ̂, σ) (module
    docstring). Predicted widths calibrated on the fit's intervals of the identified α, β and a
    (:func:`~.search.calibration`).
    """
    from ..laws.bootstrap import noise_model

    theta = law.params()
    if law.replicates is not None:
        reps = law.replicates[np.all(np.isfinite(law.replicates), axis=1)]
        if reps.shape[0] > max_points - 1:
            reps = reps[np.sort(rng.choice(reps.shape[0], max_points - 1, replace=False))]
        theta = np.vstack([theta, reps])
    e, tau2 = noise_model(data, law.loss(data.N, data.D))
    sigma = float(np.sqrt(np.mean(e * e)))
    N, D, _ = run_design(data)
    return search.GroupModel(name=law.name, theta=theta, noise=fisher.Noise(sigma, max(float(np.sqrt(tau2)), sigma)),
                             N=N, D=D, loss_scale=float(np.median(data.loss)), copies=copies,
                             fitted=np.asarray(law.ci_widths, dtype=float))


@dataclass
class Budget:
    """The budget: ``kind`` ``"hours"`` (worker-hours of training) or ``"flops"``, and its ``value``."""

    kind: str
    value: float

    def cost_fn(self, law, copies: int, probed: dict | None = None, overhead: float = 0.0):
        """``cost(N, tokens)`` of one new width (all ``copies``) for the group of ``law``; in hours from
        ``probed`` ({width: (N, probe seconds per atom)}, :mod:`.probe`) calibrated on the measured runs, plus
        ``overhead`` worker seconds per run (:func:`.probe.run_overhead`)."""
        if self.kind == "flops":
            return lambda N, T: copies * 3.0 * law.kappa * N * T
        if law.throughput is None:
            raise DataError(f"group '{law.name}' has no measured throughput (no training wall time in its runs): "
                            "give the budget in FLOPs (e.g. --budget 3e15)")
        from .probe import ProbedCost

        return ProbedCost(probed, law.throughput["runs"], copies, overhead)


def format_cost(c: float, kind: str) -> str:
    """A cost in FLOPs, or in hours shown as seconds, minutes or hours."""
    if kind == "flops":
        return f"{c:.3g} FLOPs"
    return f"{c * 3600:.3g} s" if c < 1 / 60 else f"{c * 60:.3g} min" if c < 1 else f"{c:.3g} h"


def format_widths(before: np.ndarray, after: np.ndarray) -> str:
    """``alpha 0.5 -> 0.1, beta ..., a ...``; a width beyond the quantity's range (α, β: the searched range,
    a: [0, 1]) is shown as ``>`` that range (an interval is clipped to it)."""
    from ..laws.sumlaw import BOUNDS

    span = (BOUNDS[1] - BOUNDS[0],) * 2 + (1.0,)

    def one(w, cap):
        return f">{cap:.3g}" if w > cap else f"{w:.3g}"

    return ", ".join(f"{q} {one(b, c)} -> {one(a, c)}" for q, b, a, c in zip(("alpha", "beta", "a"), before, after, span))


def format_calibration(scale) -> str:
    """`` (Fisher widths x1.06/1.21/1 ...)``: the factors that calibrate a group's predicted widths on its
    fit's intervals (:func:`~.search.calibration`); empty when there are none."""
    if scale is None or np.allclose(scale, 1.0):
        return ""
    return (" (Fisher widths x" + "/".join(f"{x:.3g}" for x in scale)
            + " for alpha/beta/a: calibrated on the fit's intervals)")


def plan_counts(plan: search.Plan) -> str:
    """``3 new width(s), 1 longer run(s)``: the plan's new widths and its finished widths trained longer."""
    longer = sum(1 for o in plan.chosen if o.replaces)
    return f"{len(plan.chosen) - longer} new width(s), {longer} finished width(s) trained longer"


def format_reach(plan: search.Plan, fmt) -> str:
    """The target's bookkeeping: the groups funded first (with what reaching the target alone costs them),
    those already at it, and those it is out of reach for within the budget."""
    parts = []
    if plan.funded:
        parts.append("funded first " + ", ".join(f"{g} ({fmt(plan.reach[g])})" for g in plan.funded))
    done = [g for g, c in plan.reach.items() if c == 0.0]
    if done:
        parts.append("already at it " + ", ".join(done))
    short = [g for g, c in plan.reach.items() if g not in plan.funded and c > 0.0]
    if short:
        parts.append("not reachable within the budget (alone, or after the cheaper groups) "
                     + ", ".join(f"{g}" + ("" if not np.isfinite(plan.reach[g]) else f" ({fmt(plan.reach[g])})")
                                 for g in short))
    return "; ".join(parts) or "none"


def format_chance(plan: search.Plan) -> str:
    """The chance of each group's α, β and a widths all meeting the target, before -> after the plan
    (:meth:`.search._GroupState.chance`)."""
    return ", ".join(f"{g} {b:.2f} -> {a:.2f}" for g, (b, a) in plan.chance.items())


def format_plan(plan: search.Plan, budget: Budget, groups: list[str]) -> str:
    """The printed plan: one line per new width or longer run (``evals``: its evaluations that the fits keep),
    then the predicted widths now -> after per group."""
    fmt = lambda c: format_cost(c, budget.kind)  # noqa: E731
    lines = [f"plan: {plan_counts(plan)}, {fmt(plan.spent)} of {fmt(budget.value)}",
             f"{'group':<16} {'width':>6} {'N':>12} {'tokens':>12} {'evals':>6} {'cost':>14}"]
    for o in plan.chosen:
        lines.append(f"{o.group:<16} {o.width:>6} {o.N:>12,.0f} {o.tokens:>12,} {len(o.D):>6} {fmt(o.cost):>14}"
                     + ("  longer: replaces its runs" if o.replaces else ""))
    lines.append("predicted 95% interval widths (median over the fit and its bootstrap replicates), now -> after:")
    lines += [f"  {g}: {format_widths(plan.before[g], plan.after[g])}{format_calibration(plan.calibration.get(g))}"
              for g in groups]
    if plan.reach:
        lines.append("target width: " + format_reach(plan, fmt))
        lines.append(f"chance of meeting it (each width off by a log-normal factor of spread {search.PASS_SPREAD:g}), "
                     f"now -> after: {format_chance(plan)}")
    if plan.spent < 0.99 * budget.value:
        lines.append(f"note: {fmt(budget.value - plan.spent)} left: no other run of the grids (widths up to "
                     f"{WIDTH_RANGE[1]:g}x the largest, finished widths {LONGER:g}x longer, at most one epoch) fits it "
                     "and shrinks the predicted widths" + (" still above the target" if plan.reach else ""))
    return "\n".join(lines)


#: The study planned when ``plan design`` is given no STUDY: the symmetry staircase on the embedded
#: GFN2-xTB data (the quickstart's families and widths), in ``runs/plan``; its pilot runs first, with a
#: learning-rate sweep (on these data egnn's best rate is ~6x the quickstart's 5e-3: docs/studies.md).
DEFAULT_STUDY = {
    "name": "plan", "out": "runs/plan", "data": {"embedded": True, "cutoff": 5.0, "val_size": 256},
    "epochs": 1, "batch_size": 16, "evaluation": {"points": 20},
    "optimizer": {"name": "schedulefree"}, "mup": True, "seeds": [0], "device": "cpu",
    "tune": {"lrs": [3.0e-3, 1.0e-2, 3.0e-2], "fractions": [0.25], "extend": 1},
    "architectures": [{"family": "mpnn", "widths": [16, 32, 64, 128]},
                      {"family": "gemnet", "widths": [8, 16, 32]},
                      {"family": "egnn", "widths": [16, 32, 64]},
                      {"family": "esen", "widths": [4, 8, 16], "options": {"lmax": 2, "num_layers": 2}}],
}


def default_study(extend):
    """:data:`DEFAULT_STUDY`, or the study already in its directory (a later ``plan design`` continues it)."""
    from ..study.schema import parse_study

    cfg = parse_study(DEFAULT_STUDY, source="plan design (default study)")
    if (cfg.study_dir() / "study.db").is_file() and (cfg.study_dir() / "study.yaml").is_file():
        return extend.read_study(cfg.study_dir())
    return extend.Study(raw=dict(DEFAULT_STUDY), cfg=cfg, dir=cfg.study_dir(), source="plan design (default study)")


def cmd_design(args) -> int:
    """``symscale plan design STUDY --budget B [--out next.yaml] [--seed S]``."""
    from . import extend, pilot
    from .cli import parse_budget

    kind, value = parse_budget(args.budget)
    budget = Budget(kind, value)
    target = getattr(args, "target_width", None) or 0.0
    if not (np.isfinite(target) and 0.0 <= target):
        raise ConfigError(f"--target-width: expected an interval width >= 0, got {target:g}")
    study = extend.read_study(args.study) if args.study is not None else default_study(extend)
    out = extend.check_out(args.out)
    remaining = budget.value
    if not study.has_runs():
        pilot_file = extend.check_out(pilot.pilot_path(out), flag="--out (its pilot study)")
        study, spent = pilot.run_pilot(study, budget, pilot_file, MIN_BATCHES)
        remaining -= spent
        print(f"pilot: {format_cost(spent, kind)} of {format_cost(value, kind)} spent", flush=True)
        if remaining <= 0:
            raise DataError(f"plan design: the pilot spent the whole budget ({format_cost(spent, kind)}); "
                            "nothing left to plan")
    have, _ = study.token_limits()
    data_atoms = getattr(args, "data_atoms", None)
    if data_atoms is not None and not (np.isfinite(data_atoms) and data_atoms >= 1):
        raise ConfigError(f"--data-atoms: expected a number of atoms >= 1, got {data_atoms:g}")
    what_if = data_atoms is not None and int(data_atoms) > have
    inputs = gather(study, budget, np.random.default_rng(args.seed),
                    max_tokens=int(data_atoms) if data_atoms is not None else None)
    plan = search.greedy([g["model"] for g in inputs], [o for g in inputs for o in g["options"]], remaining,
                         target=target)
    print(format_plan(plan, Budget(kind, remaining), [g["model"].name for g in inputs]))
    if what_if:
        print(f"what-if: planned for a training split of {int(data_atoms):,} atoms; {study.data_path()} holds "
              f"{have:,}: nothing written (generate more data, then plan again to run it)")
        return 0
    path = extend.write_extension(study, plan, out, header=f"budget {args.budget}: {plan_counts(plan)} "
                                  f"for {format_cost(plan.spent, kind)} of {format_cost(remaining, kind)}")
    print(f"study file: {path} (run it with `symscale study {path}`: finished runs are reused)")
    return 0


def gather(study, budget: Budget, rng: np.random.Generator, max_tokens: int | None = None) -> list[dict]:
    """Per architecture entry with a fitted law: its :class:`~.search.GroupModel` and options (token budgets
    up to ``max_tokens``, default one epoch of the study's training split)."""
    from ..study.store import Store, load_groups
    from .source import group_laws, load_fit

    cfg = study.cfg
    laws = group_laws(load_fit(study.dir), where=str(study.dir))
    data = cfg.report.drop_warmup(load_groups(study.dir, study.run_ids()))
    with Store(study.dir, create=False) as store:
        runs = {r["id"]: r for r in store.runs(study.run_ids())}
    copies = len(cfg.seeds)
    epoch, atoms = study.token_limits()
    max_tokens = max_tokens or epoch
    ev = cfg.evaluation
    out = []
    for arch in cfg.architectures:
        name = arch.group()
        if name not in laws or name not in data:
            print(f"warning: {name}: no fitted sum law L(N, D) yet (it needs runs at 2 or more widths and more "
                  "distinct (N, D) than the law has parameters); nothing planned for it", file=sys.stderr)
            continue
        law = laws[name]
        batch_tokens = max(1, int(round((arch.batch_size or cfg.batch_size) * atoms)))
        tokens = token_grid(max_tokens, batch_tokens)
        model_options = {"cutoff": cfg.data.cutoff, **arch.options}
        sizes = parameter_counts(arch.family, width_grid(arch.widths), model_options)
        slope = size_elasticity(arch.family, sizes, model_options)
        flat = sorted(w for w in sizes if slope[w] < MIN_ELASTICITY)
        if flat:
            print(f"{name}: widths {', '.join(map(str, flat))} not offered: N barely grows with width there "
                  f"(d log N / d log w < {MIN_ELASTICITY:g}: parameters that do not depend on the width)",
                  file=sys.stderr)
            sizes = {w: n for w, n in sizes.items() if w not in flat}
        probed = None
        if budget.kind == "hours":  # time every width the options and the finished runs use
            from ..models.flops import reference_batch
            from .probe import probe_widths

            print(f"{name}: timing training steps at {len(sizes) + len(arch.widths)} widths", file=sys.stderr,
                  flush=True)
            probed = probe_widths(arch.family, sorted(set(sizes) | set(arch.widths)), model_options,
                                  reference_batch(cutoff=cfg.data.cutoff))
        ckpts = lambda T: fitted_checkpoints(T, ev.points, ev.first_tokens, batch_tokens,  # noqa: E731
                                             cfg.report.drop_fraction, cfg.report.drop_tokens)
        mine = [runs[r["run"]] for r in (law.throughput or {}).get("runs", []) if r["run"] in runs]
        cost = budget.cost_fn(law, copies, probed, run_overhead(mine))
        fixed = {arch.base_width or arch.widths[0], arch.check_width} if cfg.tune is not None else set()
        finished = parameter_counts(arch.family, arch.widths, model_options)
        slope = size_elasticity(arch.family, finished, model_options)
        finished = {w: n for w, n in finished.items() if slope[w] >= MIN_ELASTICITY}
        options = make_options(name, sizes, tokens, ckpts, cost) + longer_options(
            name, data[name], runs, finished, tokens, ckpts, cost, fixed)
        out.append({"model": group_model(law, data[name], copies, rng), "options": options})
    if not out:
        raise DataError(f"{study.dir}: no architecture entry has a fitted sum law to plan from")
    return out
