"""``symscale fit`` and ``symscale report``.

``fit INPUT``: INPUT is a study directory (run directories at any depth) or a CSV (column flags map fields).
Prints a table; ``--json`` writes the result document; ``--plots DIR`` writes the figures and ``fit.json``.

``report INPUT``: INPUT is a study directory, a CSV (same flags as ``fit``), or a directory written by
``fit --plots`` (recognised by its ``fit.json`` and the absence of run directories): then nothing is refitted.
Output goes to ``--out`` (default: the fit directory itself, ``INPUT/report`` for a study directory,
``<stem>_report`` next to a CSV).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import write_text
from ..errors import ConfigError, DataError
from ..limits import seed_arg
from ..outputs import check_output_dir, check_output_file, mark_dir, stamp
from . import analyse, load, to_json
from .io import find_runs
from .report import fmt_q, write_report


def _add_input_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CSV columns (INPUT is a .csv)")
    g.add_argument("--group-col", default="group", help="group (architecture) column [group]")
    g.add_argument("--run-col", default=None, help="run id column (default: a run is (group, N))")
    g.add_argument("--n-col", default="N", help="parameter count column [N]")
    g.add_argument("--d-col", default="D", help="tokens (atoms seen) column [D]")
    g.add_argument("--c-col", default="C", help="compute (FLOPs) column [C]")
    g.add_argument("--time-col", default=None, help="wall time column (seconds; optional)")
    g.add_argument("--loss-col", default="loss", help="loss column [loss]")
    g.add_argument("--kappa-col", default=None, help="kappa column (default: median of C/(3ND) per group)")
    s = p.add_argument_group("fit options")
    s.add_argument("--loss-key", default="loss", help="metrics.jsonl key fitted for a study directory [loss]")
    s.add_argument("--drop-fraction", type=float, default=0.05,
                   help="drop each run's checkpoints before this fraction of its tokens [0.05]")
    s.add_argument("--drop-tokens", type=float, default=0.0,
                   help="drop every checkpoint before this many atoms (a start-up transient) [0]")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of whole runs [1000]")
    s.add_argument("--seed", type=seed_arg, default=0, help="bootstrap seed [0]")
    s.add_argument("--huber-delta", type=float, default=1e-3, help="Huber threshold on log residuals [1e-3]")
    s.add_argument("--jobs", type=int, default=1, help="fit groups in this many processes [1]")
    s.add_argument("--holdout", type=float, default=0.2,
                   help="back-test: fraction of the log-C range held out at the top [0.2]")


def register(subparsers) -> None:
    """Add the ``fit`` and ``report`` sub-commands."""
    p = subparsers.add_parser("fit", help="fit frontiers, L(N,D), allocation with bootstrap CIs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="study directory or CSV file")
    p.add_argument("--json", default=None, help="write the result document here")
    p.add_argument("--plots", default=None, help="write figures (PNG + SVG) and fit.json into this directory")
    _add_input_options(p)
    p.set_defaults(func=cmd_fit)
    r = subparsers.add_parser("report", help="HTML + markdown report of the laws",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("input", help="study directory, CSV file, or a directory written by `fit --plots`")
    r.add_argument("--out", default=None, help="output directory (see above)")
    _add_input_options(r)
    r.set_defaults(func=cmd_report)


def _settings(args) -> dict:
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0.0 <= args.drop_fraction < 1.0:
        raise ConfigError(f"--drop-fraction must be in [0, 1), got {args.drop_fraction}")
    if not args.drop_tokens >= 0.0:
        raise ConfigError(f"--drop-tokens must be >= 0, got {args.drop_tokens}")
    if not 0.0 < args.holdout < 1.0:
        raise ConfigError(f"--holdout must be in (0, 1), got {args.holdout}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if not args.huber_delta > 0:
        raise ConfigError(f"--huber-delta must be > 0, got {args.huber_delta}")
    return {"input": str(args.input), "loss": args.loss_key if Path(args.input).is_dir() else args.loss_col,
            "drop_fraction": args.drop_fraction, "drop_tokens": args.drop_tokens, "bootstrap": args.bootstrap,
            "seed": args.seed, "huber_delta": args.huber_delta, "holdout": args.holdout}


def _run_fit(args):
    settings = _settings(args)
    csv_opts = dict(group_col=args.group_col, run_col=args.run_col, n_col=args.n_col, d_col=args.d_col,
                    c_col=args.c_col, time_col=args.time_col, loss_col=args.loss_col, kappa_col=args.kappa_col)
    groups = load(args.input, csv=csv_opts, loss_key=args.loss_key, drop_fraction=args.drop_fraction,
                  drop_tokens=args.drop_tokens)
    results = analyse(groups, n_boot=args.bootstrap, seed=args.seed, delta=args.huber_delta, holdout=args.holdout,
                      jobs=args.jobs)
    return results, to_json(results, settings)


def _write_json(path: Path, doc: dict) -> None:
    write_text(path, json.dumps(stamp(doc, "fit"), indent=1, allow_nan=False) + "\n")


def _laws_dir(path: Path, flag: str) -> Path:
    """Check (before any fitting) that ``path`` may receive figures and reports, and mark it as ours."""
    return check_output_dir(path, "laws", flag=flag)


def table(doc: dict) -> str:
    """Plain-text table of the headline numbers (value [95% CI])."""
    cols = [("gamma_c", "gamma_c"), ("gamma_h", "gamma_h"), ("alpha", "alpha"), ("beta", "beta"),
            ("a", "a"), ("gamma_c_derived", "gamma_deriv"), ("L_inf", "L_inf")]
    header = ["group", "runs", "pts"] + [c for _, c in cols] + ["backtest"]
    rows = []
    for name, g in doc["groups"].items():
        bt = g.get("backtest_rel_error")
        rows.append([name, str(g["n_runs"]), str(g["n_points"])] + [fmt_q(g.get(k), 3) for k, _ in cols]
                    + ["–" if bt is None else f"{bt:.3f}"])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    warn = [f"warning: {name}: {w}" for name, g in doc["groups"].items() for w in g.get("warnings", [])]
    return "\n".join(lines + warn)


def cmd_fit(args) -> int:
    from .plots import write_all

    json_out = check_output_file(args.json, "fit", flag="--json") if args.json else None
    plots = _laws_dir(Path(args.plots), "--plots") if args.plots else None
    results, doc = _run_fit(args)
    print(table(doc))
    if json_out is not None:
        _write_json(json_out, doc)
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        mark_dir(plots, "laws")
        write_all(results, plots)
        _write_json(plots / "fit.json", doc)
    return 0


def cmd_report(args) -> int:
    from .plots import write_all

    src = Path(args.input)
    if src.is_dir() and (src / "fit.json").is_file() and not find_runs(src):
        try:
            doc = json.loads((src / "fit.json").read_text(encoding="utf-8"))
        except ValueError as exc:   # invalid JSON, or not UTF-8 text
            raise DataError(f"{src / 'fit.json'}: invalid JSON ({getattr(exc, 'msg', 'not UTF-8 text')})") from None
        out = _laws_dir(Path(args.out) if args.out else src, "--out")
        out.mkdir(parents=True, exist_ok=True)
        mark_dir(out, "laws")
        html_path, _ = write_report(doc, out, image_dir=src)
    else:
        if not src.exists():
            raise DataError(f"{src}: no such file or directory")
        out = _laws_dir(Path(args.out) if args.out else (src / "report" if src.is_dir()
                                                         else src.with_name(f"{src.stem}_report")), "--out")
        results, doc = _run_fit(args)
        out.mkdir(parents=True, exist_ok=True)
        mark_dir(out, "laws")
        write_all(results, out)
        _write_json(out / "fit.json", doc)
        html_path, _ = write_report(doc, out)
        print(table(doc))
    print(f"report: {html_path}")
    return 0
