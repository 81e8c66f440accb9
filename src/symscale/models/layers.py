"""Shared layers of every architecture, and the :class:`ForceFieldModel` base class.

Every model of the staircase is a :class:`ForceFieldModel`: it implements :meth:`ForceFieldModel.compute`,
which maps a batch to *normalised* per-atom energies (and, for direct-force models, normalised per-atom
force vectors). The base class adds what is common and easy to get wrong:

* de-normalisation: ``E = sum_i (E0[Z_i] + energy_scale * e_i)``, ``F = force_scale * f`` (eV, eV/Å);
* isolated-atom consistency: the normalised output of an atom with no neighbours is subtracted, so an
  isolated atom has exactly its reference energy ``E0[Z]`` and zero force (computed in the same pass: one
  isolated atom per element present is appended to the batch, :func:`with_isolated_atoms`);
* the two force modes: ``"direct"`` (a force head, the study's choice) or ``"conservative"`` (-dE/dpos).

Initialisation (see ``docs/models.md``, "Initialisation and trainability"): every linear map is drawn
``N(0, gain² / fan_in)`` with zero bias (:func:`init_linear_`), where ``gain`` is 1 for inputs of unit second
moment and :data:`SILU_GAIN` after a SiLU, so a unit-variance signal keeps unit second moment through
every :class:`MLP` and the normalised outputs start at order one instead of ~0.005.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..data.batch import Batch

N_ELEMENTS = 119  # atomic numbers 0..118


def _count_sparse_mm() -> None:
    """Make ``FlopCounterMode`` count a CSR left factor of ``aten.mm`` by its stored entries (2 FLOPs each per
    column of the right factor) instead of as a dense matrix (esen's edge rotations, gemnet's gathers);
    dense products are counted as before. Counters created after this module is imported (every model
    imports it) see it."""
    from torch.utils.flop_counter import flop_registry

    mm = torch.ops.aten.mm
    dense = flop_registry[mm]
    if getattr(dense, "_symscale_sparse", False):
        return

    def mm_flops(a, b, *args, **kwargs):
        if isinstance(a, torch.Tensor) and a.layout == torch.sparse_csr:
            return 2 * a.values().numel() * b.shape[-1]
        return dense(a, b, *args, **kwargs)

    mm_flops._symscale_sparse = True
    flop_registry[mm] = mm_flops


_count_sparse_mm()


def second_moment_gain(fn, points: int = 80) -> float:
    """``1 / sqrt(E[fn(z)²])`` for ``z ~ N(0, 1)`` (Gauss–Hermite quadrature), the factor that restores a
    unit second moment after the activation ``fn`` (e3nn's ``normalize2mom`` constant)."""
    z, w = np.polynomial.hermite_e.hermegauss(points)
    values = fn(torch.as_tensor(z, dtype=torch.float64)).numpy()
    return float(1.0 / math.sqrt(float(np.sum(w * values**2) / math.sqrt(2.0 * math.pi))))


SILU_GAIN = second_moment_gain(torch.nn.functional.silu)  # ≈ 1.679

#: Constant multiplier of raw edge features (Bessel basis, ``r_ij / cutoff``) in the forward pass: on the
#: embedded molecules at ``cutoff = 5`` Å their second moment is ≈ 0.04–0.06 (docs/models.md), and
#: ``1 / sqrt(0.06)`` ≈ 4 brings them to unit scale. It multiplies the features, not the initial weights:
#: Adam moves every weight by ~lr per step whatever its size, so a 4x larger weight would learn 4x slower.
RADIAL_GAIN = 4.0


@torch.no_grad()
def init_linear_(layer: nn.Linear, gain: float = 1.0) -> nn.Linear:
    """Variance-preserving init: weight ``~ N(0, gain² / fan_in)``, bias 0. With ``gain = 1`` an input of
    unit second moment gives outputs of unit second moment; use ``gain = SILU_GAIN`` after a SiLU."""
    nn.init.normal_(layer.weight, std=gain / math.sqrt(layer.in_features))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` bins given by ``index`` (along dim 0). (Scale ``src`` before, not
    with ``index_add_``'s ``alpha``: on CPU ``alpha != 1`` takes a 4× slower element loop.)"""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def edge_vectors(batch: Batch, pos: torch.Tensor) -> torch.Tensor:
    """``(E, 3)`` vectors ``r_ij = pos[j] - pos[i] + shift`` (as :meth:`Batch.edge_vectors`), gathered with
    ``index_select``, whose backward is an ``index_add`` rather than the slower ``index_put`` of ``pos[j]``."""
    i, j = batch.edge_index
    return pos.index_select(0, j) - pos.index_select(0, i) + batch.edge_shift.to(pos.dtype)


def pair_linear(lin: nn.Linear, h: torch.Tensor, centre: torch.Tensor, neigh: torch.Tensor,
                edge: torch.Tensor, edge_first: bool = False) -> torch.Tensor:
    """``lin(cat([h[centre], h[neigh], edge], -1))`` (``edge_first``: ``lin(cat([edge, h[centre], h[neigh]],
    -1))``) without forming the concatenation: the two node parts are projected per atom (bias included) and
    gathered per edge, the edge part is one ``addmm`` — the same linear map with ``2 n w²`` instead of
    ``2 E w²`` FLOPs for the node parts (``n`` atoms, ``E`` edges)."""
    w, weight = h.shape[-1], lin.weight
    off = edge.shape[-1] if edge_first else 0  # first input column of the node parts
    pre = (nn.functional.linear(h, weight[:, off:off + w], lin.bias).index_select(0, centre)
           + nn.functional.linear(h, weight[:, off + w:off + 2 * w]).index_select(0, neigh))
    return torch.addmm(pre, edge, (weight[:, :off] if edge_first else weight[:, 2 * w:]).t())


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(d)`` of DimeNet (Gasteiger et al. 2020): 1 at d=0, 0 with ``p`` vanishing
    derivatives at ``d = cutoff``, and exactly 0 beyond."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = d / self.cutoff
        # 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), in Horner form
        u = 1.0 + x**p * (-0.5 * (p + 1) * (p + 2) + x * (p * (p + 2) - 0.5 * p * (p + 1) * x))
        return torch.where(x < 1.0, u, 0.0)


class BesselBasis(nn.Module):
    """Radial basis ``sqrt(2/c) sin(n pi d / c) / d`` (n = 1..num_basis) times a smooth envelope.

    Output ``(E, num_basis)``; every component goes to zero smoothly at the cutoff ``c``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, num_basis + 1) * math.pi / self.cutoff)
        self.envelope = PolynomialEnvelope(cutoff, envelope_p)
        self.num_basis = num_basis

    def forward(self, d: torch.Tensor, envelope: torch.Tensor | None = None) -> torch.Tensor:
        """``d`` ``(E,)``; ``envelope``: ``self.envelope(d)`` ``(E, 1)`` if the caller has it already."""
        d = d.unsqueeze(-1)
        safe = torch.clamp(d, min=1e-9)
        b = torch.sin(self.freq.to(d.dtype) * safe) * (math.sqrt(2.0 / self.cutoff) / safe)
        return b * (self.envelope(d) if envelope is None else envelope)


class MLP(nn.Sequential):
    """``Linear -> act -> ... -> Linear`` with SiLU activations (none after the last layer).

    Variance-preserving init (:func:`init_linear_`): the first layer uses ``input_gain`` (1 for inputs of unit
    second moment, :data:`SILU_GAIN` when the input comes out of a SiLU), later layers ``SILU_GAIN``; an
    input of the assumed scale leaves every layer, the last included, with unit second moment.
    """

    def __init__(self, dims: list[int], bias: bool = True, last_bias: bool = True, input_gain: float = 1.0):
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            last = k == len(dims) - 2
            lin = nn.Linear(dims[k], dims[k + 1], bias=last_bias if last else bias)
            layers.append(init_linear_(lin, input_gain if k == 0 else SILU_GAIN))
            if not last:
                layers.append(nn.SiLU())
        super().__init__(*layers)


class ElementEmbedding(nn.Embedding):
    """Learned embedding of the atomic number, ``(n,) -> (n, width)``."""

    def __init__(self, width: int):
        super().__init__(N_ELEMENTS, width)
        nn.init.normal_(self.weight, std=1.0)


def with_isolated_atoms(batch: Batch, numbers: torch.Tensor, pos: torch.Tensor) -> tuple[Batch, torch.Tensor]:
    """``batch`` with one isolated atom per entry of ``numbers`` appended (each its own structure, at the
    origin, no edges), and the positions ``pos`` extended the same way (``(n + u, 3)``).

    The appended atoms have no edges, so every model computes their outputs exactly as for a batch of
    isolated atoms alone (all per-atom work is row-wise): one pass gives both, with half the dispatched ops
    of two passes.
    """
    u = numbers.shape[0]
    extra = torch.arange(u, device=numbers.device)
    pos = torch.cat([pos, pos.new_zeros((u, 3))])
    cell = None if batch.cell is None else torch.cat([batch.cell, batch.cell.new_zeros((u, 3, 3))])
    merged = Batch(pos=pos, numbers=torch.cat([batch.numbers, numbers]),
                   batch=torch.cat([batch.batch, extra + batch.n_structures]), edge_index=batch.edge_index,
                   edge_shift=batch.edge_shift, n_atoms=torch.cat([batch.n_atoms, torch.ones_like(extra)]),
                   cell=cell)
    return merged, pos


class ForceFieldModel(nn.Module):
    """Base class: normalisation, isolated-atom reference, direct or conservative forces.

    Subclasses set ``self.width`` and implement :meth:`compute`.

    Args:
        forces: ``"direct"`` (a force head; subclasses return normalised forces) or ``"conservative"``
            (forces are ``-dE/dpos`` by autograd; the force head, if any, is unused).
        cutoff: neighbour cutoff radius in Å the model was designed for.
    """

    force_modes = ("direct", "conservative")

    def __init__(self, forces: str = "direct", cutoff: float = 5.0):
        super().__init__()
        if forces not in self.force_modes:
            raise ValueError(f"forces must be one of {self.force_modes}, got {forces!r}")
        self.force_mode = forces
        self.cutoff = float(cutoff)
        self.register_buffer("e0", torch.zeros(N_ELEMENTS))
        self.register_buffer("energy_scale", torch.tensor(1.0))
        self.register_buffer("force_scale", torch.tensor(1.0))

    # --------------------------------------------------------------------------- normalisation
    def set_normalization(self, e0: Mapping[int, float] | torch.Tensor | None = None,
                          energy_scale: float | None = None, force_scale: float | None = None) -> None:
        """Set per-element reference energies (eV) and the energy (eV/atom) and force (eV/Å) scales."""
        if e0 is not None:
            if isinstance(e0, Mapping):
                table = torch.zeros(N_ELEMENTS, dtype=self.e0.dtype)
                for z, v in e0.items():
                    table[int(z)] = float(v)
                e0 = table
            self.e0.copy_(torch.as_tensor(e0, dtype=self.e0.dtype))
        if energy_scale is not None:
            self.energy_scale.fill_(float(energy_scale))
        if force_scale is not None:
            self.force_scale.fill_(float(force_scale))

    # --------------------------------------------------------------------------- subclass API
    def compute(self, batch: Batch, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised per-atom energies ``(n,)`` and, in direct mode, normalised forces ``(n, 3)``.

        Must use ``pos`` (not ``batch.pos``) for every geometric quantity, e.g. ``batch.edge_vectors(pos)``,
        so that conservative forces can differentiate through it.
        """
        raise NotImplementedError

    # --------------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        conservative = self.force_mode == "conservative"
        with torch.enable_grad() if conservative else nullcontext():
            pos = batch.pos
            if conservative and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            n = pos.shape[0]
            uniq, inv = torch.unique(batch.numbers, return_inverse=True)
            node_e, node_f = self.compute(*with_isolated_atoms(batch, uniq, pos))
            node_e, iso_e = node_e.split([n, uniq.shape[0]])
            node_e = node_e - iso_e.index_select(0, inv)
            atom_energy = self.e0.to(pos.dtype)[batch.numbers] + self.energy_scale.to(pos.dtype) * node_e
            energy = scatter_sum(atom_energy, batch.batch, batch.n_structures)
            if conservative:
                (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
                forces = -grad
            else:
                if node_f is None:
                    raise RuntimeError(f"{type(self).__name__} returned no forces in direct mode")
                node_f, iso_f = node_f.split([n, uniq.shape[0]])
                forces = self.force_scale.to(pos.dtype) * (node_f - iso_f.index_select(0, inv))
        return {"energy": energy, "forces": forces, "atom_energy": atom_energy}

