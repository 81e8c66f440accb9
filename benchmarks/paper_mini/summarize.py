"""Tables of a finished paper_mini study (or any study), next to the paper's published exponents.

    python benchmarks/paper_mini/summarize.py runs/paper_mini/study                # markdown on stdout
    python benchmarks/paper_mini/summarize.py runs/paper_mini/study --compare runs/paper_mini_rerun/study

Reads ``<study>/laws.json`` (written by ``symscale study``) and ``<study>/study.db``. ``--compare`` adds the
reproduction table: each exponent of the second study and whether it lies inside the first study's 95 % CI.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from symscale.laws.report import fmt_q, identified

# Published values (docs: ../shared/reference/paper-notes.md, "Published results"); "–" = not published.
PAPER = {
    "mpnn": {"gamma_c": 0.14, "gamma_h": 0.21, "beta": 0.31, "alpha": 0.28, "gamma_c_derived": 0.146},
    "egnn": {"gamma_c": 0.17, "gamma_h": 0.27, "beta": 0.39, "alpha": 0.39, "gamma_c_derived": 0.195},
    "gemnet": {"gamma_c": 0.25, "gamma_h": 0.33, "beta": 0.50, "alpha": 0.52, "gamma_c_derived": 0.256},
    "esen-l4": {"gamma_c": 0.40, "gamma_h": 0.45, "beta": 0.75, "alpha": 0.82, "gamma_c_derived": 0.392},
    "esen-l2": {"gamma_c": 0.35},
    "mpnn-symloss2": {"gamma_c": 0.14, "beta": 0.40, "alpha": 0.25},  # the paper's symloss used M = 5
}
PAPER_KAPPA = {"mpnn": 2.33, "egnn": 28.09, "gemnet": 35.18, "esen-l4": 74.36, "esen-l2": 74.36}
KEYS = ("gamma_c", "gamma_h", "alpha", "beta", "a", "b", "gamma_c_derived")


def fmt(q: dict | None, digits: int = 3) -> str:
    return fmt_q(q, digits)


def exponent_table(doc: dict) -> str:
    lines = ["| group | runs | points | " + " | ".join(KEYS) + " | back-test rel. error |",
             "|---" * (len(KEYS) + 4) + "|"]
    for name, g in doc["groups"].items():
        paper = PAPER.get(name, {})
        cells = []
        for k in KEYS:
            p = paper.get(k)
            cells.append(fmt(g.get(k)) + (f" (paper {p:g})" if p is not None else ""))
        bt = g.get("backtest_rel_error")
        lines.append(f"| {name} | {g['n_runs']} | {g['n_points']} | " + " | ".join(cells)
                     + f" | {'–' if bt is None else f'{bt:.3f}'} |")
    return "\n".join(lines)


def cost_table(study: Path, doc: dict) -> str:
    con = sqlite3.connect(f"file:{study / 'study.db'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    run_ids = json.loads(con.execute("SELECT value FROM meta WHERE key='study'").fetchone()[0])["run_ids"]
    rows = [dict(r) for r in con.execute("SELECT * FROM runs") if r["id"] in set(run_ids)]
    flops = {r["run_id"]: r["f"] for r in con.execute(
        "SELECT run_id, MAX(flops_measured) AS f FROM evals GROUP BY run_id")}
    con.close()
    lines = ["| group | runs (completed) | N range | κ measured | κ paper | train time, s (sum) | wall time, s (sum) "
             "| wall s per run (median) | largest N: atoms/s, measured GFLOP/s | best val loss (largest N) |",
             "|---" * 10 + "|"]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["grp"], []).append(r)
    for name in sorted(groups):
        rs = sorted(groups[name], key=lambda r: r["params"] or 0)
        done = [r for r in rs if r["status"] == "completed"]
        walls = sorted(r["wall_s"] for r in rs)
        kappa = doc["groups"].get(name, {}).get("kappa")
        n = [r["params"] for r in rs if r["params"]]
        lines.append(
            f"| {name} | {len(rs)} ({len(done)}) | {min(n):,}–{max(n):,} | "
            f"{'–' if kappa is None else f'{kappa:.2f}'} | {PAPER_KAPPA.get(name, '–')} | "
            f"{sum(r['train_time_s'] or 0 for r in rs):,.0f} | {sum(walls):,.0f} | {walls[len(walls) // 2]:,.0f} | "
            f"{_rate(rs[-1], flops)} | {rs[-1]['best_loss']:.4g} |")
    return "\n".join(lines)


def _rate(run: dict, flops: dict) -> str:
    """Training throughput of one run: atoms per second and measured FLOP/s (one thread)."""
    t = run["train_time_s"]
    if not t:
        return "–"
    return f"{run['tokens'] / t:,.0f}, {(flops.get(run['id']) or 0) / t / 1e9:.2f}"


def identification_table(doc: dict, max_width: float = 0.3) -> str:
    """Issue 12's success test per group: alpha, beta, a, b identified (intervals clear of the search bounds)
    and the alpha and beta 95 % intervals narrower than ``max_width``."""
    lines = ["| group | alpha, beta, a, b identified | alpha CI width | beta CI width | success |", "|---" * 5 + "|"]
    n_ok = 0
    for name, g in doc["groups"].items():
        ident = all(identified(g.get(k)) for k in ("alpha", "beta", "a", "b"))
        widths = []
        for k in ("alpha", "beta"):
            q = g.get(k) or {}
            lo, hi = q.get("ci_low"), q.get("ci_high")
            widths.append(None if lo is None or hi is None else hi - lo)
        ok = ident and all(w is not None and w < max_width for w in widths)
        n_ok += ok
        cells = ["–" if w is None else f"{w:.3f}" for w in widths]
        lines.append(f"| {name} | {'yes' if ident else 'no'} | {cells[0]} | {cells[1]} | {'yes' if ok else 'no'} |")
    lines.append(f"\n{n_ok} of {len(doc['groups'])} groups meet the test (widths < {max_width:g}).")
    return "\n".join(lines)


def warnings(doc: dict) -> str:
    out = [f"- {name}: {w}" for name, g in doc["groups"].items() for w in g.get("warnings", [])]
    return "\n".join(out) or "- none"


def compare(doc1: dict, doc2: dict) -> str:
    lines = ["| group | quantity | first run [95 % CI] | second run | inside the first CI |", "|---" * 5 + "|"]
    inside = total = 0
    for name, g1 in doc1["groups"].items():
        g2 = doc2["groups"].get(name)
        if g2 is None:
            continue
        for k in KEYS:
            q1, q2 = g1.get(k), g2.get(k)
            if not identified(q1) or not identified(q2):   # nothing is concluded from an unidentified value
                continue
            ok = q1["ci_low"] - 1e-12 <= q2["value"] <= q1["ci_high"] + 1e-12
            inside += ok
            total += 1
            lines.append(f"| {name} | {k} | {fmt(q1)} | {q2['value']:.3g} | {'yes' if ok else '**no**'} |")
    lines.append(f"\n{inside} of {total} values of the second run lie inside the first run's 95 % interval.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path)
    p.add_argument("--compare", type=Path, default=None, help="a second study directory (the rerun)")
    args = p.parse_args(argv)
    doc = json.loads((args.study / "laws.json").read_text())
    print("## Exponents (value [95 % bootstrap CI]; paper's value in parentheses)\n")
    print(exponent_table(doc))
    print("\n## Identification (issue 12: alpha, beta, a, b identified; alpha and beta widths < 0.3)\n")
    print(identification_table(doc))
    print("\n## Cost per group\n")
    print(cost_table(args.study, doc))
    print("\n## Fit warnings\n")
    print(warnings(doc))
    if args.compare is not None:
        print("\n## Reproduction\n")
        print(compare(doc, json.loads((args.compare / "laws.json").read_text())))


if __name__ == "__main__":
    main()
