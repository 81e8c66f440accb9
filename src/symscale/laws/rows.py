"""Checkpoint rows as they are read, kept column by column, and their conversion into per-group arrays.

A reader appends every checkpoint to a :class:`RowTable` (a few typed arrays per group: ~60 bytes per row,
no Python object per row) and :meth:`RowTable.groups` turns it into :class:`~symscale.laws.io.GroupData`.
Decisions taken there (documented in ``docs/laws.md``):

- every value of N, D, C, loss lies in [:data:`VALUE_MIN`, :data:`VALUE_MAX`] and time H in {0} ∪ that range,
  and within a group N and D span at most 15 decades, C and H (> 0) at most 30 (:data:`MAX_DECADES`): the
  fits raise these numbers to powers and multiply the results, which overflows double precision beyond;
- *exact duplicates* -- rows of one run with the same N, D and loss -- are counted once; the group records a
  note (surfaced as a warning) saying how many rows were dropped;
- two rows of one run at the same D that differ in N or loss are contradictory (two runs sharing one label,
  or a re-logged evaluation): a :class:`~symscale.errors.DataError` names both rows;
- a group needs at least two runs; runs are ordered by their smallest N, then by label.
"""

from __future__ import annotations

from array import array

import numpy as np

from ..errors import DataError

VALUE_MIN, VALUE_MAX = 1e-30, 1e30
#: Largest span (decades, max/min within a group) the fits compute with: N^(−α), D^(−β) with α, β ≤ 4
#: enter normal equations as products of up to eight such factors; C and H only through F·x^(−γ), γ ≤ 5.
MAX_DECADES = {"N": 15.0, "D": 15.0, "C": 30.0, "H": 30.0}


def check_value(value: float, where: str, column: str, *, zero_ok: bool = False) -> float:
    """``value`` if it is > 0 (or 0 when ``zero_ok``) and inside [VALUE_MIN, VALUE_MAX], else a DataError."""
    if value == 0.0 and zero_ok:
        return value
    if value <= 0.0:
        raise DataError(f"{where}: column '{column}' must be {'>=' if zero_ok else '>'} 0 (got {value:g})")
    if not VALUE_MIN <= value <= VALUE_MAX:
        raise DataError(f"{where}: column '{column}' = {value:g} is outside [{VALUE_MIN:g}, {VALUE_MAX:g}], "
                        "the range the fits can compute with (rescale the column)")
    return value


class _Columns:
    """The rows of one group: typed arrays, run labels interned to integers."""

    def __init__(self):
        self.values = {k: array("d") for k in ("N", "D", "C", "H", "loss")}
        self.run = array("i")
        self.file = array("i")
        self.line = array("q")
        self.labels: dict[str, int] = {}


class RowTable:
    """Checkpoints appended one by one (:meth:`add`), grouped, stored compactly.

    Args:
        source: the file or directory named in messages about the whole input.
    """

    def __init__(self, source: str):
        self.source = source
        self.files: list[str] = []
        self._file_index: dict[str, int] = {}
        self._groups: dict[str, _Columns] = {}

    def add(self, group: str, label: str, N: float, D: float, C: float, H: float, loss: float,
            file: str | None = None, line: int = 0) -> None:
        """Append one checkpoint; ``file``/``line`` locate it for messages (``None``: no location)."""
        cols = self._groups.get(group)
        if cols is None:
            cols = self._groups[group] = _Columns()
        run = cols.labels.get(label)
        if run is None:
            run = cols.labels[label] = len(cols.labels)
        fi = -1
        if file is not None:
            fi = self._file_index.get(file, -1)
            if fi < 0:
                fi = self._file_index[file] = len(self.files)
                self.files.append(file)
        v = cols.values
        v["N"].append(N)
        v["D"].append(D)
        v["C"].append(C)
        v["H"].append(H)
        v["loss"].append(loss)
        cols.run.append(run)
        cols.file.append(fi)
        cols.line.append(line)

    def __len__(self) -> int:
        return sum(len(c.run) for c in self._groups.values())

    def _where(self, cols: _Columns, i: int, label: str) -> str:
        if cols.file[i] < 0:
            return f"{self.source}: run '{label}'"
        return f"{self.files[cols.file[i]]}: line {cols.line[i]}"

    def groups(self, kappas: dict[str, list[float]], status: dict[tuple, str], has_time: bool,
               columns: dict[str, str] | None = None) -> dict:
        """One :class:`~symscale.laws.io.GroupData` per group name (sorted), validated and de-duplicated.

        Args:
            kappas: κ values recorded per group (median used); groups without any use median C/(3ND).
            status: ``(group, run label) -> status``; missing runs are ``completed``.
            has_time: whether H was read (a group with any NaN H has no time frontier).
            columns: the input's name of each field (``N``, ``D``, ``C``, ``H``, ``loss``) for messages.
        """
        from .io import GroupData

        names = {k: k for k in ("N", "D", "C", "H", "loss")} | (columns or {})
        out = {}
        for name in sorted(self._groups):
            cols = self._groups[name]
            N, D, C, H, loss = (np.frombuffer(cols.values[k], dtype=float) for k in ("N", "D", "C", "H", "loss"))
            run = np.frombuffer(cols.run, dtype=np.int32).astype(np.intp)
            labels = sorted(cols.labels, key=cols.labels.get)
            self._check_ranges(cols, labels, names, N, D, C, H, loss)
            keep, n_dup = self._deduplicate(cols, labels, run, N, D, loss)
            if n_dup:
                N, D, C, H, loss, run = (a[keep] for a in (N, D, C, H, loss, run))
            if len(labels) < 2:
                raise DataError(f"{self.source}: group '{name}' has {len(labels)} run (need at least 2)")
            self._check_spans(cols, labels, names, name, keep, {"N": N, "D": D, "C": C, "H": H})
            n_min = np.full(len(labels), np.inf)
            np.minimum.at(n_min, run, N)
            order = sorted(range(len(labels)), key=lambda r: (n_min[r], labels[r]))
            rank = np.empty(len(labels), dtype=np.intp)
            rank[order] = np.arange(len(labels))
            kap = kappas.get(name) or []
            kappa = float(np.median(kap)) if kap else float(np.median(C / (3.0 * N * D)))
            notes = ()
            if n_dup:
                notes = (f"{n_dup} duplicate row(s) (same run, N, D and loss as an earlier row) counted once",)
            out[name] = GroupData(
                name=name, run=rank[run], N=N.copy(), D=D.copy(), C=C.copy(),
                H=H.copy() if has_time and np.all(np.isfinite(H)) else None, loss=loss.copy(), kappa=kappa,
                run_names=[labels[r] for r in order], run_status=[status.get((name, labels[r]), "completed")
                                                                  for r in order],
                source=self.source, notes=notes)
        if not out:
            raise DataError(f"{self.source}: no checkpoints found")
        return out

    def _check_spans(self, cols, labels, names, group, keep, arrays) -> None:
        """DataError naming the rows of the extremes when a column spans more than :data:`MAX_DECADES`."""
        rows = np.flatnonzero(keep)
        for key, arr in arrays.items():
            ok = arr > 0                                   # H = 0 (not on the time frontier) and NaN H skipped
            if not ok.any():
                continue
            lo, hi = (int(np.flatnonzero(ok)[f(arr[ok])]) for f in (np.argmin, np.argmax))
            decades = float(np.log10(arr[hi] / arr[lo]))
            if decades > MAX_DECADES[key]:
                i, j = (self._where(cols, r, labels[cols.run[r]]).removeprefix(f"{self.source}: ")
                        for r in (rows[lo], rows[hi]))
                raise DataError(
                    f"{self.source}: group '{group}': column '{names[key]}' spans {decades:.1f} decades "
                    f"({i}: {arr[lo]:g} to {j}: {arr[hi]:g}); the fits compute with at most "
                    f"{MAX_DECADES[key]:g} (rescale the column or split the group)")

    def _check_ranges(self, cols, labels, names, N, D, C, H, loss) -> None:
        """Rows added without per-row validation (e.g. from the study store) are checked here, vectorised."""
        for column, arr, zero_ok in ((names["N"], N, False), (names["D"], D, False), (names["C"], C, False),
                                     (names["loss"], loss, False), (names["H"], H, True)):
            ok = (arr >= VALUE_MIN) & (arr <= VALUE_MAX)
            if zero_ok:
                ok |= (arr == 0.0) | np.isnan(arr)   # H = 0: not on the time frontier; NaN: time unknown
            if not ok.all():
                i = int(np.argmin(ok))
                where = self._where(cols, i, labels[cols.run[i]])
                if not np.isfinite(arr[i]):
                    raise DataError(f"{where}: column '{column}' is not a finite number ({arr[i]})")
                check_value(float(arr[i]), where, column, zero_ok=zero_ok)

    def _deduplicate(self, cols, labels, run, N, D, loss) -> tuple[np.ndarray, int]:
        """Mask of rows to keep (first of each exact duplicate) and the number dropped; DataError on conflicts."""
        order = np.lexsort((np.arange(run.size), loss, N, D, run))
        r, d, n, y = run[order], D[order], N[order], loss[order]
        same_point = (r[1:] == r[:-1]) & (d[1:] == d[:-1])
        if not same_point.any():
            return np.ones(run.size, dtype=bool), 0
        exact = same_point & (n[1:] == n[:-1]) & (y[1:] == y[:-1])
        conflict = np.flatnonzero(same_point & ~exact)
        if conflict.size:
            # report the earliest-read conflicting pair of rows
            pairs = np.stack([order[conflict], order[conflict + 1]], axis=1)
            i, j = sorted(pairs[np.argmin(pairs.max(axis=1))])
            label = labels[run[i]]
            if cols.file[i] >= 0 and cols.file[i] == cols.file[j]:
                where = f"{self.files[cols.file[i]]}: lines {cols.line[i]} and {cols.line[j]}"
            elif cols.file[i] >= 0:
                where = f"{self._where(cols, i, label)} and {self._where(cols, j, label)}"
            else:
                where = self.source
            raise DataError(f"{where}: run '{label}' has two different checkpoints at D = {D[i]:g} "
                            f"(N = {N[i]:g}, loss = {loss[i]:g} vs N = {N[j]:g}, loss = {loss[j]:g}); each (run, D) "
                            "must appear once: do two runs share one label (see --run-col)?")
        keep = np.ones(run.size, dtype=bool)
        keep[order[1:][exact]] = False
        return keep, int(exact.sum())


def table_from_tuples(rows: dict[str, list[tuple]], source: str) -> RowTable:
    """A :class:`RowTable` from ``rows[group] = [(run_label, N, D, C, H, loss), ...]`` (no locations)."""
    table = RowTable(source)
    for name, pts in rows.items():
        for label, N, D, C, H, loss in pts:
            table.add(name, str(label), float(N), float(D), float(C), float(H), float(loss))
    return table
