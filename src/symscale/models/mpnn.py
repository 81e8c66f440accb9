"""Unconstrained message-passing network: the bottom step of the symmetry staircase.

Symmetry: translation invariance only. The edge input is the *raw* relative position vector
``r_ij / cutoff`` (lab-frame x, y, z) concatenated with a Bessel basis of ``|r_ij|``; nothing makes the
output rotation- or reflection-invariant, and no augmentation is applied. Body order 2, tensor order 0.

Layer ``t`` (``h`` are ``(n, width)`` node features, ``u(d)`` the smooth cutoff envelope)::

    a_ij = silu(A h_i + B h_j + C g [r_ij / c, bessel(d_ij)])        (E, width), g = RADIAL_GAIN
    m_i  = W sum_j u(d_ij) a_ij / avg_neighbors                      (n, width)
    h_i <- h_i + MLP([h_i, m_i])                                     residual update

``A h`` and ``B h`` are computed per atom and gathered, and the linear ``W`` is applied after the sum
(it commutes with it), so the only per-edge matmul is the small ``C`` (``3 + num_basis`` inputs): FLOPs
per parameter per atom stay close to 2, like the study's MPNN (κ = 2.33).

Heads: energy ``MLP(h) -> 1`` and, in direct mode, forces ``MLP(h) -> 3`` per atom (lab-frame components,
not equivariant by construction). ``width`` is the hidden feature size (the study: 128 ... 4096).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.batch import Batch
from .layers import (MLP, RADIAL_GAIN, SILU_GAIN, BesselBasis, ElementEmbedding, ForceFieldModel, edge_vectors,
                     init_linear_, scatter_sum)

OPTIONS = {
    "forces": ("direct", "force mode: 'direct' (per-atom force head) or 'conservative' (-dE/dpos)"),
    "cutoff": (5.0, "neighbour cutoff radius in Å"),
    "num_layers": (4, "message-passing layers (fixed depth; width is the scaling knob)"),
    "num_basis": (8, "Bessel radial basis functions of the edge input"),
    "avg_neighbors": (16.0, "constant that divides each aggregated message sum"),
}

_THIRD = 3.0 ** -0.5  # the pre-activation sums three terms (receiver, sender, edge) of equal variance
#: Widths below which the edge terms ``edge_in @ edge`` of all layers are one matmul: on CPU a product with
#: an 8-wide output costs ~10x its FLOPs (fwd + bwd 0.9 ms for 4 layers at 2,500 edges vs 0.3 ms as one
#: 32-wide product); from width 16 on, one addmm per layer (the sum with the gathered node terms inside
#: the product) is faster.
BATCH_EDGE_BELOW = 16


class MPNNLayer(nn.Module):
    """One residual message-passing update on raw edge inputs (see the module docstring)."""

    def __init__(self, width: int, edge_dim: int, residual_gain: float = 1.0):
        super().__init__()
        self.src = init_linear_(nn.Linear(width, width), _THIRD)
        self.dst = init_linear_(nn.Linear(width, width, bias=False), _THIRD)
        # stored (in, out) so that ``edge_in @ edge`` and its weight gradient ``edge_in.T @ grad`` run as
        # well-shaped GEMMs: nn.Linear's (out, in) layout made the weight gradient a (width x E)·(E x 11)
        # product that ran at ~2 % of the GEMM peak and cost ~20 % of a training step (benchmarks/models.py).
        self.edge = nn.Parameter(torch.randn(edge_dim, width) * (_THIRD / edge_dim ** 0.5))
        self.out = init_linear_(nn.Linear(width, width, bias=False), SILU_GAIN)
        self.update = MLP([2 * width, width, width])
        init_linear_(self.update[-1], SILU_GAIN * residual_gain)

    def forward(self, h: torch.Tensor, edge_in: torch.Tensor, weight: torch.Tensor,
                i: torch.Tensor, j: torch.Tensor, edge_term: torch.Tensor | None = None) -> torch.Tensor:
        """``h`` ``(n, width)``; ``edge_in`` ``(E, 3 + num_basis)``; ``weight`` ``(E, 1)``: the envelope
        ``u(d_ij)`` divided by ``avg_neighbors`` (computed once per forward for all layers); ``edge_term``:
        ``edge_in @ self.edge`` if the caller computed it already (:class:`MPNN`, at small widths)."""
        # gathers by index_select (backward: index_add, not the slower index_put of x[i]), the edge term
        # added inside one addmm
        pre = self.src(h).index_select(0, i) + self.dst(h).index_select(0, j)
        pre = torch.addmm(pre, edge_in, self.edge) if edge_term is None else pre + edge_term
        a = torch.nn.functional.silu(pre)
        return h + self.update(torch.cat([h, self.out(scatter_sum(a * weight, i, h.shape[0]))], dim=-1))


class MPNN(ForceFieldModel):
    """Unconstrained MPNN (translation invariant only); ``width`` = hidden feature size."""

    def __init__(self, width: int, forces: str = "direct", cutoff: float = 5.0, num_layers: int = 4,
                 num_basis: int = 8, avg_neighbors: float = 16.0):
        super().__init__(forces=forces, cutoff=cutoff)
        if num_layers < 1 or num_basis < 1 or avg_neighbors <= 0:
            raise ValueError(f"num_layers, num_basis and avg_neighbors must be positive, got "
                             f"{num_layers}, {num_basis}, {avg_neighbors}")
        self.width = int(width)
        self.embedding = ElementEmbedding(self.width)
        self.basis = BesselBasis(cutoff, num_basis)
        self.layers = nn.ModuleList(MPNNLayer(self.width, 3 + num_basis, num_layers ** -0.5)
                                    for _ in range(num_layers))
        self.inv_avg = 1.0 / float(avg_neighbors)
        self.energy_head = MLP([self.width, self.width, 1], last_bias=False)  # a bias cancels against the isolated atom
        self.force_head = MLP([self.width, self.width, 3], last_bias=False) if forces == "direct" else None

    def compute(self, batch: Batch, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        i, j = batch.edge_index
        vec = edge_vectors(batch, pos)
        d = torch.linalg.vector_norm(vec, dim=-1)
        env = self.basis.envelope(d).unsqueeze(-1)
        edge_in = torch.cat([vec / self.cutoff, self.basis(d, env)], dim=-1) * RADIAL_GAIN
        h = self.embedding(batch.numbers).to(pos.dtype)
        weight = env * self.inv_avg
        edge_terms = [None] * len(self.layers)
        if self.width < BATCH_EDGE_BELOW:  # all layers' edge terms in one (E, 3 + B) x (3 + B, L width) matmul
            edge_terms = (edge_in @ torch.cat([layer.edge for layer in self.layers], dim=1)).split(self.width, 1)
        for layer, edge_term in zip(self.layers, edge_terms):
            h = layer(h, edge_in, weight, i, j, edge_term)
        energy = self.energy_head(h).squeeze(-1)
        forces = self.force_head(h) if self.force_head is not None else None
        return energy, forces
