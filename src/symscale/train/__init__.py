"""Token-counted training runs with measured compute (see ``docs/training.md``).

- :func:`run` -- train one model from a :class:`RunConfig` and return its run directory;
- :func:`load_config` -- read and validate a run YAML file;
- :mod:`.checkpoint` -- atomic checkpoints and :func:`~symscale.train.checkpoint.load_model`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run", "load_config", "RunConfig", "load_model"]


def __getattr__(name: str) -> Any:  # lazy: keeps ``import symscale.train.checkpoint`` light
    if name == "run":
        from .run import run

        return run
    if name in ("load_config", "RunConfig"):
        from . import config

        return getattr(config, name)
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
