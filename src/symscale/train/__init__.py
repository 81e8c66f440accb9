"""Token-counted training runs with measured compute (see ``docs/training.md``).

- :func:`run` -- train one model from a :class:`RunConfig` and return its run directory;
- :func:`load_config` -- read and validate a run YAML file;
- :func:`load_model` -- rebuild a trained model from a run directory or checkpoint.

``run`` is imported eagerly: the package attribute ``symscale.train.run`` is the *function* (the module is
``sys.modules["symscale.train.run"]``), so ``symscale.train.run(config)`` works however the package was
imported.
"""

from __future__ import annotations

from .checkpoint import load_model
from .config import RunConfig, load_config
from .run import run

__all__ = ["run", "load_config", "RunConfig", "load_model"]
