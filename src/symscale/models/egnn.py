"""MC-EGNN: an E(n)-equivariant GNN with several Cartesian vector channels per atom.

After Levy et al. 2023, "Using Multiple Vector Channels Improves E(n)-Equivariant Graph Neural Networks":
each atom carries ``width`` scalar features ``h_i`` and ``C`` vector channels ``V_i`` (stored ``(3, C)``), with
``C = max(2, width // 8)`` unless ``vector_channels`` is given. Symmetry: E(3) (rotations, reflections,
translations); tensor order l = 1. Vector channels are relative quantities (built from edge vectors),
so translations act trivially, and all nonlinearities act on invariants only.

Layer (``r_ij`` the edge vector, ``c`` the cutoff, ``u(d)`` the smooth envelope, ``x = r_ij / c``)::

    s_ij  = [V_i . x, V_j . x, <V_i, V_j>]                             vector invariants
    m_ij  = u(d_ij) silu(M silu(A h_i + B h_j + R g bessel(d_ij) + S s_ij))    edge MLP, g = RADIAL_GAIN
    h_i  <- h_i + MLP([h_i, sum_j m_ij / avg, |V_i|^2])               residual scalar update
    V_i  <- V_i + k sum_j (a(m_ij) x + b(m_ij) * V_j) / avg           a, b: linear maps to C weights
    V_i  <- V_i + Q V_i                                               channel mixing (C x C)

(``k = VEC_GAIN``; ``g`` and ``k`` are constant multipliers that set the initial scale, see
docs/models.md "Initialisation and trainability").

The second message layer ``M`` and the vector weights ``a, b`` act per edge (as in EGNN's edge MLP), so
FLOPs per parameter per atom grow with the neighbour count (the study measures κ = 28.09).

Heads: energy ``MLP([h_i, |V_i|^2]) -> 1``; forces (direct mode) ``F_i = sum_c w_c V_i^c`` with learned
``w`` (equivariant and translation invariant). ``width`` = scalar feature size; the number of vector
channels follows it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import silu

from ..data.batch import Batch
from .layers import (MLP, RADIAL_GAIN, SILU_GAIN, BesselBasis, ElementEmbedding, ForceFieldModel, edge_vectors,
                     init_linear_, scatter_sum)

OPTIONS = {
    "forces": ("direct", "force mode: 'direct' (linear combination of vector channels) or 'conservative'"),
    "cutoff": (5.0, "neighbour cutoff radius in Å"),
    "num_layers": (4, "message-passing layers (fixed depth; width is the scaling knob)"),
    "num_basis": (8, "Bessel radial basis functions"),
    "vector_channels": (None, "Cartesian vector channels C; None = max(2, width // 8)"),
    "avg_neighbors": (16.0, "constant that divides each aggregated message sum"),
}


def default_vector_channels(width: int) -> int:
    """``C = max(2, width // 8)``: vector channels grow with the width knob."""
    return max(2, int(width) // 8)

# Initialisation constants (variance-preserving init, see docs/models.md "Initialisation and trainability").
_THIRD = 3.0 ** -0.5  # the pre-activation sums three terms (receiver, sender, invariants) of equal variance
VEC_GAIN = 4.0  # forward multiplier: sum_j w x_ij / avg largely cancels (|x| < 1, neighbours all around)


class MCEGNNLayer(nn.Module):
    """One multi-channel EGNN layer (scalar and vector updates, see the module docstring)."""

    def __init__(self, width: int, channels: int, num_basis: int, avg_neighbors: float,
                 residual_gain: float = 1.0):
        super().__init__()
        self.channels = channels
        self.src = init_linear_(nn.Linear(width, width), _THIRD)
        self.dst = init_linear_(nn.Linear(width, width, bias=False), _THIRD)
        # the invariants' map, drawn as one (width, B + 3C) matrix and kept as two: ``radial`` (B -> width) is an
        # input map (its fan-in does not grow with width, so μP keeps its learning rate), ``inv`` (3C -> width)
        # is a hidden one. As one matrix its radial columns were trained at lr * base / width, which stalled
        # wide models on the zero-force plateau (docs/models.md "Initialisation and trainability").
        both = init_linear_(nn.Linear(num_basis + 3 * channels, width, bias=False), _THIRD).weight.detach()
        self.radial = nn.utils.skip_init(nn.Linear, num_basis, width, bias=False)  # (no RNG draws)
        self.inv = nn.utils.skip_init(nn.Linear, 3 * channels, width, bias=False)
        with torch.no_grad():
            self.radial.weight.copy_(both[:, :num_basis])
            self.inv.weight.copy_(both[:, num_basis:])
        self.msg = init_linear_(nn.Linear(width, width), SILU_GAIN)
        self.update = MLP([2 * width + channels, width, width])
        init_linear_(self.update[-1], SILU_GAIN * residual_gain)
        self.vec_weights = init_linear_(nn.Linear(width, 2 * channels, bias=False),  # no bias: m carries u(d)
                                        SILU_GAIN * residual_gain)
        # V <- V + Q V starts as the identity: with few channels a random Q compounds over layers
        # (seen: |V| x10 and normalised energies ~10 at C = 4); Q still gets gradients, (dL/dV') V^T.
        self.mix = nn.Linear(channels, channels, bias=False)
        nn.init.zeros_(self.mix.weight)
        self.inv_avg = 1.0 / float(avg_neighbors)

    def forward(self, h: torch.Tensor, v: torch.Tensor | None, xr: torch.Tensor, rbf: torch.Tensor,
                env: torch.Tensor, i: torch.Tensor, j: torch.Tensor):
        """``h`` ``(n, width)``; ``v`` ``(n, 3C)`` vector channels, components first (``V[a, c]`` at ``a C + c``),
        or ``None`` for ``V = 0`` (the first layer); ``xr`` ``(E, 3C)``: ``x = r / c`` with each component
        repeated ``C`` times; ``rbf`` ``(E, B)``; ``env`` ``(E, 1)``. Returns the updated ``(h, v)``.

        Every vector operation is elementwise on ``(E, 3C)`` rows (no broadcast of per-edge scalars over a
        few channels, whose CPU kernels take ~70 µs per op on 2,500 edges whatever ``C``), and sums over the
        three components add three column blocks."""
        n, c = h.shape[0], self.channels
        pre = self.src(h).index_select(0, i) + self.dst(h).index_select(0, j)
        pre = torch.addmm(pre, rbf, self.radial.weight.t())            # + R g bessel(d_ij)
        if v is None:  # V = 0: the vector invariants, |V_i|^2 and the b(m) V_j term vanish; skip them
            m = silu(self.msg(silu(pre))) * env
            norms = h.new_zeros((n, c))
        else:
            vi, vj = v.index_select(0, i), v.index_select(0, j)        # (E, 3C)
            # invariants V_i . x, V_j . x, <V_i, V_j>
            s = torch.cat([_components_sum(vi * xr, c), _components_sum(vj * xr, c),
                           _components_sum(vi * vj, c)], dim=-1)
            m = silu(self.msg(silu(torch.addmm(pre, s, self.inv.weight.t())))) * env
            norms = _components_sum(v * v, c)                          # (n, C) invariants |V_i|^2
        h = h + self.update(torch.cat([h, scatter_sum(m, i, n) * self.inv_avg, norms], dim=-1))
        if v is None:  # V <- 0 + k sum_j a(m_ij) x / avg
            wa = nn.functional.linear(m, self.vec_weights.weight[:c])
            v = scatter_sum(torch.cat([wa, wa, wa], dim=1) * xr, i, n) * (self.inv_avg * VEC_GAIN)
        else:
            wa, wb = self.vec_weights(m).split(c, dim=1)               # (E, C) each; m carries u(d)
            dv = torch.addcmul(torch.cat([wa, wa, wa], dim=1) * xr, torch.cat([wb, wb, wb], dim=1), vj)
            v = torch.add(v, scatter_sum(dv, i, n), alpha=self.inv_avg * VEC_GAIN)
        v = v.view(-1, c)
        return h, torch.addmm(v, v, self.mix.weight.t()).view(n, 3 * c)  # V <- V + Q V (channel mixing)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the split hold one ``inv.weight`` of shape ``(width, B + 3C)``: its first
        ``B`` columns are ``radial.weight``."""
        key = prefix + "inv.weight"
        if prefix + "radial.weight" not in state_dict and key in state_dict:
            both = state_dict.pop(key)
            b = both.shape[1] - 3 * self.channels
            state_dict[prefix + "radial.weight"], state_dict[key] = both[:, :b], both[:, b:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _components_sum(t: torch.Tensor, c: int) -> torch.Tensor:
    """``(N, 3C) -> (N, C)``: the sum over the three components (column blocks of width ``C``)."""
    a, b, d = t.split(c, dim=1)
    return a + b + d


class MCEGNN(ForceFieldModel):
    """Multi-channel E(3)-equivariant GNN; ``width`` = scalar features, ``C`` vector channels."""

    def __init__(self, width: int, forces: str = "direct", cutoff: float = 5.0, num_layers: int = 4,
                 num_basis: int = 8, vector_channels: int | None = None, avg_neighbors: float = 16.0):
        super().__init__(forces=forces, cutoff=cutoff)
        channels = default_vector_channels(width) if vector_channels is None else int(vector_channels)
        if num_layers < 1 or num_basis < 1 or channels < 1 or avg_neighbors <= 0:
            raise ValueError(f"num_layers, num_basis, vector_channels and avg_neighbors must be positive, "
                             f"got {num_layers}, {num_basis}, {channels}, {avg_neighbors}")
        self.width = int(width)
        self.channels = channels
        self.embedding = ElementEmbedding(self.width)
        self.basis = BesselBasis(cutoff, num_basis)
        self.layers = nn.ModuleList(MCEGNNLayer(self.width, channels, num_basis, avg_neighbors,
                                                num_layers ** -0.5) for _ in range(num_layers))
        self.energy_head = MLP([self.width + channels, self.width, 1], last_bias=False)
        self.force_head = (init_linear_(nn.Linear(channels, 1, bias=False)) if forces == "direct" else None)

    def compute(self, batch: Batch, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        i, j = batch.edge_index
        vec = edge_vectors(batch, pos)
        d = torch.linalg.vector_norm(vec, dim=-1)
        x = vec / self.cutoff
        env = self.basis.envelope(d).unsqueeze(-1)
        rbf = self.basis(d, env) * RADIAL_GAIN
        h = self.embedding(batch.numbers).to(pos.dtype)
        xr = x.repeat_interleave(self.channels, dim=1)                # (E, 3C), once for all layers
        v = None                                                      # V = 0 before the first layer
        for layer in self.layers:
            h, v = layer(h, v, xr, rbf, env, i, j)                   # (n, 3C): components first
        energy = self.energy_head(torch.cat([h, _components_sum(v * v, self.channels)], dim=-1)).squeeze(-1)
        forces = None
        if self.force_head is not None:
            forces = self.force_head(v.view(-1, 3, self.channels)).squeeze(-1)  # (n, 3) = sum_c w_c V^c
        return energy, forces
