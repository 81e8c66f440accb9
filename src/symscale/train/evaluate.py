"""Evaluate a model or a trained checkpoint on any dataset, with the training loss's metrics.

Metrics (exact over the whole set, independent of batching; see :class:`symscale.train.loss.ErrorSums`):
``energy_mae_per_atom`` (eV/atom), ``force_mae`` (eV/Å, per component), ``force_l2`` (eV/Å, mean norm of
the force error) and ``loss`` (the training loss formula, in normalised units).
"""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch
from ..errors import DataError
from .loss import LossFunction
from .metrics import evaluate

__all__ = ["evaluate_model", "evaluate_checkpoint"]


def _model_scale(model: nn.Module, name: str) -> float:
    value = getattr(model, name, None)
    return 1.0 if value is None else float(value)


def evaluate_model(model: nn.Module, batches: Iterable[Batch], energy_scale: float | None = None,
                   force_scale: float | None = None, dtype: torch.dtype | None = None,
                   device: str | torch.device | None = None) -> dict[str, float]:
    """Metrics of ``model`` over labelled ``batches``.

    Args:
        model: a :class:`ForceFieldModel` (or a :class:`~symscale.train.symmetry.FrameAveraging` wrapper).
        batches: labelled batches (energies and forces).
        energy_scale, force_scale: normalisation of the loss (eV/atom, eV/Å); ``None`` takes the model's
            own ``energy_scale`` / ``force_scale`` buffers, i.e. the dataset statistics it trained with,
            which reproduces the training loss. ``1.0`` gives the loss in raw eV-based units.
        dtype, device: cast the batches (default: the model's parameter dtype and device).

    Returns:
        ``{"energy_mae_per_atom", "force_mae", "force_l2", "loss", "n_structures", "n_atoms"}``.
    """
    if energy_scale is None:
        energy_scale = _model_scale(model, "energy_scale")
    if force_scale is None:
        force_scale = _model_scale(model, "force_scale")
    param = next(iter(model.parameters()), None)
    if dtype is None and param is not None:
        dtype = param.dtype
    if device is None:
        device = param.device if param is not None else "cpu"
    loss_fn = LossFunction(energy_scale=float(energy_scale), force_scale=float(force_scale))
    counted = _Counting(batches)
    out = evaluate(model, counted, loss_fn, device=device, dtype=dtype)
    out.update(n_structures=counted.n_structures, n_atoms=counted.n_atoms)
    return out


class _Counting:
    """Iterate batches, checking labels and counting structures / atoms."""

    def __init__(self, batches: Iterable[Batch]):
        self.batches = batches
        self.n_structures = 0
        self.n_atoms = 0

    def __iter__(self) -> Iterator[Batch]:
        for k, b in enumerate(self.batches):
            if b.energy is None or b.forces is None:
                raise DataError(f"batch {k}: evaluation needs reference energies and forces")
            self.n_structures += b.n_structures
            self.n_atoms += b.tokens
            yield b


def evaluate_checkpoint(checkpoint: str | os.PathLike | nn.Module, data: str | os.PathLike | None,
                        batch_size: int = 64, cutoff: float | None = None, split: str | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                        max_structures: int | None = None, allow_unseen_elements: bool = False,
                        ) -> dict[str, Any]:
    """Evaluate a trained run on a dataset.

    Args:
        checkpoint: run directory, ``checkpoint.pt`` file, or a model instance.
        data: anything :func:`symscale.data.open_dataset` reads (prepared directory, .xyz/.extxyz, .db,
            .aselmdb, .npz); ``None`` is the embedded default dataset.
        batch_size: structures per batch.
        cutoff: neighbour cutoff in Å (default: the model's own).
        split: a split of a prepared dataset (``"train"``, ``"val"``, ``"test"``); ``None`` = all structures.
        device, dtype: where and in which precision to evaluate.
        max_structures: evaluate only the first ``max_structures`` structures of the selection.
        allow_unseen_elements: evaluate structures holding elements the model never saw in training
            (by default they are refused; see :func:`symscale.train.guards.model_elements`).

    Returns:
        The metrics of :func:`evaluate_model` (loss normalised with the model's own scales) plus
        ``checkpoint``, ``data``, ``split`` and ``cutoff``.

    Raises:
        DataError: unreadable checkpoint or dataset, unknown split, empty selection, an atomic number
            outside 1..118, or (unless ``allow_unseen_elements``) an element outside the model's training
            elements -- naming the dataset, the first offending structure and the element.
        ConfigError: unknown or unavailable ``device``.
    """
    from ..calculator import resolve_model
    from ..data import open_dataset  # the data layer's single entry point for every format
    from .guards import check_dataset, model_elements, resolve_device

    device = resolve_device(device)
    if batch_size < 1:
        raise DataError(f"batch_size: must be >= 1, got {batch_size}")
    model = resolve_model(checkpoint, device)
    if model is checkpoint:  # a caller's module keeps its dtype, device and mode
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=dtype).eval()
    cutoff = float(model.cutoff if cutoff is None else cutoff)
    dataset = open_dataset(data)
    if split is None:
        indices = np.arange(len(dataset))
    else:
        indices = np.asarray(dataset.split(split))  # DataError naming the dataset for an unknown split
    if max_structures is not None:
        indices = indices[:max_structures]
    if len(indices) == 0:
        raise DataError(f"{data}: split {split!r} selects no structures")
    name = str(data) if data is not None else str(dataset.path)
    check_dataset(dataset, indices, model_elements(model), name, allow_unseen=allow_unseen_elements)

    def batches() -> Iterator[Batch]:
        for start in range(0, len(indices), batch_size):
            chunk = [dataset.structure(int(i)) for i in indices[start:start + batch_size]]
            yield Batch.from_structures(chunk, cutoff=cutoff, dtype=dtype)

    out: dict[str, Any] = evaluate_model(model, batches(), dtype=dtype, device=device)
    out.update(checkpoint=str(checkpoint) if not isinstance(checkpoint, nn.Module) else type(checkpoint).__name__,
               data=str(data) if data is not None else "default", split=split, cutoff=cutoff)
    return out
