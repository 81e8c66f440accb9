"""Content fingerprints of prepared datasets: what identifies the data of a run, a study and a checkpoint.

The fingerprint is the SHA-256 of the content files of a prepared directory (every array, the split files
and ``mol_ids.json``, in sorted name order, each preceded by its name and size), so it follows the data and
not the path: a dataset edited in place gets another fingerprint, a copy keeps it. It is computed once
when the dataset is prepared and recorded in ``metadata.json`` (``fingerprint``) together with the size
and modification time of each file. Checking it is then cheap: when no file's size or modification time
changed, the recorded value stands; otherwise (an edit, or a copy that did not keep the times) the files
are hashed again and a difference is reported (:func:`verify`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import DataError

_CHUNK = 1 << 22


def content_files(directory: str | os.PathLike) -> list[Path]:
    """The files of a prepared directory that make up its content (everything but ``metadata.json``,
    markers and hidden files), sorted by name."""
    d = Path(directory)
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name != "metadata.json" and p.suffix in (".npy", ".json"))


def compute(directory: str | os.PathLike) -> str:
    """SHA-256 (hex) of the content files of ``directory``."""
    h = hashlib.sha256()
    for p in content_files(directory):
        h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def record(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``fingerprint`` entry of ``metadata.json`` for the files now in ``directory``."""
    files = {p.name: _stamp(p) for p in content_files(directory)}
    return {"sha256": compute(directory), "files": files}


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def verify(directory: str | os.PathLike, entry: dict[str, Any] | None) -> str:
    """The dataset's fingerprint, checked against the recorded ``entry``.

    When every content file has the recorded size and modification time the recorded hash is returned
    without reading anything; otherwise the files are hashed. Without a recorded entry (a dataset prepared
    before fingerprints existed) the hash is computed.

    Raises:
        DataError: the content differs from what was recorded (names the directory and both hashes).
    """
    d = Path(directory)
    if not entry or "sha256" not in entry:
        return compute(d)
    recorded = entry.get("files") or {}
    current = {p.name: _stamp(p) for p in content_files(d)}
    if current == recorded:
        return str(entry["sha256"])
    sha = compute(d)
    if sha != entry["sha256"]:
        raise DataError(f"{d}: content changed since it was prepared (fingerprint {entry['sha256'][:12]} "
                        f"recorded, {sha[:12]} now): prepare it again")
    return sha
