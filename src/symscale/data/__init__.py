"""Atomistic data: readers, the prepared format, neighbour lists, batches and token streaming.

The names below are imported on first use, so that the processes preparing data (``symscale data prepare``
workers) never load torch, which only batches and the loader need.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Batch": ".batch", "StreamingLoader": ".loader", "neighbor_list": ".neighbors",
    "PreparedDataset": ".prepared", "default_dataset_path": ".prepared", "open_dataset": ".prepared",
    "write_prepared": ".prepared", "prepare_source": ".prepare", "read_structures": ".readers",
    "Structure": ".structure", "Selection": ".select",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
