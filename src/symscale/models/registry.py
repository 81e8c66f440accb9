"""Name -> model family registry: :func:`build`, :func:`available`, :func:`count_parameters`.

Each family lives in one module ``symscale.models.<name>`` that defines a :class:`ForceFieldModel`
subclass and a module-level dict ``OPTIONS`` (option name -> ``(default, one-line description)``).
Modules are imported lazily, so a family whose module is missing (or not written yet) does not break
the others: it is simply absent from :func:`available`, and :func:`build` reports it as a
:class:`~symscale.errors.ConfigError`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from torch import nn

from ..errors import ConfigError
from .layers import ForceFieldModel

# family name -> (module, preferred class name). The class name is a hint: when the module does not
# define it, the unique ForceFieldModel subclass defined in the module is used.
FAMILIES: dict[str, tuple[str, str]] = {
    "mpnn": ("symscale.models.mpnn", "MPNN"),
    "gemnet": ("symscale.models.gemnet", "GemNet"),
    "egnn": ("symscale.models.egnn", "MCEGNN"),
    "esen": ("symscale.models.esen", "ESEN"),
}

# Options every family accepts through ForceFieldModel, whether or not its OPTIONS lists them.
COMMON_OPTIONS: dict[str, tuple[Any, str]] = {
    "forces": ("direct", "force mode: 'direct' (force head) or 'conservative' (-dE/dpos)"),
    "cutoff": (5.0, "neighbour cutoff radius in Å"),
}


def _module(name: str) -> ModuleType | None:
    """The family module, or ``None`` when it does not exist (other import errors propagate)."""
    modname = FAMILIES[name][0]
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            return None
        raise


def _model_class(name: str, module: ModuleType) -> type[ForceFieldModel]:
    preferred = getattr(module, FAMILIES[name][1], None)
    if isinstance(preferred, type) and issubclass(preferred, ForceFieldModel):
        return preferred
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, ForceFieldModel) and v is not ForceFieldModel
             and v.__module__ == module.__name__]
    if len(found) != 1:
        raise ConfigError(f"model {name!r}: module {module.__name__} must define exactly one "
                          f"ForceFieldModel subclass (found {len(found)})")
    return found[0]


def _options(module: ModuleType) -> dict[str, tuple[Any, str]]:
    opts = dict(COMMON_OPTIONS)
    opts.update(getattr(module, "OPTIONS", {}) or {})
    return opts


def available() -> dict[str, dict[str, tuple[Any, str]]]:
    """Families whose module exists, each with its options ``{option: (default, description)}``.

    ``forces`` and ``cutoff`` (handled by :class:`ForceFieldModel`) are always included.
    """
    out = {}
    for name in FAMILIES:
        module = _module(name)
        if module is not None:
            out[name] = _options(module)
    return out


def model_class(name: str) -> type[ForceFieldModel]:
    """The :class:`ForceFieldModel` subclass of family ``name`` (ConfigError if unknown or missing)."""
    if name not in FAMILIES:
        raise ConfigError(f"model: unknown model {name!r} (known: {', '.join(FAMILIES)})")
    module = _module(name)
    if module is None:
        raise ConfigError(f"model: {name!r} is not available in this installation "
                          f"(module {FAMILIES[name][0]} not found)")
    return _model_class(name, module)


def build(name: str, width: int, **options: Any) -> ForceFieldModel:
    """Build family ``name`` at ``width`` (its single scaling knob) with keyword ``options``.

    Raises :class:`ConfigError` naming the model / option for an unknown model, an unknown option,
    a non-positive width or an option value the model rejects. The returned model records how it was
    built in ``model.build_config = {"name", "width", "options"}`` (enough to rebuild it).
    """
    cls = model_class(name)
    module = importlib.import_module(FAMILIES[name][0])
    known = _options(module)
    unknown = [k for k in options if k not in known]
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option {unknown[0]!r} "
                          f"(options: {', '.join(sorted(known))})")
    if isinstance(width, bool) or not isinstance(width, int):
        try:
            as_int = int(width)
        except (TypeError, ValueError):
            as_int = None
        if as_int is None or as_int != width or isinstance(width, bool):
            raise ConfigError(f"model {name!r}: width must be a positive integer, got {width!r}")
        width = as_int
    if width < 1:
        raise ConfigError(f"model {name!r}: width must be a positive integer, got {width!r}")
    try:
        model = cls(width, **options)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model {name!r}: {str(exc).splitlines()[0]}") from exc
    model.build_config = {"name": name, "width": width, "options": dict(options)}
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (by default trainable) parameters N; shared tensors are counted once."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))
