"""The study store: an embedded SQLite database (``<study>/study.db``, WAL journal) written by the driver only.

Tables (the contract; ``docs/studies.md``):

``runs``
    ``id`` (primary key, the stable run id), ``grp`` (laws group), ``family``, ``width``, ``seed``,
    ``params`` (N), ``kappa``, ``status`` (``pending`` | ``running`` | ``completed`` | ``diverged`` |
    ``failed``), ``error`` (one line), ``attempts``, ``tokens``, ``budget_tokens``, ``best_loss``,
    ``train_time_s``, ``wall_s`` (all attempts), ``started_at`` / ``finished_at`` (Unix seconds),
    ``run_dir``, ``config`` (the resolved run config, JSON).
``evals``
    one row per evaluation point, primary key ``(run_id, step)``: ``tokens``, ``params``, ``compute``
    (3 κ N D × multiplier), ``flops_measured``, ``train_time_s``, ``loss``, ``energy_mae_per_atom``,
    ``force_mae``, ``force_l2``.

Every write is one transaction and idempotent (upserts keyed by the primary keys), so replaying the same
evaluation records after a crash neither loses nor duplicates a point.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ..errors import DataError

DB_NAME = "study.db"
EVAL_COLUMNS = ("tokens", "params", "compute", "flops_measured", "train_time_s", "loss",
                "energy_mae_per_atom", "force_mae", "force_l2")
STATUSES = ("pending", "running", "completed", "diverged", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, grp TEXT NOT NULL, family TEXT NOT NULL, width INTEGER NOT NULL,
    seed INTEGER NOT NULL, params INTEGER, kappa REAL, status TEXT NOT NULL DEFAULT 'pending',
    error TEXT, attempts INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    budget_tokens INTEGER, best_loss REAL, train_time_s REAL, wall_s REAL NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, run_dir TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT NOT NULL REFERENCES runs(id), step INTEGER NOT NULL, tokens INTEGER NOT NULL,
    params INTEGER, compute REAL, flops_measured REAL, train_time_s REAL, loss REAL,
    energy_mae_per_atom REAL, force_mae REAL, force_l2 REAL, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _num(x) -> float | None:
    """A metrics value as a float; non-finite values (written as strings by the run) become NaN."""
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


class Store:
    """Open (creating if needed) ``<study_dir>/study.db``. Use as a context manager or call :meth:`close`."""

    def __init__(self, study_dir: str | Path, create: bool = True):
        self.path = Path(study_dir) / DB_NAME
        if not create and not self.path.is_file():
            raise DataError(f"{self.path}: no study store here (run `symscale study` first)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable study store ({exc})") from None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    # ------------------------------------------------------------------ runs
    def add_runs(self, planned: Iterable) -> int:
        """Insert planned runs that are not in the store yet; return how many were new."""
        new = 0
        with self._tx():
            for p in planned:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO runs (id, grp, family, width, seed, run_dir, config) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p.id, p.group, p.family, p.width, p.seed, str(p.run_dir),
                     json.dumps(p.config.model_dump(mode="json"), sort_keys=True)))
                new += cur.rowcount
        return new

    def mark_started(self, run_id: str) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET status='running', attempts=attempts+1, error=NULL, "
                            "started_at=COALESCE(started_at, ?) WHERE id=?", (time.time(), run_id))

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        assert status in STATUSES, status
        with self._tx():
            self.db.execute("UPDATE runs SET status=?, error=? WHERE id=?", (status, error, run_id))

    def reset_interrupted(self) -> int:
        """Runs left ``running`` by a driver that died become ``pending`` again (they resume)."""
        with self._tx():
            return self.db.execute("UPDATE runs SET status='pending' WHERE status='running'").rowcount

    def reset_failed(self, run_ids: Iterable[str]) -> int:
        with self._tx():
            return sum(self.db.execute("UPDATE runs SET status='pending', error=NULL, attempts=0 "
                                       "WHERE id=? AND status IN ('failed', 'diverged')", (i,)).rowcount
                       for i in run_ids)

    def finish(self, run_id: str, outcome: dict) -> None:
        """Record a run's outcome (status, reason, summary numbers, wall time) and its evaluation points."""
        s = outcome.get("summary") or {}
        with self._tx():
            self._sync(run_id, outcome.get("rows") or [], exact=True)
            self.db.execute(
                "UPDATE runs SET status=?, error=?, params=COALESCE(?, params), kappa=COALESCE(?, kappa), "
                "tokens=COALESCE(?, tokens), budget_tokens=COALESCE(?, budget_tokens), "
                "train_time_s=COALESCE(?, train_time_s), wall_s=wall_s+?, finished_at=? WHERE id=?",
                (outcome["status"], outcome.get("reason"), s.get("params"), s.get("kappa"), s.get("tokens"),
                 s.get("budget_tokens"), s.get("train_time_s"), float(outcome.get("wall_s") or 0.0),
                 time.time(), run_id))
            self._best(run_id)

    # ------------------------------------------------------------------ evaluation points
    def sync_evals(self, run_id: str, rows: list[dict]) -> int:
        """Upsert ``rows`` (records of ``metrics.jsonl``) for a run still training; return the new count."""
        with self._tx():
            n = self._sync(run_id, rows, exact=False)
            self._best(run_id)
        return n

    def _sync(self, run_id: str, rows: list[dict], exact: bool) -> int:
        before = self.db.execute("SELECT COUNT(*) FROM evals WHERE run_id=?", (run_id,)).fetchone()[0]
        for r in rows:
            self.db.execute(
                f"INSERT INTO evals (run_id, step, {', '.join(EVAL_COLUMNS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(EVAL_COLUMNS))}) ON CONFLICT(run_id, step) DO UPDATE SET "
                + ", ".join(f"{c}=excluded.{c}" for c in EVAL_COLUMNS),
                (run_id, int(r["step"]), *(_num(r.get(c)) for c in EVAL_COLUMNS)))
        if exact:  # the run's final record set is the truth: drop points its resume re-did differently
            steps = sorted({int(r["step"]) for r in rows})
            self.db.execute(f"DELETE FROM evals WHERE run_id=? AND step NOT IN ({', '.join('?' * len(steps))})",
                            (run_id, *steps))
        if rows:
            last = rows[-1]
            self.db.execute("UPDATE runs SET tokens=MAX(tokens, ?), params=COALESCE(params, ?), "
                            "kappa=COALESCE(kappa, ?) WHERE id=?",
                            (int(last["tokens"]), last.get("params"), _num(last.get("kappa")), run_id))
        after = self.db.execute("SELECT COUNT(*) FROM evals WHERE run_id=?", (run_id,)).fetchone()[0]
        return after - before

    def _best(self, run_id: str) -> None:
        self.db.execute("UPDATE runs SET best_loss=(SELECT MIN(loss) FROM evals WHERE run_id=? AND loss=loss) "
                        "WHERE id=?", (run_id, run_id))

    # ------------------------------------------------------------------ queries
    def runs(self, ids: Iterable[str] | None = None) -> list[dict]:
        rows = [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY grp, width, seed, id")]
        if ids is not None:
            keep = set(ids)
            rows = [r for r in rows if r["id"] in keep]
        return rows

    def evals(self, run_id: str) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM evals WHERE run_id=? ORDER BY step", (run_id,))]

    def set_meta(self, key: str, value) -> None:
        with self._tx():
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                            "value=excluded.value", (key, json.dumps(value)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *rest):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def load_groups(study_dir: str | Path, run_ids: Iterable[str] | None = None, loss_key: str = "loss"):
    """Checkpoints per laws group from the store (only ``run_ids`` when given), as :class:`GroupData`.

    Rules match :func:`symscale.laws.io.load_study`: a ``diverged`` run keeps the points before its first
    non-finite loss; ``pending`` / ``running`` runs contribute what they have logged; ``failed`` runs none.
    Groups with fewer than two runs are left out (a power law in N needs at least two sizes), and so are the
    learning-rate sweep runs (group ``<group>@tune``, :mod:`symscale.study.tune`) and runs superseded by a
    longer run of the same settings (:func:`superseded`; a note names each).
    """
    from ..laws.io import assemble
    from .tune import is_tune_group

    if loss_key not in EVAL_COLUMNS:
        raise DataError(f"loss key {loss_key!r} is not stored (choose from {', '.join(EVAL_COLUMNS)})")
    with Store(study_dir, create=False) as store:
        rows: dict[str, list[tuple]] = {}
        kappas: dict[str, list[float]] = {}
        status: dict[tuple, str] = {}
        runs = store.runs(run_ids)
        longer = superseded(runs)
        for run in runs:
            if run["status"] == "failed" or is_tune_group(run["grp"]) or run["id"] in longer:
                continue
            for e in store.evals(run["id"]):
                loss = e[loss_key]
                if loss is None or not math.isfinite(loss):
                    break
                if not (e["params"] and e["tokens"] and e["compute"]) or loss <= 0:
                    continue
                rows.setdefault(run["grp"], []).append(
                    (run["id"], float(e["params"]), float(e["tokens"]), float(e["compute"]),
                     float(e["train_time_s"]) if e["train_time_s"] is not None else float("nan"), float(loss)))
            if run["kappa"]:
                kappas.setdefault(run["grp"], []).append(float(run["kappa"]))
            status[(run["grp"], run["id"])] = run["status"]
    rows = {g: pts for g, pts in rows.items() if len({p[0] for p in pts}) >= 2}
    if not rows:
        raise DataError(f"{Path(study_dir) / DB_NAME}: no group has evaluation points from two or more runs")
    groups = assemble(rows, kappas, status, str(Path(study_dir) / DB_NAME), True)
    group_of = {run["id"]: run["grp"] for run in runs}
    for short, long in sorted(longer.items()):
        g = group_of[short]
        if g in groups:
            note = f"run {short} left out: its training is the start of run {long} (same settings and seed, longer budget)"
            groups[g] = replace(groups[g], notes=groups[g].notes + (note,))
    return groups


#: run settings that do not change the training trajectory up to a run's end (its length, where it is
#: evaluated, where it is written, how batches are prefetched, whether it is compiled)
_LENGTH_KEYS = ("tokens", "epochs", "evaluation", "name", "out", "loader_workers", "compile")


def run_budget(run: dict) -> int:
    """A store row's token budget: its configured ``tokens``, else the recorded ``budget_tokens``, else the
    tokens it has seen (0 when none is known)."""
    try:
        cfg = json.loads(run.get("config") or "{}")
    except (TypeError, ValueError):
        cfg = None
    configured = cfg.get("tokens") if isinstance(cfg, dict) else None
    return int(configured or run.get("budget_tokens") or run.get("tokens") or 0)


def superseded(runs: list[dict]) -> dict[str, str]:
    """``{short run id: longer run id}`` for runs whose training is the start of another run's.

    Two runs share a trajectory when they have the same group, width, seed and settings except the length
    keys (:data:`_LENGTH_KEYS`): the same initialisation and batch stream, so the shorter one's curve is a
    prefix of the longer one's (``symscale plan design`` lengthens a width this way). Fitting both would
    count that prefix twice as if it were independent evidence. A run is superseded once the longer run
    has logged at least as many tokens as it has (a longer run still in progress does not yet replace a
    finished short one); failed runs neither supersede nor are superseded.
    """
    by_key: dict[str, list[dict]] = {}
    for run in runs:
        if run["status"] == "failed":
            continue
        try:
            cfg = json.loads(run["config"])
        except (TypeError, ValueError):
            continue
        if not isinstance(cfg, dict):
            continue
        settings = {k: v for k, v in cfg.items() if k not in _LENGTH_KEYS}
        key = json.dumps([run["grp"], run["width"], run["seed"], settings], sort_keys=True)
        by_key.setdefault(key, []).append((run_budget(run), run["tokens"] or 0, run["id"]))
    out = {}
    for same in by_key.values():
        same.sort()
        for i, (budget, seen, rid) in enumerate(same[:-1]):
            for b, s, other in reversed(same[i + 1:]):
                if b > budget and s >= seen:
                    out[rid] = other
                    break
    return out
