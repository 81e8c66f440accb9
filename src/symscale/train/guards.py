"""Input guards shared by ``symscale eval``, ``symscale md``, the ASE calculator and training runs.

* :func:`resolve_device` -- a device name to a :class:`torch.device`, or a one-line ``ConfigError``
  (unknown name, CUDA / MPS not available, CUDA index out of range) before any work is done;
* :func:`model_elements` -- the atomic numbers a model was trained on (``trained_elements``, recorded
  by training runs and checkpoints; otherwise the elements with a non-zero reference energy ``e0``);
* :func:`check_numbers` / :func:`check_dataset` -- refuse atomic numbers outside 1..118 (always) and
  elements the model never saw in training (unless ``allow_unseen_elements``), with a one-line
  ``DataError`` naming the structure, the element and the atom.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from ase.data import chemical_symbols

from ..errors import ConfigError, DataError

__all__ = ["resolve_device", "model_elements", "check_numbers", "check_dataset", "MAX_Z", "OPT_IN"]

MAX_Z = 118
#: How to ask for elements outside the training set, quoted in the error message.
OPT_IN = "allow_unseen_elements=True / --allow-unseen-elements"
_CHOICES = "cpu, cuda, cuda:N, mps or auto"


def resolve_device(device: str | torch.device, field: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine.

    ``auto`` is CUDA when available, else CPU. ``field`` names the option in the error message
    (``"device"`` for a run config or a library argument, ``"--device"`` for the command line).

    Raises:
        ConfigError: unknown device string, CUDA (or MPS) requested but not available, or a CUDA
            index beyond the devices present.
    """
    name = str(device).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{field}: unknown device {name!r} (use {_CHOICES})") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{field}: {name!r} requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{field}: {name!r} requested but this machine has {count} CUDA device(s)")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{field}: {name!r} requested but MPS is not available on this machine")
        return dev
    raise ConfigError(f"{field}: unsupported device {name!r} (use {_CHOICES})")


def model_elements(model: torch.nn.Module) -> tuple[int, ...] | None:
    """Atomic numbers ``model`` was trained on, or ``None`` when unknown (nothing is then refused).

    Looks for a ``trained_elements`` attribute (set by :func:`symscale.train.run` and by
    :func:`~symscale.train.checkpoint.load_model`) on the model or the model it wraps (frame
    averaging); otherwise takes the elements with a non-zero reference energy ``e0`` (what
    ``set_normalization`` gave it). A model whose ``e0`` is all zero has no known element set.
    """
    inner = getattr(model, "model", None)
    for m in (model, inner):
        elements = getattr(m, "trained_elements", None) if m is not None else None
        if elements is not None:
            return tuple(sorted(int(z) for z in elements))
    for m in (model, inner):
        e0 = getattr(m, "e0", None) if m is not None else None
        if isinstance(e0, torch.Tensor):
            found = tuple(int(z) for z in torch.nonzero(e0.detach().cpu() != 0).flatten().tolist()
                          if 1 <= int(z) <= MAX_Z)
            return found or None
    return None


def symbols(elements: Iterable[int]) -> str:
    """``"H, C, O"`` for ``(1, 6, 8)``."""
    return ", ".join(chemical_symbols[int(z)] for z in elements)


def _problem(z: int, atom: int, allowed: tuple[int, ...] | None, allow_unseen: bool) -> str | None:
    if not 1 <= z <= MAX_Z:
        return f"atomic number {z} (atom {atom}) is outside 1..{MAX_Z}"
    if allow_unseen or allowed is None or z in allowed:
        return None
    return (f"element {chemical_symbols[z]} (Z={z}, atom {atom}) is not among the elements the model was "
            f"trained on ({symbols(allowed)}); pass {OPT_IN} to use it anyway")


def _bad_mask(z: np.ndarray, allowed: tuple[int, ...] | None, allow_unseen: bool) -> np.ndarray:
    bad = (z < 1) | (z > MAX_Z)
    if not allow_unseen and allowed is not None:
        bad |= ~np.isin(z, np.asarray(allowed, dtype=np.int64))
    return bad


def check_numbers(numbers, allowed: tuple[int, ...] | None, where: str, allow_unseen: bool = False) -> None:
    """Refuse atomic numbers outside 1..118 and, unless ``allow_unseen``, elements not in ``allowed``.

    Raises:
        DataError: ``"<where>: element Si (Z=14, atom 3) is not among the elements the model was
            trained on (H, C, O); pass allow_unseen_elements=True / --allow-unseen-elements to use it
            anyway"``, or ``"<where>: atomic number 200 (atom 0) is outside 1..118"``.
    """
    z = np.asarray(numbers, dtype=np.int64).reshape(-1)
    bad = _bad_mask(z, allowed, allow_unseen)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{where}: {_problem(int(z[k]), k, allowed, allow_unseen)}")


def check_dataset(dataset, indices: np.ndarray, allowed: tuple[int, ...] | None, name: str,
                  allow_unseen: bool = False) -> None:
    """:func:`check_numbers` over the structures ``indices`` of a prepared dataset, vectorised; the
    error names the dataset and the first offending structure (its index in the dataset)."""
    indices = np.asarray(indices, dtype=np.int64)
    z = np.asarray(dataset.numbers[dataset.atom_indices(indices)], dtype=np.int64)
    bad = _bad_mask(z, allowed, allow_unseen)
    if not bad.any():
        return
    k = int(np.argmax(bad))
    ends = np.cumsum(np.asarray(dataset.n_atoms)[indices])
    s = int(np.searchsorted(ends, k, side="right"))
    atom = k - (int(ends[s - 1]) if s else 0)
    raise DataError(f"{name} structure {int(indices[s])}: {_problem(int(z[k]), atom, allowed, allow_unseen)}")
