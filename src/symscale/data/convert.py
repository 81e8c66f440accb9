"""Converting one shard into a part: the unit of work a worker process (or a Ray task) does.

:func:`convert_shard` reads one shard with the readers (selection applied while reading, every selected
structure validated), appends the structures to a :class:`~symscale.data.parts.PartWriter` block by block,
and writes the part's ``done.json`` last. Its argument and result are plain JSON-able dictionaries so that
it runs unchanged in this process, in a worker process or as a Ray task. While it works it reports the rows
read so far: to a callback in this process, or (in a worker) to the file ``progress`` of the part, which the
preparing process polls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .parts import PartWriter
from .readers import iter_rows, reader_options

#: Seconds between two progress reports of one shard.
REPORT_S = 0.5
PROGRESS = "progress"


def shard_task(shard, part_dir: Path, options: dict) -> dict:
    """The task of one shard: ``shard`` a :class:`~symscale.data.shards.Shard`, ``options`` the reader
    options as JSON (``energy_key``, ``forces_key``, ``units``, ``mol_id_key``, ``where``)."""
    return {"index": shard.index, "path": str(shard.path), "fmt": shard.fmt, "stamp": shard.stamp,
            "rows": shard.rows, "dir": str(part_dir), "options": dict(options)}


def convert_shard(task: dict, report: Callable[[int], None] | None = None) -> dict:
    """Convert the shard of ``task`` (see :func:`shard_task`) into its part directory; return the summary.

    ``report(rows_read)`` is called about every :data:`REPORT_S` seconds; without it the count is written
    to the part's ``progress`` file. The shard must not change while it is read: its size and modification
    time are compared with the task's stamp at the end.

    Raises:
        DataError: the shard cannot be read, a selected structure is invalid, a condition names a key that a
        row lacks (each names the shard and the row), or the shard changed meanwhile. The part directory is
        then removed.
    """
    path = Path(task["path"])
    part = Path(task["dir"])
    opts = reader_options(validate=True, require_labels=True, **task["options"])
    writer = PartWriter(part, str(path))
    report = report or _file_reporter(part / PROGRESS)
    rows, last = 0, time.monotonic()
    try:
        for idx, s in iter_rows(path, task["fmt"], **opts):
            rows = idx + 1
            if s is not None:
                writer.add(s, idx)
            if rows % 64 == 0 and time.monotonic() - last > REPORT_S:
                report(rows)
                last = time.monotonic()
        if task["fmt"] != "prepared":
            st = path.stat()
            if [path.name, st.st_size, st.st_mtime_ns] != list(task["stamp"]):
                raise DataError(f"{path}: the file changed while it was being read; prepare again")
        if task.get("rows") is not None and rows != task["rows"]:
            raise DataError(f"{path}: {rows} rows read but the file reported {task['rows']}")
        report(rows)
        return writer.finish({"shard": task["index"], "path": str(path), "stamp": list(task["stamp"]),
                              "rows": rows})
    except BaseException:
        writer.abort()
        raise


def _file_reporter(path: Path) -> Callable[[int], None]:
    def report(rows: int) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(str(rows))
        os.replace(tmp, path)
    return report


def read_progress(part_dir: Path) -> int:
    """Rows a worker has reported for the part (0 before its first report)."""
    try:
        return int((Path(part_dir) / PROGRESS).read_text())
    except (OSError, ValueError):
        return 0
