"""The training loss and the error sums evaluations are built from.

Both terms are computed on *normalised* quantities so that equal weights mean what they say:

* energy, per atom: ``e_s = (E_pred_s - E_ref_s) / (n_s * energy_scale)`` for each structure ``s``;
  ``mae`` -> ``mean_s |e_s|``, ``mse`` -> ``mean_s e_s**2``;
* forces, per atom: ``f_i = (F_pred_i - F_ref_i) / force_scale`` for each atom ``i``;
  ``l2`` -> ``mean_i ||f_i||`` (the Euclidean norm of the 3-vector, the study's choice),
  ``mse`` -> ``mean_{i,c} f_ic**2``;
* ``loss = energy_weight * energy_term + force_weight * force_term``.

``energy_scale`` (eV/atom) and ``force_scale`` (eV/Å) are the dataset's normalisation statistics
(``PreparedDataset.normalization``), the same numbers the model de-normalises its outputs with, so the
loss is dimensionless and of order one at initialisation whatever the units of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.batch import Batch


@dataclass(frozen=True)
class LossFunction:
    """``loss = w_E * energy_term + w_F * force_term`` on normalised errors (see module docstring)."""

    energy_scale: float
    force_scale: float
    energy_weight: float = 1.0
    force_weight: float = 1.0
    energy: str = "mae"
    forces: str = "l2"

    def __post_init__(self) -> None:
        if not (self.energy_scale > 0 and self.force_scale > 0):
            raise ValueError("energy_scale and force_scale must be positive")
        if self.energy not in ("mae", "mse") or self.forces not in ("l2", "mse"):
            raise ValueError(f"unknown loss kinds energy={self.energy!r} forces={self.forces!r}")

    def energy_errors(self, pred: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """``(S,)`` normalised per-atom energy errors ``e_s``."""
        n = batch.n_atoms.to(pred["energy"].dtype)
        return (pred["energy"] - batch.energy.to(pred["energy"].dtype)) / (n * self.energy_scale)

    def force_errors(self, pred: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """``(n, 3)`` normalised force errors ``f_i``."""
        return (pred["forces"] - batch.forces.to(pred["forces"].dtype)) / self.force_scale

    def terms(self, pred: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(energy_term, force_term)`` averaged over the batch."""
        e = self.energy_errors(pred, batch)
        f = self.force_errors(pred, batch)
        e_term = e.abs().mean() if self.energy == "mae" else e.square().mean()
        f_term = _norm(f).mean() if self.forces == "l2" else f.square().mean()
        return e_term, f_term

    def __call__(self, pred: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        e_term, f_term = self.terms(pred, batch)
        return self.energy_weight * e_term + self.force_weight * f_term

    def combine(self, energy_term: float, force_term: float) -> float:
        return self.energy_weight * energy_term + self.force_weight * force_term


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Row norms with a gradient that stays finite at zero error."""
    return torch.sqrt(v.square().sum(-1) + torch.finfo(v.dtype).tiny)


class ErrorSums:
    """Accumulates exact sums over many batches so metrics do not depend on how data was batched.

    :meth:`result` gives ``energy_mae_per_atom`` (eV/atom, mean over structures of ``|ΔE|/n``),
    ``force_mae`` (eV/Å, mean over atoms and components of ``|ΔF_c|``), ``force_l2`` (eV/Å, mean over
    atoms of ``||ΔF||``) and ``loss`` (the training loss formula over the whole set).
    """

    def __init__(self, loss_fn: LossFunction):
        self.loss_fn = loss_fn
        self.n_structures = 0
        self.n_atoms = 0
        self.e_abs = 0.0       # sum_s |dE_s| / n_s          (eV/atom)
        self.e_sq_norm = 0.0   # sum_s e_s**2                (normalised)
        self.f_abs = 0.0       # sum_{i,c} |dF_ic|           (eV/Å)
        self.f_l2 = 0.0        # sum_i ||dF_i||              (eV/Å)
        self.f_sq_norm = 0.0   # sum_{i,c} f_ic**2           (normalised)

    @torch.no_grad()
    def add(self, pred: dict[str, torch.Tensor], batch: Batch) -> None:
        lf = self.loss_fn
        e = lf.energy_errors(pred, batch).double()
        f = lf.force_errors(pred, batch).double()
        self.n_structures += int(e.shape[0])
        self.n_atoms += int(f.shape[0])
        self.e_abs += float(e.abs().sum()) * lf.energy_scale
        self.e_sq_norm += float(e.square().sum())
        self.f_abs += float(f.abs().sum()) * lf.force_scale
        self.f_l2 += float(f.norm(dim=-1).sum()) * lf.force_scale
        self.f_sq_norm += float(f.square().sum())

    def result(self) -> dict[str, float]:
        if self.n_structures == 0:
            raise ValueError("no batches were accumulated")
        lf = self.loss_fn
        e_mae = self.e_abs / self.n_structures
        f_l2 = self.f_l2 / self.n_atoms
        e_term = e_mae / lf.energy_scale if lf.energy == "mae" else self.e_sq_norm / self.n_structures
        f_term = f_l2 / lf.force_scale if lf.forces == "l2" else self.f_sq_norm / (3 * self.n_atoms)
        return {"energy_mae_per_atom": e_mae, "force_mae": self.f_abs / (3 * self.n_atoms),
                "force_l2": f_l2, "loss": lf.combine(e_term, f_term)}
