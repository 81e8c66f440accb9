"""Scaling laws from training checkpoints: compute frontiers, the L(N, D) sum law, allocation, bootstrap CIs.

Typical use::

    from symscale import laws
    groups = laws.load("runs/")                     # study directory, or a CSV with csv=dict(...) columns
    results = laws.analyse(groups, n_boot=1000)     # {group: GroupAnalysis}
    doc = laws.to_json(results)                     # {"groups": {name: {...}}} (public keys, docs/laws.md)

Modules: :mod:`.io` (inputs) and :mod:`.rows` (their validation), :mod:`.frontier`, :mod:`.sumlaw`,
:mod:`.allocation`, :mod:`.bootstrap`, :mod:`.checks` (what is identified, warnings), :mod:`.solvers`,
:mod:`.plots`, :mod:`.report`, :mod:`.cli`.
"""

from __future__ import annotations

import math
from pathlib import Path

from .bootstrap import GroupAnalysis, analyse, analyse_group
from .io import GroupData, drop_warmup, load_csv, load_study

__all__ = ["GroupAnalysis", "GroupData", "analyse", "analyse_group", "drop_warmup", "load", "load_csv",
           "load_study", "to_json"]


def load(source: str | Path, *, csv: dict | None = None, loss_key: str = "loss",
         drop_fraction: float = 0.05, drop_tokens: float = 0.0) -> dict[str, GroupData]:
    """Checkpoints per group from a study directory or a ``.csv`` file, minus each run's first tokens.

    Args:
        source: a study directory (its ``study.db`` store when it has one, else its run directories at
            any depth), a ``study.db`` file, or a CSV file.
        csv: keyword arguments of :func:`load_csv` (column names) for a CSV source.
        loss_key: the ``metrics.jsonl`` key fitted for a study directory.
        drop_fraction: each run's checkpoints before this fraction of its final token count are dropped.
        drop_tokens: checkpoints before this many atoms are dropped too (see :func:`drop_warmup`).
    """
    source = Path(source)
    if (source.is_file() and source.suffix == ".db") or (source / "study.db").is_file():
        from ..study.store import load_groups

        groups = load_groups(source.parent if source.is_file() else source, loss_key=loss_key)
    elif source.is_dir():
        groups = load_study(source, loss_key=loss_key)
    else:
        groups = load_csv(source, **(csv or {}))
    return {name: drop_warmup(g, drop_fraction, drop_tokens) for name, g in groups.items()}


def _clean(obj):
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(results: dict[str, GroupAnalysis], settings: dict | None = None) -> dict:
    """The ``fit`` JSON document: ``{"groups": {...}, "settings": {...}}``."""
    return _clean({"groups": {name: r.summary for name, r in results.items()}, "settings": settings or {}})
