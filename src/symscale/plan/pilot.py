"""The pilot ``plan design`` runs when the study has no runs yet: a reduced study to fit a first law from.

Each architecture entry trains at three widths -- its smallest and largest listed width (the largest at
least 4× the smallest) and their geometric mean -- for one token budget T shared by all entries: the
largest T (at most one epoch of the training data) whose estimated cost is at most :data:`PILOT_SHARE` of
the budget. Estimated cost per token of a width: ``3κN`` FLOPs (κ measured on the fixed reference batch, as
the runs measure it), or, for a budget in hours, the time of a training step (forward, loss, backward) on
that batch. With a ``tune:`` section the learning-rate sweep is part of the pilot and of its cost: per
entry, each grid value at the base width and (``check_transfer``) at the pilot's widest width for
``max(fractions)`` of T (values an ``extend`` adds are not in the estimate, but are in the measured cost).
The pilot is written as a study file (``<out>.pilot.yaml``, beside the plan's ``--out``) whose
``out`` is the study directory, and run with :func:`symscale.study.driver.run_study`, which trains it and
fits its laws; its *measured* cost (Σ 3κND of its runs and sweep runs, or their training hours) is what the
plan then subtracts from the budget. The μP base width is pinned to the smallest listed width, so the plan's study
file extends the pilot without changing its runs' ids.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import yaml

from ..atomic import write_text
from ..errors import DataError
from .extend import MARKER, Study, read_study

#: largest share of the budget the pilot may cost (estimated)
PILOT_SHARE = 0.15
def pilot_path(out: Path) -> Path:
    """Where the pilot study file goes: ``next.yaml`` -> ``next.pilot.yaml``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.pilot{out.suffix or '.yaml'}")


def pilot_widths(widths: list[int]) -> list[int]:
    """Smallest, geometric middle and largest of ``widths`` (largest at least 4× the smallest)."""
    lo = min(widths)
    hi = max(max(widths), 4 * lo)
    return sorted({lo, int(round(np.sqrt(lo * hi))), hi})


def cost_per_token(study: Study, kind: str) -> dict[str, dict[int, float]]:
    """{group: {pilot width: estimated cost of one token, all seeds}} in FLOPs or hours (module docstring)."""
    from ..models import build
    from ..models.flops import measure_kappa, reference_batch
    from ..models.registry import count_parameters
    from .probe import probe

    cfg = study.cfg
    batch = reference_batch(cutoff=cfg.data.cutoff)
    out = {}
    for arch in cfg.architectures:
        costs = {}
        widths = pilot_widths(arch.widths)
        for w in widths:
            model = build(arch.family, w, **{"cutoff": cfg.data.cutoff, **arch.options})
            if kind == "flops":
                unit = 3.0 * measure_kappa(model, batch)["kappa"] * count_parameters(model)
            else:
                unit = probe(model, batch) / 3600.0
            costs[w] = unit * len(cfg.seeds)
        if cfg.tune is not None:  # the sweep: its runs train on the first seed only
            share = len(cfg.tune.grid()) * max(cfg.tune.fractions) / len(cfg.seeds)
            swept = [arch.base_width or arch.widths[0]] + ([widths[-1]] if cfg.tune.check_transfer else [])
            for w in swept:
                costs[w] = costs.get(w, 0.0) + share * (costs.get(w) or costs[widths[0]])
        out[arch.group()] = costs
    return out


def pilot_raw(study: Study, tokens: int) -> dict:
    """The pilot's study mapping: every entry at its :func:`pilot_widths` for ``tokens``, in the study's directory."""
    raw = copy.deepcopy(study.raw)
    for arch, entry in zip(study.cfg.architectures, raw["architectures"]):
        entry["widths"] = pilot_widths(arch.widths)
        entry["tokens"] = int(tokens)
        entry.pop("epochs", None)
        entry.pop("transfer_width", None)   # the pilot checks transfer at its own widest width
        if study.cfg.mup:
            entry["base_width"] = arch.base_width or arch.widths[0]
    raw["out"] = str(study.dir)
    return raw


def measured_cost(study: Study, kind: str) -> float:
    """What the study's runs and learning-rate sweep runs cost: Σ 3κ·N·tokens (FLOPs) or Σ worker hours (each
    run's wall time, all attempts; its training time where no wall time was recorded), from its store."""
    from ..study.store import Store

    with Store(study.dir, create=False) as store:
        meta = store.meta("study") or {}
        ids = meta.get("run_ids")
        runs = store.runs(None if ids is None else ids + list(meta.get("tune_run_ids") or []))
    if kind == "flops":
        return float(sum(3.0 * (r["kappa"] or 0.0) * (r["params"] or 0) * r["tokens"] for r in runs))
    return float(sum((r["wall_s"] or r["train_time_s"] or 0.0) for r in runs)) / 3600.0


def run_pilot(study: Study, budget, pilot_file: Path, min_batches: int) -> tuple[Study, float]:
    """Write and run the pilot of ``study`` within :data:`PILOT_SHARE` of ``budget``; return the pilot study
    (read back from ``pilot_file``) and its measured cost. ``min_batches``: the shortest useful run, in
    batches (of the largest batch size of the study's entries).

    Raises:
        DataError: the budget cannot pay for a pilot of ``min_batches`` batches per run.
    """
    from ..study.driver import run_study
    from .design import format_cost

    max_tokens, atoms = study.token_limits()
    batch = max(a.batch_size or study.cfg.batch_size for a in study.cfg.architectures)
    min_tokens = min(max_tokens, int(np.ceil(min_batches * batch * atoms)))
    per_token = sum(sum(c.values()) for c in cost_per_token(study, budget.kind).values())
    tokens = int(min(max_tokens, PILOT_SHARE * budget.value / per_token))
    if tokens < min_tokens:
        need = min_tokens * per_token / PILOT_SHARE
        raise DataError(f"--budget: {format_cost(budget.value, budget.kind)} is too small for a pilot of the study "
                        f"(runs of {min_tokens} atoms at 3 widths per entry need about "
                        f"{format_cost(need, budget.kind)} for the pilot's {100 * PILOT_SHARE:.0f}% share)")
    raw = pilot_raw(study, tokens)
    header = (f"{MARKER}\n# the pilot of {study.source}: 3 widths per entry, {tokens} atoms per run "
              f"(estimated {format_cost(tokens * per_token, budget.kind)})\n")
    write_text(pilot_file, header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=110))
    print(f"pilot: {pilot_file} ({tokens} atoms per run; estimated {format_cost(tokens * per_token, budget.kind)})",
          flush=True)
    result = run_study(pilot_file)
    if result.report is None:
        raise DataError(f"{pilot_file}: the pilot study has no fitted laws ({result.report_error or 'no report'}); "
                        f"see `symscale status {study.dir}`")
    pilot = read_study(pilot_file)
    return pilot, measured_cost(pilot, budget.kind)
