"""The learning-rate sweep of a study with ``tune:`` (stage 0 of :func:`symscale.study.driver.run_study`).

Exponents fitted to runs at a poor learning rate are biased, so a study can choose each architecture's
learning rate first: every architecture trains once per value of the grid (:meth:`TuneSpec.grid
<symscale.study.schema.TuneSpec.grid>`) at its μP base width, for ``max(fractions)`` of that width's budget,
on the study's first seed. The value with the lowest validation loss (the best evaluation up to the end of
the sweep run) becomes the architecture's ``optimizer.lr`` at every width, which μP then scales for the
hidden matrices (``lr · base_width / width``). A run that diverged or failed ranks below every run that
completed, whatever its loss before diverging; ties go to the smaller learning rate, so the choice is
deterministic and a study invoked again with the same sweep results gets the same main runs (their ids
include the learning rate).

Sweep runs are ordinary runs of the store and of ``<study>/runs/`` with the laws group ``<group>@tune``
(:data:`TUNE_SUFFIX`), which no fit reads; they are reused when the study runs again. With
``check_transfer`` the widest width (or the entry's ``transfer_width``) is swept as well: μP transfer holds when that
width's best value lies within one grid step of the base width's. Either way the base width's value is used
(μP's contract); a group where transfer fails is flagged in ``tune.json``, the report and on stderr.
With ``extend`` (:class:`TuneSpec <symscale.study.schema.TuneSpec>`), a group whose best value is at an end of
its grid sweeps one more value past it (at the base width and the transfer width alike, so both sweeps keep
one grid) and chooses again, up to ``extend`` times; the swept values are reused like the others.

The choice, the sweep table (loss at every fraction, status) and the transfer verdicts are written to
``<study>/tune.json`` (:func:`tune_document`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..atomic import write_text
from ..errors import ConfigError
from ..outputs import stamp
from ..train.config import parse_config

#: Laws group suffix of the sweep runs: ``mpnn`` sweeps as ``mpnn@tune`` (``@`` is never in a study's groups).
TUNE_SUFFIX = "@tune"
#: The tuning record in the study directory.
TUNE_NAME = "tune.json"


def is_tune_group(group: str) -> bool:
    """Whether ``group`` holds sweep runs (left out of every laws fit)."""
    return group.endswith(TUNE_SUFFIX)


def plan_sweep(cfg, plan: list, study_dir: Path, source: str = "study",
               extra: dict[str, list[float]] | None = None) -> list:
    """The sweep runs of study ``cfg`` as :class:`~symscale.study.schema.PlannedRun` objects.

    They are derived from ``plan`` (the study's runs, :func:`~symscale.study.schema.expand`): a sweep run at
    width ``w`` is the study's run at ``w`` (its smallest width's when ``base_width`` is not one of the study's
    widths) with ``optimizer.lr`` set to a grid value, the budget scaled by ``max(fractions)`` and the group
    ``<group>@tune``. Its id, ``<group>-tune-w<w>-lr<lr>-s<seed>-<hash>``, hashes that configuration (output
    directory and data path excluded), so it is stable under edits that leave the sweep alone. ``extra``:
    per group, values swept beyond the grid (``extend``).
    """
    spec = cfg.tune
    f_max = max(spec.fractions)
    seed = cfg.seeds[0]
    runs = []
    for arch in cfg.architectures:
        group = arch.group()
        by_width = {p.width: p for p in plan if p.group == group and p.seed == seed}
        base = arch.base_width or arch.widths[0]
        widths = [base] + ([arch.check_width] if spec.check_transfer and arch.check_width != base else [])
        for width in widths:
            template = by_width.get(width) or by_width[arch.widths[0]]
            grid = spec.grid()
            for lr in grid + [x for x in (extra or {}).get(group, []) if x not in grid]:
                runs.append(_sweep_run(template, width, lr, f_max, study_dir, source))
    return runs


def _sweep_run(template, width: int, lr: float, f_max: float, study_dir: Path, source: str):
    from .schema import PlannedRun

    cfg = template.config.model_dump(mode="json")
    cfg["model"]["width"] = width
    cfg["optimizer"]["lr"] = lr
    if cfg["tokens"] is not None:
        cfg["tokens"] = max(1, round(cfg["tokens"] * f_max))
    else:
        cfg["epochs"] = (cfg["epochs"] or 1.0) * f_max
    cfg["group"] = template.group + TUNE_SUFFIX
    ident = {k: v for k, v in cfg.items() if k not in ("name", "out")}
    ident["data"] = {k: v for k, v in cfg["data"].items() if k != "path"}
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    run_id = f"{template.group}-tune-w{width}-lr{lr:.3g}-s{template.seed}-{digest}"
    run_dir = Path(study_dir) / "runs" / run_id
    config = parse_config({**cfg, "name": run_id, "out": str(run_dir)}, source=f"{source}: tune")
    return PlannedRun(run_id, cfg["group"], template.family, width, template.seed, config, run_dir)


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Trial:
    """One sweep run: its learning rate, status and best validation loss up to each fraction (``None``:
    no finite evaluation by then)."""

    lr: float
    run_id: str
    status: str
    losses: list[float | None]
    error: str | None = None

    def score(self, k: int) -> tuple:
        """Sort key at fraction index ``k``: completed runs with a loss first, by loss, then by lr."""
        loss = self.losses[k]
        ok = self.status == "completed" and loss is not None
        return (0 if ok else 1, loss if ok else math.inf, self.lr)


@dataclass
class Sweep:
    """The trials of one group at one width, ascending in learning rate."""

    width: int
    trials: list[Trial]

    def ranking(self, k: int = -1) -> list[Trial]:
        """Trials from best to worst at fraction index ``k`` (default: the largest fraction)."""
        return sorted(self.trials, key=lambda t: t.score(k))

    def best(self, k: int = -1) -> Trial | None:
        """The best trial at fraction index ``k``, or ``None`` when no trial completed with a loss."""
        top = self.ranking(k)[0] if self.trials else None
        return top if top is not None and top.score(k)[0] == 0 else None


@dataclass
class Choice:
    """One group's outcome: the learning rate used (``None``: none trained), the sweeps at the base width and
    (``check_transfer``) the widest, the transfer verdict (``None``: not checked) and notes for the reader."""

    group: str
    lr: float | None
    base: Sweep
    widest: Sweep | None = None
    steps: int | None = None
    transfers: bool | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_sweep(store, sweep: list, fractions: list[float]) -> dict[str, dict[int, Sweep]]:
    """``{group: {width: Sweep}}`` from the store. The loss at fraction ``f`` is the best finite validation
    loss among evaluations within ``f / max(fractions)`` of the sweep run's budget (all of them at the largest
    fraction)."""
    fractions = sorted(fractions)
    rows = {r["id"]: r for r in store.runs([p.id for p in sweep])}
    out: dict[str, dict[int, Sweep]] = {}
    for p in sweep:
        row = rows[p.id]
        evals = store.evals(p.id)
        reach = max(row["budget_tokens"] or 0, row["tokens"] or 0)
        losses = []
        for f in fractions:
            cut = reach * f / fractions[-1] * (1 + 1e-9)
            vals = [e["loss"] for e in evals
                    if e["tokens"] <= cut and e["loss"] is not None and math.isfinite(e["loss"])]
            losses.append(min(vals) if vals else None)
        group = p.group[: -len(TUNE_SUFFIX)]
        trial = Trial(p.config.optimizer.lr, p.id, row["status"], losses, row["error"])
        out.setdefault(group, {}).setdefault(p.width, Sweep(p.width, [])).trials.append(trial)
    for widths in out.values():
        for s in widths.values():
            s.trials.sort(key=lambda t: t.lr)
    return out


def choose(group: str, base: Sweep, widest: Sweep | None = None) -> Choice:
    """The learning rate of ``group``: the base width's best; with ``widest``, the μP transfer verdict
    (the widest width's best within one grid step of the base width's)."""
    best = base.best()
    choice = Choice(group, best.lr if best else None, base, widest)
    lrs = [t.lr for t in base.trials]
    if best is None:
        statuses = ", ".join(f"{t.lr:g} {t.status}" for t in base.trials)
        choice.warnings.append(f"{group}: no learning rate of the sweep trained at width {base.width} "
                               f"({statuses}); give smaller values in tune")
        return choice
    if len(lrs) > 1 and best.lr in (lrs[0], lrs[-1]):
        choice.warnings.append(f"{group}: the best learning rate {best.lr:g} is at the "
                               f"{'low' if best.lr == lrs[0] else 'high'} end of the grid at width {base.width}; "
                               f"extend the grid past it")
    if widest is None:
        return choice
    top = widest.best()
    if top is None:
        choice.transfers = False
        choice.warnings.append(f"{group}: μP transfer not confirmed: no learning rate of the sweep trained at "
                               f"width {widest.width}; the base width's {best.lr:g} is used at every width")
        return choice
    choice.steps = abs(lrs.index(top.lr) - lrs.index(best.lr))
    choice.transfers = choice.steps <= 1
    where = f"width {widest.width}'s best is {top.lr:g}, width {base.width}'s {best.lr:g}"
    if choice.transfers:
        choice.notes.append(f"{group}: μP transfer holds: {where} ({choice.steps} grid step(s) apart)")
    else:
        choice.warnings.append(f"{group}: μP transfer fails: {where}, {choice.steps} grid steps apart; the base "
                               f"width's value is used at every width, so the wide runs may be mistuned")
    return choice


def select(cfg, swept: dict[str, dict[int, Sweep]]) -> list[Choice]:
    """One :class:`Choice` per architecture of ``cfg``, in the study's order."""
    out = []
    for arch in cfg.architectures:
        group = arch.group()
        base_width = arch.base_width or arch.widths[0]
        widest = swept[group].get(arch.check_width) if arch.check_width != base_width else None
        choice = choose(group, swept[group][base_width], widest)
        if widest is not None and arch.check_width != arch.widths[-1]:
            choice.notes.append(f"{group}: transfer checked at width {arch.check_width} (transfer_width), not at the "
                                f"widest width {arch.widths[-1]}: wider runs rely on μP beyond the checked range")
        out.append(choice)
    return out


def tune_document(cfg, choices: list[Choice]) -> dict:
    """The ``tune.json`` document: grid, fractions, and per group the learning rate, transfer verdict, notes,
    warnings and each sweep's trials (loss per fraction, status) and ranking per fraction."""
    fractions = sorted(cfg.tune.fractions)

    def sweep_doc(s: Sweep) -> dict:
        best = s.best()
        return {"width": s.width, "best_lr": best.lr if best else None,
                "ranking": [[t.lr for t in s.ranking(k)] for k in range(len(fractions))],
                "trials": [{"lr": t.lr, "run": t.run_id, "status": t.status, "loss": t.losses, "error": t.error}
                           for t in s.trials]}

    groups = {}
    for c in choices:
        groups[c.group] = {
            "lr": c.lr, "base_width": c.base.width,
            "transfer": None if c.widest is None else {"width": c.widest.width, "steps": c.steps,
                                                      "within_one_step": c.transfers},
            "notes": c.notes, "warnings": c.warnings,
            "sweeps": [sweep_doc(s) for s in (c.base, c.widest) if s is not None]}
    return {"grid": cfg.tune.grid(), "fractions": fractions, "seed": cfg.seeds[0], "groups": groups}


def past_edge(choice: Choice) -> float | None:
    """The value one step past the end of ``choice``'s base grid where its best value lies (the ratio of the
    grid's two outermost values there, 3 significant digits), or ``None`` when the best is inside the grid."""
    lrs = sorted(t.lr for t in choice.base.trials)
    if choice.lr is None or len(lrs) < 2 or choice.lr not in (lrs[0], lrs[-1]):
        return None
    nxt = lrs[-1] ** 2 / lrs[-2] if choice.lr == lrs[-1] else lrs[0] ** 2 / lrs[1]
    return float(f"{nxt:.3g}")


def with_lrs(cfg, lrs: dict[str, float]):
    """``cfg`` with each architecture's ``optimizer.lr`` set to ``lrs[group]``."""
    archs = [a.model_copy(update={"optimizer": {**a.optimizer, "lr": lrs[a.group()]}}) for a in cfg.architectures]
    return cfg.model_copy(update={"architectures": archs})


def run_tuning(cfg, plan: list, study_dir: Path, store, train: Callable[[list, list], None], *,
               retry_failed: bool = False, quiet: bool = False, source: str = "study") -> tuple[list, list[str]]:
    """Stage 0 of a study with ``tune``: register the sweep runs in ``store``, train the unfinished ones with
    ``train(runs, todo)``, choose each group's learning rate, write ``tune.json``; return the study's runs at
    the chosen learning rates (``plan`` re-expanded) and the sweep run ids.

    Raises:
        ConfigError: a group where no learning rate of the sweep trained (after ``tune.json`` is written).
    """
    from .schema import expand

    extra: dict[str, list[float]] = {}
    while True:
        sweep = plan_sweep(cfg, plan, study_dir, source, extra)
        ids = [p.id for p in sweep]
        store.add_runs(sweep)
        store.reset_interrupted()
        if retry_failed:
            store.reset_failed(ids)
        status = {r["id"]: r["status"] for r in store.runs(ids)}
        todo = [p for p in sweep if status[p.id] == "pending"]
        if not quiet:
            print(f"== learning-rate sweep: {len(sweep)} runs, {len(sweep) - len(todo)} already done", flush=True)
        train(sweep, todo)
        choices = select(cfg, read_sweep(store, sweep, cfg.tune.fractions))
        grow = {c.group: past_edge(c) for c in choices if len(extra.get(c.group, [])) < cfg.tune.extend}
        grow = {g: lr for g, lr in grow.items() if lr is not None}
        if not grow:
            break
        for g, lr in grow.items():
            extra.setdefault(g, []).append(lr)
            if not quiet:
                print(f"tune {g}: best value at the end of the grid; sweeping {lr:g} too", flush=True)
    for c in choices:
        if extra.get(c.group):
            c.notes.append(f"{c.group}: grid extended past its end by {', '.join(f'{x:g}' for x in extra[c.group])}")
    write_text(Path(study_dir) / TUNE_NAME,
               json.dumps(stamp(tune_document(cfg, choices), "tune"), indent=1, allow_nan=False) + "\n")
    for c in choices:
        if c.lr is not None and not quiet:
            print(f"tune {c.group}: lr {c.lr:g}" + "".join(f"; {n.split(': ', 1)[1]}" for n in c.notes),
                  flush=True)
        for w in c.warnings:
            print(f"warning: tune: {w}", file=sys.stderr, flush=True)
    failed = [c for c in choices if c.lr is None]
    if failed:
        raise ConfigError(f"tune: {failed[0].warnings[0]} (see {Path(study_dir) / TUNE_NAME})")
    first = plan[0].config.data
    tuned = expand(with_lrs(cfg, {c.group: c.lr for c in choices}), first.path, study_dir, source=source,
                   fingerprint=first.fingerprint)
    return tuned, ids
