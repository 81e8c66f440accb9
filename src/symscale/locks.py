"""Exclusive, non-blocking ``flock`` locks whose file names the holder's process id."""

from __future__ import annotations

import fcntl
import os
from typing import IO


def try_lock(fh: IO[str]) -> str | None:
    """Take an exclusive lock on the open file ``fh`` without waiting. Returns ``None`` when taken; when
    another process holds it, closes ``fh`` and returns the pid that process wrote (``"?"`` if none)."""
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        return pid


def write_pid(fh: IO[str]) -> None:
    """Replace the locked file's content with this process's id (who holds it, for messages and ``kill``)."""
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
