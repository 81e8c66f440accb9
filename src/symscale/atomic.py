"""Atomic file writes: write beside the target, then :func:`os.replace`, so a reader (or a resumed run)
never sees a half-written file, and a failure leaves nothing behind.

Temporary files and directories from :mod:`tempfile` are private (0600 / 0700); the ones that become
outputs get the permissions of a plainly created file instead (:func:`apply_umask`), so results on a
shared group filesystem stay readable by colleagues as the user's umask intends."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    """The process umask: read from ``/proc/self/status`` where Linux shows it (no change of process state,
    safe beside other threads), else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it (0666 / 0777 minus the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s directory; when the block succeeds the temporary file
    replaces ``path`` (flushed to disk first when ``fsync``), when it raises the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        apply_umask(tmp)
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
