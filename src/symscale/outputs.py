"""Output paths: symscale only ever replaces what it wrote itself, and checks an output before long work.

Every directory symscale writes as a whole (a prepared dataset, a run, a study, a report or a ``fit --plots``
directory) holds a marker file, :data:`MARKER`, naming its kind; every JSON result file (``fit --json``,
``eval --out``, ``md --out``) carries a top-level ``"written_by"`` entry naming its kind. An existing output
is reused or replaced only when it carries the marker of the same kind (or is empty); anything else is
refused with a one-line :class:`~symscale.errors.OutputError` naming the path. Directories written before
markers existed are recognised by their own files (``metadata.json`` of a prepared dataset,
``summary.json`` + ``config.yaml`` of a run, ``fit.json`` of a report, ``study.db`` of a study).

The checks run before any long work (reading data, training, MD), so a bad output path costs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import OutputError

#: Name of the marker file inside every directory symscale writes.
MARKER = ".symscale-output.json"
#: Directory kinds and the files that recognise one written before markers existed.
DIR_KINDS = {
    "prepared": ("metadata.json",),
    "run": ("summary.json", "config.yaml"),
    "laws": ("fit.json",),
    "study": ("study.db",),
}


def _version() -> str:
    from . import __version__

    return __version__


def dir_kind(path: str | os.PathLike) -> str | None:
    """The kind of symscale output directory ``path`` is, or ``None`` (not one, or not a directory)."""
    p = Path(path)
    if not p.is_dir():
        return None
    try:
        kind = json.loads((p / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind in DIR_KINDS:
        return kind
    for name, files in DIR_KINDS.items():
        if all((p / f).is_file() for f in files):
            if name == "prepared" and not _is_prepared_metadata(p / "metadata.json"):
                continue
            return name
    return None


def _is_prepared_metadata(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == "symscale-prepared"
    except (OSError, ValueError, AttributeError):
        return False


def check_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = True, flag: str = "--out",
                     sources: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Check that symscale may write a ``kind`` directory at ``path``; return the path.

    Accepted: a path that does not exist, an empty directory, or a directory of the same ``kind`` (when
    ``overwrite``; otherwise it must not exist or be empty). Refused: a file, a directory holding anything
    else, a path inside a directory that is a file, and a directory containing one of ``sources`` (the
    inputs of the command, which replacing it would destroy).

    Raises:
        OutputError: one line naming ``flag`` and the path.
    """
    if kind not in DIR_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    p = Path(path)
    _check_parents(p, flag)
    for src in sources:
        if _inside(Path(src), p):
            raise OutputError(f"{flag}: {p} contains the input {src}; choose an output outside it")
    if not p.exists():
        return p
    if not p.is_dir():
        raise OutputError(f"{flag}: {p} is a file, not a directory")
    if not any(p.iterdir()):
        return p
    found = dir_kind(p)
    if found == kind:
        if not overwrite:
            raise OutputError(f"{flag}: {p} already exists (pass --overwrite to replace it, or choose another path)")
        return p
    what = f"a symscale {found} directory" if found else "not a directory symscale wrote"
    raise OutputError(f"{flag}: {p} exists and is {what}; symscale only replaces a {kind} directory it wrote "
                      f"(choose another path)")


def mark_dir(path: str | os.PathLike, kind: str) -> None:
    """Write the marker that recognises ``path`` as a symscale ``kind`` directory (atomically)."""
    from .atomic import write_text

    if kind not in DIR_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    write_text(Path(path) / MARKER, json.dumps({"kind": kind, "written_by": f"symscale {_version()}"}) + "\n")


def check_output_file(path: str | os.PathLike, kind: str, *, flag: str = "--out",
                      suffixes: tuple[str, ...] | None = None) -> Path:
    """Check that symscale may write the result file ``path`` of ``kind``; return the path.

    Accepted: a new file in a directory that exists or can be created, or an existing JSON file this
    kind of command wrote (its ``"written_by"`` entry). ``suffixes``: the accepted file suffixes
    (lower case, with the dot), when the format follows the suffix. For a non-JSON kind an existing file is
    always refused (it cannot carry a marker).

    Raises:
        OutputError: one line naming ``flag`` and the path.
    """
    p = Path(path)
    if str(path).endswith(os.sep) or p.is_dir():
        raise OutputError(f"{flag}: {p} is a directory; give a file name")
    _check_parents(p, flag)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputError(f"{flag}: {p}: unsupported file type {p.suffix or '(none)'!r} "
                          f"(choose {', '.join(suffixes)})")
    if p.exists() or p.is_symlink():
        if not p.is_file():
            raise OutputError(f"{flag}: {p} exists and is not a regular file")
        if written_by(p) != kind:
            raise OutputError(f"{flag}: {p} exists and is not a {kind} file symscale wrote; "
                              f"remove it or choose another path")
    return p


def written_by(path: str | os.PathLike) -> str | None:
    """The kind recorded in a JSON result file's ``"written_by"`` entry, or ``None``."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(64 << 20).decode("utf-8"))
    except (OSError, ValueError):
        return None
    entry = doc.get("written_by") if isinstance(doc, dict) else None
    return entry.get("kind") if isinstance(entry, dict) else None


def stamp(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """``doc`` with the ``"written_by"`` entry that lets :func:`check_output_file` recognise it."""
    return {"written_by": {"kind": kind, "program": f"symscale {_version()}"},
            **{k: v for k, v in doc.items() if k != "written_by"}}


def _check_parents(p: Path, flag: str) -> None:
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag}: {p}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{flag}: {p}: cannot write into {parent} (permission denied)")
            return


def _inside(inner: Path, outer: Path) -> bool:
    if not inner.exists():  # a source name that is not a path (e.g. "xtb") contains nothing
        return False
    try:
        inner_r, outer_r = inner.resolve(), outer.resolve()
    except (OSError, RuntimeError):
        return False
    return inner_r == outer_r or outer_r in inner_r.parents
