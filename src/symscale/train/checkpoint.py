"""Atomic, weights-only checkpoints of a training run, and :func:`load_model` for everything downstream.

A checkpoint is one ``torch.save`` file (``checkpoint.pt`` in the run directory) holding only tensors,
numbers, strings, lists and dicts, so that it loads with ``torch.load(..., weights_only=True)``:

* ``format``: the checkpoint format version (``1``);
* ``model``: ``{"family", "width", "options", "frame_averaging"}`` -- enough to rebuild the architecture
  with :func:`symscale.models.build`;
* ``model_state``: the model's ``state_dict`` (the *evaluation* weights: with schedule-free AdamW these
  are the averaged ``x`` sequence, the optimiser being switched to eval mode before saving), including
  the normalisation buffers ``e0`` / ``energy_scale`` / ``force_scale``;
* ``model_sha256``: :func:`state_sha256` of ``model_state`` (names, dtypes, shapes, raw bytes), added by
  :func:`save_checkpoint` and verified by every :func:`load_checkpoint` (a mismatch is a one-line
  ``DataError``; a checkpoint written before the hash existed loads with a warning); ``resume_sha256``
  likewise covers ``optimizer`` / ``loader`` / ``rng`` / ``counters`` and is verified on resume;
* ``elements``: the atomic numbers of the training data (written by training runs; ``load_model`` sets
  them as the model's ``trained_elements``, which eval, md and the calculator enforce);
* ``optimizer``, ``loader``, ``rng``, ``counters``, ``config``: what :func:`symscale.train.run` needs
  to resume (absent or empty in a model-only checkpoint).

Writes go to a temporary file in the same directory, are flushed to disk and then renamed over the
target with :func:`os.replace`, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..atomic import atomic_path
from ..errors import DataError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def checkpoint_path(run_dir_or_checkpoint: str | os.PathLike) -> Path:
    """The checkpoint file of a run directory, or the path itself when it is a file."""
    p = Path(run_dir_or_checkpoint)
    return p / CHECKPOINT_NAME if p.is_dir() else p


#: Entries a resumed run reads besides the weights; hashed together as ``resume_sha256``.
RESUME_KEYS = ("optimizer", "loader", "rng", "counters")


def state_sha256(obj: Any) -> str:
    """SHA-256 of a ``state_dict`` (or any tree of dicts, lists, tensors and scalars).

    A tensor contributes its dtype, shape and raw bytes; a dict its entries in sorted key order (the
    key's ``repr``, then the value); a list or tuple its length and items; anything else its type name
    and ``repr``. One pass over the bytes (~0.6 GB/s on one CPU core: 23 ms for the 15 MB of a width-256
    GemNet, whose ``torch.save`` takes 87 ms).
    """
    h = hashlib.sha256()
    _hash_into(h, obj)
    return h.hexdigest()


def _hash_into(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}\0".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r}\0".encode())
            _hash_into(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}\0".encode())
        for item in obj:
            _hash_into(h, item)
    else:
        h.update(f"{type(obj).__name__}:{obj!r}\0".encode())


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus ``format`` and the integrity hashes) to ``path``; return the path.

    ``model_sha256`` (:func:`state_sha256` of ``model_state``) is always added; ``resume_sha256`` covers
    the :data:`RESUME_KEYS` present. The payload must contain only weights-only-loadable objects
    (tensors, numbers, strings, bools, ``None``, lists, tuples and dicts of these).
    """
    path = Path(path)
    data = {"format": FORMAT_VERSION, **payload}
    if "model_state" in payload:
        data["model_sha256"] = state_sha256(payload["model_state"])
    if any(k in payload for k in RESUME_KEYS):
        data["resume_sha256"] = state_sha256({k: payload[k] for k in RESUME_KEYS if k in payload})
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(run_dir_or_checkpoint: str | os.PathLike, map_location: str | torch.device = "cpu",
                    resume: bool = False) -> dict[str, Any]:
    """Load a checkpoint (file or run directory) with ``weights_only=True`` and verify its weights
    (and, with ``resume=True``, the optimiser / loader / random states a resumed run reads).

    Raises:
        DataError: the file is missing, unreadable, not a symscale checkpoint, or its weights (training
            state) do not match the ``model_sha256`` (``resume_sha256``) recorded when it was saved. A
            checkpoint without a hash (written before symscale recorded one) loads with a ``UserWarning``.
    """
    path = checkpoint_path(run_dir_or_checkpoint)
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupted or foreign file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint ({msg})") from None
    if not isinstance(data, dict) or "model" not in data or not isinstance(data.get("model_state"), dict):
        raise DataError(f"{path}: not a symscale checkpoint (missing 'model' / 'model_state')")
    if int(data.get("format", 0)) > FORMAT_VERSION:
        raise DataError(f"{path}: checkpoint format {data.get('format')} is newer than this symscale "
                        f"({FORMAT_VERSION})")
    recorded = data.get("model_sha256")
    if recorded is None:
        warnings.warn(f"{path}: checkpoint has no weight hash (written before symscale recorded one); "
                      f"its integrity cannot be checked", UserWarning, stacklevel=2)
    elif recorded != state_sha256(data["model_state"]):
        raise DataError(f"{path}: checkpoint weights fail their integrity check (sha256 mismatch): the "
                        f"file was corrupted or modified after it was written")
    recorded = data.get("resume_sha256")
    if resume and recorded is not None and \
            recorded != state_sha256({k: data[k] for k in RESUME_KEYS if k in data}):
        raise DataError(f"{path}: checkpoint training state (optimizer, loader, rng, counters) fails its "
                        f"integrity check (sha256 mismatch): the file was corrupted or modified")
    return data


def model_spec(family: str, width: int, options: dict[str, Any] | None = None,
               frame_averaging: bool = False) -> dict[str, Any]:
    """The ``model`` entry of a checkpoint: how to rebuild the architecture."""
    return {"family": str(family), "width": int(width), "options": dict(options or {}),
            "frame_averaging": bool(frame_averaging)}


def build_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    """Build the (untrained) model described by a checkpoint's ``model`` entry (no frame averaging)."""
    from ..models import build

    return build(spec["family"], int(spec["width"]), **dict(spec.get("options") or {}))


def load_model(run_dir_or_checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
               frame_averaging: bool | None = None) -> torch.nn.Module:
    """Rebuild a trained model from a run directory or checkpoint file, in eval mode on ``device``.

    The returned module is the :class:`~symscale.models.layers.ForceFieldModel` with its evaluation
    weights and normalisation. When the run trained with frame averaging (or ``frame_averaging=True``)
    it is wrapped in :class:`symscale.train.symmetry.FrameAveraging`, so it predicts exactly what the
    run evaluated; pass ``frame_averaging=False`` to get the bare model.

    The model's ``trained_elements`` are the checkpoint's ``elements``, or ``None`` for a checkpoint
    without them (:func:`symscale.train.guards.model_elements` then uses the non-zero ``e0`` entries).

    Raises:
        DataError: see :func:`load_checkpoint`; also weights that do not fit the model spec.
        ConfigError: ``device`` unknown or not available (:func:`symscale.train.guards.resolve_device`).
    """
    from .guards import resolve_device

    device = resolve_device(device)
    ckpt = load_checkpoint(run_dir_or_checkpoint, map_location="cpu")
    spec = ckpt["model"]
    model = build_from_spec(spec)
    if ckpt.get("dtype") == "float64":  # before loading, so float64 weights are not rounded to float32
        model = model.to(torch.float64)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise DataError(f"{checkpoint_path(run_dir_or_checkpoint)}: weights do not match model "
                        f"{spec['family']!r} width {spec['width']} ({str(exc).splitlines()[0]})") from None
    elements = ckpt.get("elements")
    model.trained_elements = tuple(int(z) for z in elements) if elements is not None else None
    wrap = bool(spec.get("frame_averaging", False)) if frame_averaging is None else bool(frame_averaging)
    if wrap:
        from .symmetry import FrameAveraging

        model = FrameAveraging(model)
    return model.to(device).eval()


def rng_state() -> dict[str, Any]:
    """The global random states (torch CPU, CUDA when present, numpy, python) in weights-only form."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(py_version), "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
