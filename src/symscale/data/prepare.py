"""Preparing a dataset in bounded memory: shards converted in parallel, merged, then renamed into place.

:func:`prepare_source` is ``symscale data prepare``; :func:`write_structures` is the same writer for
structures given in Python (:func:`symscale.data.write_prepared`). The work happens in a hidden directory
beside the output, ``.<name>.partial-<key>/``, where ``<key>`` hashes the source path and the reader options
(keys, units, format, ``where``):

1. plan: list the shards and count their rows (:func:`~symscale.data.shards.plan_source`);
2. convert each shard into a part ``shard-<i>/`` (:mod:`~symscale.data.convert`), in parallel
   (:mod:`~symscale.data.parallel`); a part is complete when its ``done.json`` exists, and a later run with the
   same key reuses every complete part whose shard still has the recorded size and modification time;
3. merge the parts into ``merge/`` (:mod:`~symscale.data.merge`), record the content fingerprint and the
   metadata, write the output marker, and rename ``merge/`` to the output; the partial directory goes.

Nothing that looks finished exists before step 3's rename. When a preparation stops (an invalid row, Ctrl-C,
a killed process), its complete parts stay in the partial directory and the same command continues from
them; when nothing is worth keeping (no complete part, or a merge that failed and would fail again), the
partial directory is removed, with any parent directory it created. Partial directories of the same output
with another key (other options) are removed when a preparation starts. One process at a time works on an
output (a lock in the partial directory).
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..atomic import apply_umask, write_text
from ..errors import ConfigError, DataError
from ..locks import try_lock, write_pid
from ..outputs import check_output_dir, mark_dir
from . import fingerprint
from .convert import shard_task
from .merge import merge_parts
from .parallel import check_backend, run_shards
from .parts import PartWriter, read_summary
from .prepared import FORMAT_NAME, FORMAT_VERSION
from .progress import PrepareProgress
from .readers import reader_options
from .select import Selection
from .shards import plan_source
from .splits import check_fractions
from .structure import Structure
from .validate import validate_structure

#: Changes whenever parts written by an older version could not be merged by this one.
WRITER_VERSION = 1
PARTIAL_MARKER = "partial.json"


def prepare_source(src: str | os.PathLike, out_dir: str | os.PathLike, *, energy_key: str | None = None,
                   forces_key: str | None = None, mol_id_key: str | None = None, units: str = "eV",
                   format: str | None = None, where: Selection | Sequence[str] | None = None, seed: int = 0,
                   val_fraction: float = 0.1, test_fraction: float = 0.0, workers: int | None = None,
                   backend: str = "local", address: str | None = None, progress: bool = False,
                   overwrite: bool = False, command: str | None = None, keep_partial: bool = True,
                   note: Callable[[str], None] | None = None) -> Path:
    """Prepare the source ``src`` into ``out_dir`` (see the module docstring); return the output path.

    Args:
        src: a file, a directory of files (shards) or a prepared directory.
        energy_key, forces_key, mol_id_key, units, format: reader options
            (:func:`~symscale.data.readers.read_structures`).
        where: keep only the structures satisfying every condition (:mod:`symscale.data.select`).
        seed, val_fraction, test_fraction: the split (:func:`~symscale.data.splits.make_splits`).
        workers: shards converted at once (default: the CPU count, capped by the number of shards).
        backend, address: ``local`` processes or ``ray`` tasks (see :mod:`symscale.data.parallel`).
        progress: draw a progress bar on stderr (when it is a terminal).
        overwrite: replace an existing prepared dataset at ``out_dir``.
        command: the command line recorded in metadata (default: ``sys.argv``).
        keep_partial: keep the complete parts of an unfinished preparation for the next run.
        note: called with one line for each remark on the source (e.g. a ``metadata.npz`` that was ignored).

    Raises:
        DataError: a shard that cannot be opened, an invalid selected structure, a condition on a key a row
            lacks (naming shard and row), no structure selected;
        ConfigError: invalid options or conditions; OutputError: an output symscale may not write (checked
            before anything is read).
    """
    out = check_output_dir(out_dir, "prepared", overwrite=overwrite, sources=(src,))
    check_fractions(val_fraction, test_fraction)
    check_backend(backend, workers, address)
    selection = Selection.of(where)
    given = {k: v for k, v in (("energy_key", energy_key), ("forces_key", forces_key), ("mol_id_key", mol_id_key),
                               ("units", units)) if v is not None}
    reader_options(where=selection, **given)  # every option checked before any file is opened
    plan = plan_source(src, format)
    for line in plan.notes:
        (note or (lambda _: None))(line)
    options = {**given, "where": selection.texts}
    key = hashlib.sha256(json.dumps({"source": str(Path(src).absolute()), "format": format, "options": options,
                                     "writer": WRITER_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    with _Workspace(out, key, {"source": str(src), "options": options}, keep_partial) as ws:
        parts: dict[int, tuple[Path, dict]] = {}
        tasks = []
        for shard in plan.shards:
            part = ws.path / f"shard-{shard.index:05d}"
            summary = read_summary(part)
            if summary is not None and summary.get("stamp") == shard.stamp:
                parts[shard.index] = (part, summary)
            else:
                tasks.append(shard_task(shard, part, options))
        ws.parts = parts
        bar = PrepareProgress(plan.rows, sum(s["rows"] for _, s in parts.values()), enabled=progress)
        bar.kept = sum(s["structures"] for _, s in parts.values())

        def done(task: dict, summary: dict) -> None:
            parts[task["index"]] = (Path(task["dir"]), summary)
            bar.finished(task["index"], summary)

        with bar:
            run_shards(tasks, workers=_workers(workers, backend, len(tasks)), backend=backend, address=address,
                       on_rows=lambda task, rows: bar.update(task["index"], rows), on_done=done)
        ordered = [parts[s.index] for s in plan.shards]
        rows = sum(int(s["rows"]) for _, s in ordered)
        why = f" ({rows} rows read, none satisfies where {' and '.join(selection.texts)})" if selection else ""
        ws.merging = True
        data = merge_parts(ordered, ws.fresh("merge"), source=str(src), seed=seed, val_fraction=val_fraction,
                           test_fraction=test_fraction, selected_from=why)
        extra = {"selection": {"where": selection.texts, "rows": rows, "structures": data["counts"]["structures"]},
                 "shards": {"count": len(plan.shards), "metadata_npz": plan.metadata_npz, "notes": plan.notes,
                            "files": [s.stamp for s in plan.shards]}}
        ws.finish(_metadata(str(src), command, given, data, extra), overwrite)
    return out


def _workers(workers: int | None, backend: str, n_tasks: int) -> int | None:
    if backend == "ray":
        return workers
    return max(1, min(workers or os.cpu_count() or 1, n_tasks))


def write_structures(structures: Iterable[Structure], out_dir: str | os.PathLike, *, source: str, seed: int = 0,
                     val_fraction: float = 0.1, test_fraction: float = 0.0, command: str | None = None,
                     reader_options: dict | None = None, overwrite: bool = False) -> Path:
    """:func:`symscale.data.write_prepared`: validate ``structures`` (an iterable, consumed once, one block in
    memory at a time) and write them as a prepared dataset at ``out_dir``, atomically. Nothing is resumed:
    the working directory is removed on any failure."""
    out = check_output_dir(out_dir, "prepared", overwrite=overwrite, sources=(source,))
    check_fractions(val_fraction, test_fraction)
    key = "tmp-" + hashlib.sha256(f"{os.getpid()}:{id(structures)}".encode()).hexdigest()[:12]
    with _Workspace(out, key, {"source": str(source)}, keep=False) as ws:
        writer = PartWriter(ws.path / "part", str(source))
        rows = 0
        try:
            for idx, s in enumerate(structures):
                validate_structure(s, idx, source)
                writer.add(s, idx)
                rows = idx + 1
        except BaseException:
            writer.abort()
            raise
        summary = writer.finish({"shard": 0, "path": str(source), "stamp": None, "rows": rows})
        data = merge_parts([(writer.directory, summary)], ws.fresh("merge"), source=str(source), seed=seed,
                           val_fraction=val_fraction, test_fraction=test_fraction)
        ws.finish(_metadata(str(source), command, reader_options or {}, data, {}), overwrite)
    return out


def _metadata(source: str, command: str | None, options: dict, data: dict, extra: dict) -> dict[str, Any]:
    """``metadata.json`` (without the fingerprint, which :meth:`_Workspace.finish` adds)."""
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "reader_options": dict(options),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å"},
        **data, **extra,
    }


class _Workspace:
    """The hidden working directory beside the output, locked while in use.

    On leaving with an exception it is removed (with the parent directories it created), unless ``keep``,
    some parts are complete, and the conversions stopped (an invalid row, Ctrl-C, a dead worker) or the merge
    was interrupted: then the complete parts stay for the next run, and a DataError says where.
    """

    def __init__(self, out: Path, key: str, about: dict, keep: bool):
        self.out = out
        self.path = out.parent / f".{out.name}.partial-{key}"
        self.about = about
        self.keep = keep
        self.parts: dict[int, tuple[Path, dict]] = {}
        self.merging = False
        self._lock = None
        self._created: list[Path] = []

    def __enter__(self) -> "_Workspace":
        self._created = [p for p in reversed(self.out.absolute().parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        apply_umask(self.path, directory=True)
        self._lock = _lock(self.path, self.out)
        if not (self.path / PARTIAL_MARKER).is_file():
            write_text(self.path / PARTIAL_MARKER, json.dumps({"kind": "symscale-prepare-partial", **self.about}) + "\n")
        _remove_stale(self.out, self.path)
        return self

    def fresh(self, name: str) -> Path:
        d = self.path / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        return d

    def finish(self, metadata: dict, overwrite: bool) -> None:
        """Fingerprint, ``metadata.json`` and marker in ``merge/``, then rename it to the output."""
        merged = self.path / "merge"
        apply_umask(merged, directory=True)
        metadata["fingerprint"] = fingerprint.record(merged)
        (merged / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
        mark_dir(merged, "prepared")
        trash = None
        try:
            if self.out.exists():
                if any(self.out.iterdir()):
                    check_output_dir(self.out, "prepared", overwrite=overwrite)  # it may have changed meanwhile
                    trash = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
                    os.rename(self.out, trash)
                else:
                    self.out.rmdir()
            os.rename(merged, self.out)
        except BaseException:
            if trash is not None and not self.out.exists():
                os.rename(trash, self.out)
                trash = None
            raise
        finally:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        # complete parts are worth keeping when the conversions stopped, or the merge was interrupted (a merge
        # that failed would fail again on the same parts)
        kept = (exc_type is not None and self.keep and bool(self.parts)
                and (not self.merging or not isinstance(exc, Exception)))
        shutil.rmtree(self.path / "merge", ignore_errors=True)
        self._lock.close()
        if not kept:
            shutil.rmtree(self.path, ignore_errors=True)
            for p in reversed(self._created):
                try:
                    p.rmdir()
                except OSError:
                    break
        elif isinstance(exc, DataError) and not isinstance(exc, ConfigError):
            raise DataError(f"{exc} ({len(self.parts)} finished shard(s) kept in {self.path}: the same command "
                            f"continues from them)") from None


def _lock(path: Path, out: Path):
    fh = open(path / ".lock", "a+")
    pid = try_lock(fh)
    if pid is not None:
        raise ConfigError(f"--out: another symscale process (pid {pid}) is preparing {out}")
    write_pid(fh)
    return fh


def _remove_stale(out: Path, current: Path) -> None:
    """Remove the partial directories of earlier preparations of ``out`` with other options (they can never
    be resumed), unless another process holds one."""
    for other in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):
        if other == current or not (other / PARTIAL_MARKER).is_file():
            continue
        try:
            fh = _lock(other, out)
        except ConfigError:
            continue
        fh.close()
        shutil.rmtree(other, ignore_errors=True)


def temporary_prepare(src: str | os.PathLike, **options) -> tuple[Path, tempfile.TemporaryDirectory]:
    """Prepare ``src`` into a new temporary directory (nothing kept on failure); return ``(path, handle)``,
    the directory living as long as the handle."""
    tmp = tempfile.TemporaryDirectory(prefix="symscale-prepared-")
    try:
        out = prepare_source(src, Path(tmp.name) / "data", keep_partial=False, **options)
    except BaseException:
        tmp.cleanup()
        raise
    return out, tmp
