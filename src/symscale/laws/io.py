"""Inputs of the law fits: checkpoints (N, D, C, H, loss) per group, from a CSV or a study directory.

A *group* is one architecture (or architecture variant); a *run* is one training run (one N); a *checkpoint*
is one evaluation of a run. Everything is validated on reading; problems raise
:class:`symscale.errors.DataError` with a one-line message naming the file, the line and the column/key.
Rows are kept column by column (:mod:`.rows`: ranges, duplicates, conflicting rows), not as Python objects.

Study directories (see ``docs/contracts.md``): any directory whose sub-directories, at any depth, hold
``summary.json`` + ``metrics.jsonl``. Decisions (documented in ``docs/laws.md``):

- group = ``summary["group"]`` when recorded (a study's architecture label), else ``summary["model"]``, suffixed ``"-<variant>"`` when the summary records ``variant`` (or ``tag``);
- ``status == "diverged"`` runs keep the checkpoints logged before the first non-finite loss; a non-finite
  loss in any other run is an error; ``running`` runs are used as they are (partial curves are valid);
  a ``running`` or ``diverged`` run without ``metrics.jsonl`` yet is skipped (a completed one is an error);
- κ per group = median of the runs' ``kappa`` (summary, else metrics), else median of ``C / (3 N D)``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .rows import RowTable, check_value, table_from_tuples


@dataclass(frozen=True)
class GroupData:
    """All checkpoints of one group. Arrays have one entry per checkpoint.

    Attributes:
        name: group name. run: (n,) integer run index into ``run_names``. N: parameters. D: tokens (atoms).
        C: compute (FLOPs). H: wall time in seconds, or None when unknown. loss: the fitted loss.
        kappa: the group's κ (FLOPs per parameter per atom, forward). run_names: label of each run.
        run_status: status of each run (``completed`` for CSV input). source: file or directory read.
        notes: what reading changed in the data (e.g. duplicate rows counted once); reported as warnings.
    """

    name: str
    run: np.ndarray
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    H: np.ndarray | None
    loss: np.ndarray
    kappa: float
    run_names: list[str]
    run_status: list[str] = field(default_factory=list)
    source: str = ""
    notes: tuple[str, ...] = ()

    @property
    def n_runs(self) -> int:
        return len(self.run_names)

    @property
    def n_points(self) -> int:
        return int(self.loss.shape[0])

    def take(self, mask: np.ndarray) -> "GroupData":
        """The checkpoints selected by boolean ``mask`` (run labels kept)."""
        return replace(self, run=self.run[mask], N=self.N[mask], D=self.D[mask], C=self.C[mask],
                       H=None if self.H is None else self.H[mask], loss=self.loss[mask])


def drop_warmup(group: GroupData, fraction: float, tokens: float = 0.0) -> GroupData:
    """Drop each run's checkpoints seen before ``fraction`` of that run's final token count, and every
    checkpoint before ``tokens`` atoms (an absolute start-up transient: with a constant learning rate the
    first atoms of a run are the same whatever its budget, so their length is not a fraction of it). A run
    shorter than ``tokens`` loses all its checkpoints."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"--drop-fraction must be in [0, 1), got {fraction}")
    if not tokens >= 0.0:
        raise DataError(f"--drop-tokens must be >= 0, got {tokens}")
    d_max = np.zeros(group.n_runs)
    np.maximum.at(d_max, group.run, group.D)
    return group.take((group.D >= fraction * d_max[group.run]) & (group.D >= tokens))


def _number(text, where: str, column: str) -> float:
    if text is None:
        raise DataError(f"{where}: column '{column}' is missing (the row is shorter than the header)")
    try:
        value = float(text)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: column '{column}' is not a number ({text!r})") from None
    if math.isnan(value):
        raise DataError(f"{where}: column '{column}' is NaN")
    if math.isinf(value):
        raise DataError(f"{where}: column '{column}' is infinite")
    return value


def assemble(rows: dict[str, list[tuple]], kappas: dict[str, list[float]], status: dict[tuple, str],
             source: str, has_time: bool) -> dict[str, GroupData]:
    """Build GroupData from ``rows[group] = [(run_label, N, D, C, H, loss), ...]`` (rules: :mod:`.rows`)."""
    return table_from_tuples(rows, source).groups(kappas, status, has_time)


def _utf8_error(path: Path) -> DataError:
    """The one-line error for a file that is not UTF-8 text, naming the line of the first bad byte."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); is it a binary "
                         "file? Save it as UTF-8 text")
    return DataError(f"{path}: not UTF-8 text")


def load_csv(path: str | Path, *, group_col: str = "group", n_col: str = "N", d_col: str = "D",
             c_col: str = "C", loss_col: str = "loss", run_col: str | None = None,
             time_col: str | None = None, kappa_col: str | None = None) -> dict[str, GroupData]:
    """Read checkpoints from a UTF-8 CSV (a byte-order mark is allowed) with one row per checkpoint.

    A run is ``(group, run_col)`` when ``run_col`` is given, else ``(group, N)``. κ per group comes from
    ``kappa_col`` (median) when given, else the median of ``C / (3 N D)``. Time may be 0 (such points are
    left out of the time frontier only); N, D, C and loss must be > 0; every value must lie in
    [1e-30, 1e30]. Blank lines are skipped; messages name the file's physical line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    table = RowTable(str(path))
    kappas: dict[str, list[float]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            _read_csv_rows(reader, path, table, kappas, group_col, n_col, d_col, c_col, loss_col, run_col,
                           time_col, kappa_col)
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: unreadable CSV ({exc}); is it a binary file?") from None
    return table.groups(kappas, {}, time_col is not None,
                        {"N": n_col, "D": d_col, "C": c_col, "H": time_col or "time", "loss": loss_col})


def _read_csv_rows(reader, path, table, kappas, group_col, n_col, d_col, c_col, loss_col, run_col, time_col,
                   kappa_col) -> None:
    header = next(reader, None) or []
    needed = [("--group-col", group_col), ("--n-col", n_col), ("--d-col", d_col), ("--c-col", c_col),
              ("--loss-col", loss_col), ("--run-col", run_col), ("--time-col", time_col),
              ("--kappa-col", kappa_col)]
    for flag, col in needed:
        if col is not None and col not in header:
            raise DataError(f"{path}: missing column '{col}' ({flag}); columns are {', '.join(header)}")
    idx = {col: header.index(col) for _, col in needed if col is not None}
    width = len(header)
    numeric = (n_col, d_col, c_col, loss_col)
    file = str(path)
    for row in reader:
        if not row:
            continue
        lineno = reader.line_num
        where = f"{path}: line {lineno}"
        get = (lambda col: row[idx[col]] if idx[col] < len(row) else None) if len(row) < width else \
            (lambda col: row[idx[col]])
        group = (get(group_col) or "").strip()
        if not group:
            raise DataError(f"{where}: column '{group_col}' is empty")
        N, D, C, loss = (check_value(_number(get(col), where, col), where, col) for col in numeric)
        H = float("nan")
        if time_col is not None:
            H = check_value(_number(get(time_col), where, time_col), where, time_col, zero_ok=True)
        if kappa_col is not None:
            kappas.setdefault(group, []).append(
                check_value(_number(get(kappa_col), where, kappa_col), where, kappa_col))
        label = (get(run_col) or "").strip() if run_col is not None else f"N={N:.6g}"
        table.add(group, label, N, D, C, H, loss, file, lineno)


def find_runs(root: str | Path) -> list[Path]:
    """Run directories (holding ``summary.json``) under ``root`` at any depth, sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("summary.json"))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # ValueError: invalid JSON or not UTF-8
        raise DataError(f"{path}: cannot read JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def load_study(root: str | Path, *, loss_key: str = "loss") -> dict[str, GroupData]:
    """Read every run directory under ``root`` (see the module docstring for the decisions taken)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    table = RowTable(str(root))
    kappas: dict[str, list[float]] = {}
    status: dict[tuple, str] = {}
    for run_dir in find_runs(root):
        summary = _read_json(run_dir / "summary.json")
        metrics_path = run_dir / "metrics.jsonl"
        if "model" not in summary:
            raise DataError(f"{run_dir / 'summary.json'}: missing key 'model'")
        if not metrics_path.is_file():
            if summary.get("status") in ("running", "diverged"):
                continue  # started or failed before its first evaluation: no checkpoints to use
            raise DataError(f"{metrics_path}: missing (run directory without metrics)")
        group = str(summary["model"])
        variant = summary.get("variant") or summary.get("tag")
        if summary.get("group"):
            group = str(summary["group"])
        elif variant:
            group = f"{group}-{variant}"
        label = str(summary.get("run_id") or run_dir.relative_to(root))
        run_status = str(summary.get("status", "completed"))
        status[(group, label)] = run_status
        where = f"{run_dir / 'summary.json'}"
        run_kappa = [check_value(_number(summary["kappa"], where, "kappa"), where, "kappa")] \
            if summary.get("kappa") else []
        try:
            text = metrics_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _utf8_error(metrics_path) from None
        file = str(metrics_path)
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{metrics_path}: line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{where}: invalid JSON") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected a JSON object")
            for key in ("params", "tokens", "compute", loss_key):
                if key not in rec or rec[key] is None:
                    raise DataError(f"{where}: missing key '{key}'")
            try:
                loss = float(rec[loss_key])
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"{where}: key '{loss_key}' is not a number ({rec[loss_key]!r})") from None
            if not math.isfinite(loss):
                if run_status == "diverged":
                    break  # keep what was logged before the divergence
                raise DataError(f"{where}: key '{loss_key}' is not finite ({loss})")
            N, D, C = (check_value(_number(rec[k], where, k), where, k) for k in ("params", "tokens", "compute"))
            check_value(loss, where, loss_key)
            H = rec.get("train_time_s")
            # a group with any missing time has no time frontier
            H = float("nan") if H is None else check_value(_number(H, where, "train_time_s"), where,
                                                             "train_time_s", zero_ok=True)
            if rec.get("kappa") and not run_kappa:
                run_kappa = [check_value(_number(rec["kappa"], where, "kappa"), where, "kappa")]
            table.add(group, label, N, D, C, H, loss, file, lineno)
        kappas.setdefault(group, []).extend(run_kappa)
    if not len(table):
        raise DataError(f"{root}: no run directories (summary.json + metrics.jsonl) found")
    return table.groups(kappas, status, True,
                        {"N": "params", "D": "tokens", "C": "compute", "H": "train_time_s", "loss": loss_key})
