"""The progress bar of ``symscale data prepare``: structures read per second and the time left.

One bar counts the rows read (selected or not) over all shards; its total is the source's row count when the
plan knows it (ASE databases, ``.npz``, ``metadata.npz``), otherwise the bar shows the count and rate only.
Shards reused from an interrupted run count as done from the start (and not in the rate). The bar is drawn
on stderr with rich, only when stderr is a terminal and progress was not turned off (``--no-progress``,
``--quiet``).
"""

from __future__ import annotations

import sys

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Column
from rich.text import Text


class _Rate(ProgressColumn):
    """Rows read per second (over rich's recent samples)."""

    def __init__(self):
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} structures/s", style="progress.data.speed")


class PrepareProgress:
    """Rows read per shard, summed into one bar.

    Args:
        total: rows of the source, or ``None`` when not known.
        done: rows of the shards already finished (reused parts).
        enabled: draw the bar (else every method does nothing but count).
    """

    def __init__(self, total: int | None, done: int = 0, enabled: bool = True):
        self.enabled = bool(enabled) and sys.stderr.isatty()
        self._rows: dict[int, int] = {}
        self._base = int(done)
        self.kept = 0
        self._progress = None
        if self.enabled:
            count = "{task.completed:,.0f}" + ("" if total is None else f"/{total:,}") + " rows"
            self._progress = Progress(TextColumn("prepare"), BarColumn(bar_width=20), TextColumn(count), _Rate(),
                                      TextColumn("kept {task.fields[kept]:,}"), TextColumn("ETA"),
                                      TimeRemainingColumn(), transient=False, refresh_per_second=4)
            self._task = self._progress.add_task("prepare", total=total, completed=self._base, kept=0)

    @property
    def rows(self) -> int:
        return self._base + sum(self._rows.values())

    def __enter__(self) -> "PrepareProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, shard: int, rows: int) -> None:
        """Shard ``shard`` has read ``rows`` rows so far."""
        self._rows[shard] = max(int(rows), self._rows.get(shard, 0))
        if self._progress is not None:
            self._progress.update(self._task, completed=self.rows, kept=self.kept)

    def finished(self, shard: int, summary: dict) -> None:
        """Shard ``shard`` is converted (``summary`` from its part)."""
        self.kept += int(summary["structures"])
        self.update(shard, int(summary["rows"]))
