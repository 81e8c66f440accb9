"""The "Learning-rate tuning" section of a study report, from ``<study>/tune.json`` (:mod:`.tune`).

:func:`tune_section` returns ``(heading, lines, header, rows)``, the form of the extra sections that
:func:`symscale.laws.report.write_report` renders (a bullet list, then a table): one line per group with its
learning rate and μP transfer verdict (warnings included), and one table row per sweep run with its loss and
rank at every budget fraction.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

HEADING = "Learning-rate tuning"


def read_tune(path: str | Path) -> dict:
    """The ``tune.json`` document at ``path``; DataError naming the file when it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the tuning record ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), dict):
        raise DataError(f"{path}: not a tuning record (no 'groups')")
    return doc


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def tune_section(doc: dict) -> tuple[str, list[str], list[str], list[list[str]]]:
    """``(heading, lines, header, rows)`` of the tuning section for the ``tune.json`` document ``doc``."""
    fractions = doc.get("fractions") or []
    pct = [f"{100 * f:.3g} %" for f in fractions]
    grid = ", ".join(f"{lr:g}" for lr in doc.get("grid") or [])
    lines = [f"Sweep: learning rates {grid} at each group's μP base width (seed {doc.get('seed', 0)}), "
             f"validation loss after {', '.join(pct)} of the run budget; the best at {pct[-1] if pct else '–'} "
             f"(diverged and failed runs last) is used at every width, scaled by μP."]
    rows = []
    for name, g in doc["groups"].items():
        lr = g.get("lr")
        lines.append(f"{name}: lr {lr:g} (best at width {g.get('base_width')})" if lr is not None
                     else f"{name}: no learning rate chosen")
        tr = g.get("transfer")
        if tr is None:
            lines.append(f"{name}: μP transfer not checked (one width, or check_transfer: false)")
        lines += list(g.get("notes") or []) + [f"warning: {w}" for w in g.get("warnings") or []]
        for sweep in g.get("sweeps") or []:
            ranks = [{lr_: i + 1 for i, lr_ in enumerate(order)} for order in sweep.get("ranking") or []]
            for t in sweep.get("trials") or []:
                losses = t.get("loss") or []
                rows.append([name, str(sweep["width"]), f"{t['lr']:g}", t["status"],
                             *[_fmt(losses[k] if k < len(losses) else None) for k in range(len(fractions))],
                             *[str(r.get(t["lr"], "–")) for r in ranks]])
    header = ["group", "width", "lr", "status", *[f"loss @ {p}" for p in pct], *[f"rank @ {p}" for p in pct]]
    return HEADING, lines, header, rows
