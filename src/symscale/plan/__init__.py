"""Planning from fitted laws: what a target loss costs, and which study to run next.

Typical use::

    from symscale import plan
    doc = plan.load_fit("runs/quickstart")            # study dir, `fit --plots` dir or fit.json
    laws = plan.group_laws(doc)                       # {group: GroupLaw}
    budget = plan.plan_target(laws, 0.05)             # N, D, C, hours per group with 95 % intervals
    at_c = plan.plan_compute(laws, 1e18)              # best loss per group, best group and its share

Modules: :mod:`.source` (inputs), :mod:`.budget` (the compute-optimal path), :mod:`.fisher` (predicted
interval widths of a design), :mod:`.search` (greedy choice of runs under a budget), :mod:`.extend` (the
study file it writes), :mod:`.pilot` (the first, short study), :mod:`.design` (``plan design``), :mod:`.cli`
(``symscale plan budget`` / ``plan design``; :func:`parse_budget`). This layer sits above
:mod:`symscale.laws` and :mod:`symscale.study`; nothing below imports it.
"""

from __future__ import annotations

from .budget import at_compute, for_target, plan_compute, plan_target
from .cli import parse_budget
from .source import GroupLaw, group_laws, load_fit

__all__ = ["GroupLaw", "at_compute", "for_target", "group_laws", "load_fit", "parse_budget", "plan_compute",
           "plan_target"]
