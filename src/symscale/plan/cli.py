"""``symscale plan budget`` and ``symscale plan design``.

``plan budget FIT (--target-loss L | --compute C) [--group G ...] [--json OUT]``: FIT is a study directory, a
directory written by ``fit --plots`` or a fit JSON file. With ``--target-loss``: per group the N, D, FLOPs
(C = 3κND) and training hours (from the measured throughput, when the fit has it) that reach loss L on the
compute-optimal path of the fitted L(N, D), with 95 % intervals. With ``--compute``: per group the best loss
and N*, D* at C, the group predicted best and how often each group is best across the bootstrap resamples.

``plan design [STUDY] --budget B [--out next.yaml] [--seed S]``: the next study to run within budget B
(hours like ``2h``, ``90m``, ``45s``, ``1.5d``, or FLOPs like ``3e15``). ``--data-atoms A``: what the
same budget would buy with a training split of A atoms (the question "how much more data does my study need?").
``--target-width W``: aim at interval widths of W (widths already below W gain nothing from the plan).
"""

from __future__ import annotations

import argparse
import json
import math
import re

from ..atomic import write_text
from ..errors import ConfigError
from ..limits import seed_arg
from ..outputs import check_output_file, stamp

#: ``written_by`` kind of a ``plan budget --json`` file.
BUDGET_KIND = "plan-budget"
_UNITS = {"s": 1 / 3600, "sec": 1 / 3600, "m": 1 / 60, "min": 1 / 60, "h": 1.0, "hr": 1.0, "hours": 1.0,
          "d": 24.0, "day": 24.0, "days": 24.0}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_budget(text: str, flag: str = "--budget") -> tuple[str, float]:
    """``("hours", h)`` for a time (``2h``, ``90m``, ``45s``, ``1.5d``) or ``("flops", c)`` for a number
    (``3e15``, ``3e15flops``); the value must be > 0 and finite.

    Raises:
        ConfigError: one line naming ``flag`` and the text.
    """
    m = _BUDGET.match(str(text))
    unit = m.group(2).lower() if m else ""
    if m and unit in ("", "flop", "flops"):
        kind, value = "flops", float(m.group(1))
    elif m and unit in _UNITS:
        kind, value = "hours", float(m.group(1)) * _UNITS[unit]
    else:
        raise ConfigError(f"{flag}: {text!r} is not a budget (wall time like '2h', '90m', '45s', '1.5d', "
                          "or FLOPs like '3e15')")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag}: {text!r} must be a finite budget > 0")
    return kind, value


def register(subparsers) -> None:
    """Add ``plan`` with its sub-commands ``budget`` and ``design``."""
    p = subparsers.add_parser("plan", help="plan from fitted laws: budgets for a target loss, the next study",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="plan_command", metavar="PLAN_COMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 0)
    b = sub.add_parser("budget", help="N, D, FLOPs and hours to reach a loss (or the best loss at a compute)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("fit", metavar="FIT", help="study directory, `fit --plots` directory, or fit JSON file")
    what = b.add_mutually_exclusive_group(required=True)
    what.add_argument("--target-loss", type=float, default=None, help="the loss to reach")
    what.add_argument("--compute", type=float, default=None, help="a compute budget in FLOPs (e.g. 1e18)")
    b.add_argument("--group", action="append", default=None,
                   help="only this group (repeat for several; default: every group with a fitted law)")
    b.add_argument("--json", default=None, help="write the result document here")
    b.set_defaults(func=cmd_budget)
    d = sub.add_parser("design", help="design the next study within a budget",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("study", metavar="STUDY", nargs="?", default=None,
                   help="study YAML file or study directory to extend (default: the staircase on the embedded data in runs/plan, starting with a pilot)")
    d.add_argument("--budget", required=True, help="wall time (2h, 90m, 45s, 1.5d) or FLOPs (3e15)")
    d.add_argument("--out", default="next.yaml", help="study file to write [next.yaml]")
    d.add_argument("--seed", type=seed_arg, default=0, help="seed [0]")
    d.add_argument("--data-atoms", type=float, default=None, metavar="A",
                   help="what-if: plan as if the training split held A atoms (runs up to A tokens); when that is "
                        "more than the data holds the plan is printed, not written: generate more data to run it")
    d.add_argument("--target-width", type=float, default=None, metavar="W",
                   help="count every predicted 95%% interval width as at least W (e.g. 0.3): the budget goes to the "
                        "exponents still wider than W instead of narrowing those already below it")
    d.set_defaults(func=cmd_design)


def cmd_design(args) -> int:
    from .design import cmd_design as run

    return run(args)


def _positive(value: float | None, flag: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag} must be a finite number > 0, got {value}")
    return value


def cmd_budget(args) -> int:
    from .budget import plan_compute, plan_target
    from .source import group_laws, load_fit, unfitted

    target = _positive(args.target_loss, "--target-loss")
    compute = _positive(args.compute, "--compute")
    json_out = check_output_file(args.json, BUDGET_KIND, flag="--json") if args.json else None
    doc = load_fit(args.fit)
    laws = group_laws(doc, args.group, where=str(args.fit))
    out = plan_target(laws, target) if target is not None else plan_compute(laws, compute)
    out["source"] = str(args.fit)
    skipped = [] if args.group else unfitted(doc, str(args.fit))
    out["skipped"] = skipped
    print(table(out))
    if json_out is not None:
        write_text(json_out, json.dumps(stamp(out, BUDGET_KIND), indent=1, allow_nan=False) + "\n")
    return 0


def fmt(q: dict | None, digits: int = 3) -> str:
    """``value [low, high]`` (``high`` ∞ when unbounded), ``not identified (...)``, or ``–``."""
    if not q or q.get("value") is None:
        return "–"
    lo, hi = q.get("ci_low"), q.get("ci_high")
    text = f"{q['value']:.{digits}g}"
    if lo is not None:
        text += f" [{lo:.{digits}g}, {'∞' if hi is None else format(hi, f'.{digits}g')}]"
    return text if q.get("identified", True) else f"not identified ({text})"


def table(doc: dict) -> str:
    """Plain-text table of a ``plan budget`` document, then its warnings."""
    target = doc["mode"] == "target_loss"
    cols = ["N", "D", "C", "hours"] if target else ["loss", "N", "D", "hours"]
    header = (["group"] + [c if c != "C" else "C (FLOPs)" for c in cols]
              + (["unreachable in resamples"] if target else []))
    rows, notes = [], []
    for name, g in doc["groups"].items():
        extra = []
        if target:
            share = g.get("unreachable_share")
            extra = ["–" if share is None else f"{100 * share:.1f}%"]
        if g.get("reason"):
            rows.append([name] + ["–"] * len(cols) + extra)
            notes.append(f"{name}: {'unreachable' if target else 'no optimum'}: {g['reason']}")
        else:
            rows.append([name] + [fmt(g.get(c)) for c in cols] + extra)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    head = (f"target loss {doc['target_loss']:g} on the compute-optimal path (value [95% CI])" if target else
            f"compute {doc['compute']:g} FLOPs on the compute-optimal path (value [95% CI])")
    lines = [head, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += notes
    if not target and doc.get("best_group"):
        share = doc.get("best_share")
        lines.append(f"best: {doc['best_group']}" + (
            "" if share is None else f" (lowest loss in {100 * share[doc['best_group']]:.0f}% of "
                                     f"{doc['n_paired_replicates']} paired resamples; "
                                     + ", ".join(f"{n} {100 * s:.0f}%" for n, s in share.items()) + ")"))
    lines += [f"warning: {name}: {w}" for name, g in doc["groups"].items() for w in g.get("warnings", [])]
    lines += [f"warning: {name}: no fitted sum law L(N, D); left out" for name in doc.get("skipped", [])]
    if any(g.get("hours") is None and not g.get("reason") for g in doc["groups"].values()):
        lines.append("hours: – where the fit has no measured throughput (no wall time in the runs)")
    return "\n".join(lines)
