"""An ASE calculator backed by a trained symscale model.

>>> from symscale.calculator import SymscaleCalculator
>>> atoms.calc = SymscaleCalculator("runs/quickstart/runs/mpnn-w64-s0-<hash>")      # run directory or checkpoint.pt
>>> atoms.get_potential_energy(), atoms.get_forces()

Each call builds a one-structure :class:`~symscale.data.batch.Batch` with the model's own cutoff
(vesin neighbour list, periodic images when ``atoms.pbc`` is set) and runs the model in eval mode.
Atomic numbers outside 1..118 are refused, and so are elements the model never saw in training unless
``allow_unseen_elements=True`` (a :class:`~symscale.errors.DataError`, which is a ``ValueError``).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from .data.batch import Batch
from .data.structure import Structure

__all__ = ["SymscaleCalculator", "resolve_model"]


def resolve_model(model_or_path: nn.Module | str | os.PathLike, device: str | torch.device = "cpu",
                  ) -> nn.Module:
    """A model instance as given, or the model of a run directory / checkpoint file
    (:func:`symscale.train.checkpoint.load_model`, which raises ``DataError`` for a bad path).
    ``ConfigError`` for an unknown or unavailable ``device``."""
    from .train.guards import resolve_device

    device = resolve_device(device)
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    from .train.checkpoint import load_model

    return load_model(model_or_path, device=device)


class SymscaleCalculator(Calculator):
    """ASE calculator with ``energy``, ``free_energy`` (equal to the energy) and ``forces``.

    Args:
        model: a run directory, a checkpoint file, or a model instance (which is copied, so the
            caller's module keeps its device and dtype).
        device: torch device to evaluate on.
        dtype: floating dtype of the evaluation (float64 by default: MD energy conservation needs it).
        max_neighbors: optional neighbour cap, as used in training (``None``: all within the cutoff).
        allow_unseen_elements: evaluate elements outside the model's training elements (refused by
            default with a ``DataError`` naming the element; atomic numbers outside 1..118 always are).

    Attributes:
        force_mode: the model's ``"direct"`` or ``"conservative"`` force mode.
        elements: the atomic numbers the model was trained on (``None``: unknown, nothing refused).

    Raises:
        ConfigError: unknown or unavailable ``device``.
        DataError: unreadable checkpoint; at calculation, an atomic number outside 1..118 or an unseen
            element.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: nn.Module | str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, max_neighbors: int | None = None,
                 allow_unseen_elements: bool = False, **kwargs):
        from .train.guards import model_elements, resolve_device

        super().__init__(**kwargs)
        device = resolve_device(device)
        net = resolve_model(model, device)
        if net is model:
            net = copy.deepcopy(net)
        self.device = device
        self.dtype = dtype
        self.model = net.to(device=self.device, dtype=dtype).eval()
        self.cutoff = float(self.model.cutoff)
        self.max_neighbors = max_neighbors
        self.force_mode = str(getattr(self.model, "force_mode", "direct"))
        self.elements = model_elements(self.model)
        self.allow_unseen_elements = bool(allow_unseen_elements)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        from .train.guards import check_numbers

        super().calculate(atoms, properties, system_changes)
        check_numbers(self.atoms.numbers, self.elements, "SymscaleCalculator", self.allow_unseen_elements)
        structure = Structure.from_atoms(self.atoms)
        batch = Batch.from_structures([structure], cutoff=self.cutoff, max_neighbors=self.max_neighbors,
                                      dtype=self.dtype).to(self.device)
        with torch.no_grad():  # conservative models re-enable autograd inside their forward
            out = self.model(batch)
        energy = float(out["energy"].detach()[0])
        forces = out["forces"].detach().cpu().numpy().astype(np.float64)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
