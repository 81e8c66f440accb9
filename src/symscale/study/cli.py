"""``symscale study`` (run a study to its report) and ``symscale status`` (the run table of a study)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="run a scaling study (YAML sweep) locally or on Ray, then fit and report",
        description="Expand STUDY.yaml into runs, train every unfinished one (resuming interrupted runs from "
                    "their checkpoints), record everything in <study>/study.db, then fit the laws and write "
                    "<study>/report/report.html. Exit status 1 when a run failed or diverged.")
    p.add_argument("study", help="study YAML file (see examples/quickstart.yaml)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="executor (default local)")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, host:port); default: a private "
                                                   "local Ray instance")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: the number of CPU cores; "
                                                             "GPUs x runs-per-gpu for GPU runs; or the Ray "
                                                             "cluster's CPUs)")
    p.add_argument("--gpus", default=None, metavar="N|I,J",
                   help="local GPU runs: the first N visible GPUs, or those indices (default: all); each worker "
                        "is pinned to one GPU (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--runs-per-gpu", type=int, default=None, metavar="K",
                   help="local GPU runs: runs trained at once on each GPU (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="X",
                   help="Ray: GPUs each cuda/auto run requests, in (0, 1] (0.5: two runs share a GPU)")
    p.add_argument("--out", default=None, help="study directory (default: the file's `out`, else runs/<name>)")
    p.add_argument("--retry-failed", action="store_true", help="train failed and diverged runs again")
    p.add_argument("--no-report", action="store_true", help="skip the fits and the report")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_study)

    s = subparsers.add_parser("status", help="the run table of a study (done / running / failed, tokens, loss)",
                              description="Print the runs recorded in a study's store.")
    s.add_argument("study", help="study directory or study YAML file")
    s.set_defaults(func=_status)


def _study(args: argparse.Namespace) -> int:
    from .driver import run_study

    result = run_study(args.study, backend=args.backend, workers=args.workers, address=args.address,
                       out=args.out, retry_failed=args.retry_failed, quiet=args.quiet,
                       report=not args.no_report, gpus=args.gpus, runs_per_gpu=args.runs_per_gpu,
                       gpus_per_run=args.gpus_per_run)
    return result.exit_code


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .schema import load_study_config
    from .store import Store

    src = Path(args.study)
    planned_ids = None
    if src.is_file():
        cfg = load_study_config(src)
        study_dir = cfg.study_dir()
    elif src.is_dir():
        study_dir = src
    else:
        raise ConfigError(f"{src}: no such study file or directory")
    with Store(study_dir, create=False) as store:
        meta = store.meta("study") or {}
        planned_ids = meta.get("run_ids")
        if planned_ids is not None:  # the learning-rate sweep's runs are the study's too
            planned_ids = planned_ids + meta.get("tune_run_ids", [])
        runs = store.runs()
    table = Table(title=f"study {meta.get('name', study_dir)} ({study_dir})")
    for col in ("run", "group", "width", "N", "status", "tokens", "best loss", "wall s", "note"):
        table.add_column(col, justify="right" if col in ("width", "N", "tokens", "best loss", "wall s") else "left")
    counts: dict[str, int] = {}
    stale = 0
    for r in runs:
        if planned_ids is not None and r["id"] not in planned_ids:
            stale += 1
            continue
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        budget = f"/{r['budget_tokens']:,}" if r["budget_tokens"] else ""
        table.add_row(r["id"], r["grp"], str(r["width"]), f"{r['params']:,}" if r["params"] else "–",
                      r["status"], f"{r['tokens']:,}{budget}",
                      f"{r['best_loss']:.4g}" if r["best_loss"] is not None else "–",
                      f"{r['wall_s']:.0f}", (r["error"] or "")[:80])
    import sys

    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    console.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no runs")
    if stale:
        console.print(f"{stale} run(s) in the store are no longer part of the study file (kept, not reported)")
    return 0
