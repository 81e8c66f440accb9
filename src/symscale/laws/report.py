"""The laws report: one self-contained HTML file (figures embedded as base64 PNG) and its markdown twin.

It is built from the ``fit`` JSON document alone plus the PNG figures next to it, so a previous
``symscale fit --plots DIR`` directory (which holds ``fit.json``) can be reported on without refitting.
It opens with what a reader acts on: a verdict generated from the document (which group scales best and by
how much, what is and is not identified, the compute-optimal split where known, the next step) and the
frontier figure; then exponents with 95 % CIs; consistency checks (γ_c vs αβ/(α+β), a + b = 1, a ≈ b);
allocation; frontier model selection and back-test; the other figures; inventory of runs; warnings.
A quantity with ``identified: false`` is printed as ``not identified (value [low, high])`` and no
consistency check is drawn from it.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from ..atomic import write_text

EXPONENTS = [("gamma_c", "γ_c (FLOPs)"), ("gamma_h", "γ_h (time)"), ("alpha", "α (params)"),
             ("beta", "β (data)"), ("gamma_c_derived", "γ derived αβ/(α+β)"), ("a", "a (N* ∝ C^a)"),
             ("b", "b (D* ∝ C^b)"), ("L_inf", "L∞"), ("A", "A"), ("B", "B")]


def fmt_q(q: dict | None, digits: int = 4) -> str:
    """``value [low, high]`` of a quantity, ``not identified (value [low, high])``, or ``–``."""
    if not q or q.get("value") is None:
        return "–" if not q or q.get("identified", True) else "not identified"
    lo, hi = q.get("ci_low"), q.get("ci_high")
    ci = f" [{lo:.{digits}g}, {hi:.{digits}g}]" if lo is not None and hi is not None else ""
    text = f"{q['value']:.{digits}g}{ci}"
    return text if identified(q) else f"not identified ({text})"


def identified(q: dict | None) -> bool:
    """A quantity that has a value and is not flagged ``identified: false``."""
    return bool(q) and q.get("value") is not None and q.get("identified", True) is not False


def _inside(x: float, q: dict | None) -> bool | None:
    if not q or q.get("ci_low") is None or q.get("ci_high") is None:
        return None
    return q["ci_low"] <= x <= q["ci_high"]


def _value(q: dict | None) -> float | None:
    """The value of an identified quantity, else None (nothing is concluded from it)."""
    return q.get("value") if identified(q) else None


def consistency(g: dict) -> list[tuple[str, str, str]]:
    """(check, figures, verdict) rows for one group; a check on a quantity that is not identified says so."""
    rows = []
    gc, gd = g.get("gamma_c"), g.get("gamma_c_derived")
    if gc and gd:
        if _value(gc) is None or _value(gd) is None:
            rows.append(("γ_c ≈ αβ/(α+β)", "–", "not identified"))
        else:
            overlap = (None if None in (gc.get("ci_low"), gd.get("ci_low"))
                       else gc["ci_low"] <= gd["ci_high"] and gd["ci_low"] <= gc["ci_high"])
            rows.append(("γ_c ≈ αβ/(α+β)", f"{gc['value']:.4g} vs {gd['value']:.4g}",
                         {True: "consistent (CIs overlap)", False: "inconsistent (CIs disjoint)",
                          None: "no CI"}[overlap]))
    a, b = g.get("a"), g.get("b")
    if a and b:
        if _value(a) is None or _value(b) is None:
            rows.append(("a + b = 1", "–", "not identified"))
            return rows
        rows.append(("a + b = 1", f"{a['value'] + b['value']:.6f}",
                     "holds" if abs(a["value"] + b["value"] - 1) < 1e-9 else "violated"))
        inside = _inside(0.5, a)
        rows.append(("a ≈ b ≈ 0.5", f"a = {fmt_q(a, 3)}",
                     {True: "0.5 inside a's CI", False: "0.5 outside a's CI", None: "no CI"}[inside]))
    return rows


METHOD_NAMES = {"residual": "residual bootstrap from the fitted L(N, D)", "runs": "bootstrap over runs",
                "none": "no bootstrap"}
_EXPONENT_NAMES = {"gamma_c": "γ_c", "gamma_h": "γ_h", "alpha": "α", "beta": "β", "a": "a", "b": "b",
                   "gamma_c_derived": "γ derived"}


def _short(q: dict) -> str:
    return f"{q['value']:.3g} [{q['ci_low']:.3g}, {q['ci_high']:.3g}]" if q.get("ci_low") is not None \
        else f"{q['value']:.3g}"


def verdict(doc: dict) -> list[str]:
    """The report's opening lines, generated from the fit document: best scaling group and by how much,
    what is (not) identified, the compute-optimal split where known, and the next step."""
    groups = doc.get("groups", {})
    lines = []
    ranked = sorted(((g["gamma_c"]["value"], n) for n, g in groups.items() if identified(g.get("gamma_c"))),
                    reverse=True)
    if ranked:
        top, name = ranked[0]
        q = groups[name]["gamma_c"]
        text = f"Best compute scaling: {name}, γ_c = {_short(q)} (loss ∝ C^-γ_c on its compute frontier)"
        if len(ranked) > 1:
            second, other = ranked[1]
            q2 = groups[other]["gamma_c"]
            sep = (None if q.get("ci_low") is None or q2.get("ci_high") is None else q["ci_low"] > q2["ci_high"])
            gain = 10 ** (top - second)
            text += (f"; ahead of {other} ({_short(q2)}) by {top - second:.3g} in γ_c, i.e. {gain:.3g}× more loss "
                     f"reduction per decade of compute"
                     + {True: " (intervals disjoint)", False: " (intervals overlap: not a clear lead)",
                        None: ""}[sep])
            if len(ranked) > 2:
                text += "; order: " + " > ".join(f"{n} {v:.3g}" for v, n in ranked)
        lines.append(text + ".")
    elif groups:
        lines.append("No group has an identified compute-frontier exponent γ_c.")
    for n, g in groups.items():
        keys = [k for k in _EXPONENT_NAMES if g.get(k)]
        bad = [_EXPONENT_NAMES[k] for k in keys if not identified(g[k])]
        good = [_EXPONENT_NAMES[k] for k in keys if identified(g[k])]
        lines.append(f"{n}: identified {', '.join(good) or 'nothing'}"
                     + (f"; not identified: {', '.join(bad)}" if bad else "") + ".")
    for n, g in groups.items():
        a, al = g.get("a"), g.get("allocation") or {}
        if identified(a):
            n_star, d_star = al.get("N_star_at_C_ref"), al.get("D_star_at_C_ref")
            text = (f"{n}: compute-optimal split N* ∝ C^{a['value']:.2g}, D* ∝ C^{1 - a['value']:.2g} "
                    f"(a = {_short(a)})")
            if identified(n_star) and identified(d_star):
                text += (f"; at C = {al['C_ref']:.3g} FLOPs: N* ≈ {n_star['value']:.3g} parameters, "
                         f"D* ≈ {d_star['value']:.3g} atoms")
            lines.append(text + ".")
    lines.append("Next step: " + next_step(doc))
    return lines


def next_step(doc: dict) -> str:
    """The planner's next step when the document carries one (``doc["plan"]["next_step"]``), else a rule."""
    plan = doc.get("plan")
    if isinstance(plan, dict) and plan.get("next_step"):
        return str(plan["next_step"])
    steps = []
    for n, g in doc.get("groups", {}).items():
        runs = g.get("runs") or []
        sizes = sorted({r["N"] for r in runs})
        if g.get("alpha") and not identified(g["alpha"]):
            span = f" (now {len(sizes)} size(s), {sizes[0]:.3g}–{sizes[-1]:.3g})" if sizes else ""
            steps.append(f"{n}: add runs of new sizes N to identify α{span}")
        elif g.get("beta") and not identified(g["beta"]):
            steps.append(f"{n}: train longer (larger D) or log more checkpoints to identify β")
    if not steps:
        widest = max((((q["ci_high"] - q["ci_low"]) / abs(q["value"]), n)
                      for n, g in doc.get("groups", {}).items()
                      for q in [g.get("gamma_c")] if identified(q) and q.get("ci_low") is not None
                      and q["value"]), default=None)
        if widest:
            return (f"all exponents are identified; the widest γ_c interval is {widest[1]}'s: extend its compute "
                    "range (larger N and D) to narrow it.")
        return "all exponents are identified."
    return "; ".join(steps) + "."


def _table(header: list[str], rows: list[list[str]], md: bool) -> str:
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def _sections(doc: dict, md: bool) -> list[tuple[str, str]]:
    groups = doc.get("groups", {})
    names = list(groups)
    out = []
    rows = [[label] + [fmt_q(groups[n].get(key)) for n in names] for key, label in EXPONENTS]
    rows.append(["runs / checkpoints"] + [f"{groups[n]['n_runs']} / {groups[n]['n_points']}" for n in names])
    methods = sorted({METHOD_NAMES.get(groups[n].get("interval_method"), "bootstrap") for n in names})
    out.append((f"Exponents (value [95% CI], {' / '.join(methods) or 'bootstrap'}; "
                "not identified: value kept for diagnostics)", _table(["quantity"] + names, rows, md)))
    rows = [[n, *c] for n in names for c in consistency(groups[n])]
    out.append(("Consistency checks", _table(["group", "check", "figures", "verdict"], rows, md)))
    rows = []
    for n in names:
        al = groups[n].get("allocation") or {}
        rows.append([n, f"{al.get('kappa', float('nan')):.4g}", fmt_q(al.get("G")), f"{al.get('C_ref', 0):.3g}",
                     fmt_q(al.get("N_star_at_C_ref")), fmt_q(al.get("D_star_at_C_ref")), fmt_q(groups[n].get("a"))])
    out.append(("Compute-optimal allocation: N*(C) = G·(C/3κ)^a, D* = (C/3κ)/N*",
                _table(["group", "κ", "G", "C_ref", "N*(C_ref)", "D*(C_ref)", "a"], rows, md)))
    rows = []
    for n in names:
        for axis in ("frontier_c", "frontier_h"):
            fr = groups[n].get(axis)
            if not fr:
                continue
            bt = groups[n].get("backtest", {}) if axis == "frontier_c" else {}
            rows.append([n, "C" if axis == "frontier_c" else "H", fmt_q(fr["fixed"]["gamma"]),
                         fmt_q(fr["free"]["gamma"]), fmt_q(fr["free"]["L_inf"]),
                         _num(fr["fixed"]["aicc"]), _num(fr["free"]["aicc"]), fr["selected"],
                         _num(bt.get("fixed")), _num(bt.get("free"))])
    out.append(("Frontier models (L∞ = 0 vs free) and extrapolation back-test (relative error on the top "
                "20% of log C)", _table(["group", "axis", "γ (L∞=0)", "γ (free)", "L∞ (free)", "AICc L∞=0",
                                          "AICc free", "selected", "back-test L∞=0", "back-test free"], rows, md)))
    rows = [[n, r["run"], r["status"], f"{r['N']:.4g}", str(r["n_points"]), f"{r['D_max']:.4g}",
             f"{r['C_max']:.4g}", f"{r['best_loss']:.5g}"] for n in names for r in groups[n].get("runs", [])]
    out.append(("Inventory of runs", _table(["group", "run", "status", "N", "points", "D max", "C max",
                                             "best loss"], rows, md)))
    rows = [[n, w] for n in names for w in groups[n].get("warnings", [])]
    out.append(("Warnings", _table(["group", "warning"], rows or [["–", "none"]], md)))
    return out


def _num(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def write_report(doc: dict, out_dir: str | Path, image_dir: str | Path | None = None,
                 title: str = "symscale laws report",
                 extra: list[tuple[str, list[str], list[str], list[list[str]]]] = ()) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``out_dir``; returns both paths.

    ``image_dir`` (default ``out_dir``) holds the PNG/SVG figures of :mod:`.plots`; the HTML embeds the PNGs,
    the markdown links to them by relative path. ``extra``: further sections ``(heading, lines, header,
    rows)`` from the caller (e.g. a study's learning-rate tuning), each a bullet list and a table, placed
    after the fitted quantities.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_dir = Path(image_dir) if image_dir is not None else out_dir
    images = sorted(image_dir.glob("*.png"), key=lambda p: (not p.stem.startswith(("frontiers", "exponents",
                                                                                    "allocation")), p.stem))
    settings = doc.get("settings", {})
    setting_line = ", ".join(f"{k} = {v}" for k, v in settings.items())
    parts_md = [f"# {title}\n", f"Settings: {setting_line}\n" if setting_line else ""]
    parts_html = [f"<h1>{html.escape(title)}</h1>",
                  f"<p>Settings: {html.escape(setting_line)}</p>" if setting_line else ""]
    lines = verdict(doc)
    parts_md.append("## Verdict\n\n" + "".join(f"- {ln}\n" for ln in lines))
    parts_html.append("<h2>Verdict</h2><ul>" + "".join(f"<li>{html.escape(ln)}</li>" for ln in lines) + "</ul>")

    def figure(img: Path) -> None:
        rel = os.path.relpath(img, out_dir)
        parts_md.append(f"![{img.stem}]({rel})\n")
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        parts_html.append(f'<figure><img alt="{html.escape(img.stem)}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{html.escape(img.stem)}</figcaption></figure>")

    first = [img for img in images if img.stem == "frontiers"]
    for img in first:
        figure(img)
    sections = list(zip(_sections(doc, True), _sections(doc, False)))
    tail = {"Inventory of runs", "Warnings"}
    for (heading, md_table), (_, html_table) in [x for x in sections if x[0][0] not in tail]:
        parts_md.append(f"## {heading}\n\n{md_table}")
        parts_html.append(f"<h2>{html.escape(heading)}</h2>{html_table}")
    for heading, lines, header, rows in extra:
        bullets_md = "".join(f"- {ln}\n" for ln in lines)
        bullets_html = "".join(f"<li>{html.escape(ln)}</li>" for ln in lines)
        parts_md.append(f"## {heading}\n\n{bullets_md}\n{_table(header, rows, True)}")
        parts_html.append(f"<h2>{html.escape(heading)}</h2><ul>{bullets_html}</ul>{_table(header, rows, False)}")
    parts_md.append("## Figures\n")
    parts_html.append("<h2>Figures</h2>")
    for img in images:
        if img not in first:
            figure(img)
    for (heading, md_table), (_, html_table) in [x for x in sections if x[0][0] in tail]:
        parts_md.append(f"## {heading}\n\n{md_table}")
        parts_html.append(f"<h2>{html.escape(heading)}</h2>{html_table}")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts_html) + "\n</body></html>\n")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    write_text(html_path, page)
    write_text(md_path, "\n".join(parts_md))
    return html_path, md_path
