"""Blocks of ``esen``'s ``structure="fairchem"`` layout and its alternative node feed-forwards.

``structure="fairchem"`` follows the layout of fairchem's eSEN (``eSCNMDBackbone``, fairchem-core 2.x,
``fairchem/core/models/uma/escn_md.py`` and ``escn_md_block.py``; written from reading it, not copied):

* :class:`EdgeElementFeatures` — the invariant edge input ``[radial basis, e_src(Z_j), e_tgt(Z_i)]`` with two
  element embeddings of their own (fairchem: ``source_embedding`` / ``target_embedding``);
* :class:`RadialMLP` — ``Linear → LayerNorm → SiLU`` layers over those features, one per use (fairchem:
  ``RadialMLP``): every block and the edge-degree embedding have their own;
* :class:`ConcatMessageBlock` — each edge rotates the concatenation ``[h_j, h_i]`` (2C channels) into its
  frame, ``SO2Conv(2C → H, radial) → gate → SO2Conv(H → C)``, rotates back (fairchem: ``Edgewise``);
* :class:`ElementEdgeDegreeEmbedding` — ``m = 0`` coefficients from a radial MLP of the edge features,
  rotated back and summed (fairchem: ``EdgeDegreeEmbedding``).

Node feed-forwards (option ``ffn`` of ``esen``, any structure):

* :class:`SpectralFeedForward` — ``SO3Linear(C → H) → gate → SO3Linear(H → C)``, gates ``SiLU(Linear)`` of the
  ℓ = 0 channels only (fairchem: ``SpectralAtomwise``, the UMA configs); exactly equivariant;
* :class:`GridFeedForward` — features sampled on an S² grid, a pointwise ``C → H → H → C`` SiLU MLP, projected
  back (fairchem: ``GridAtomwise``, eSEN's default ``ff_type="grid"``). The grid (``2(L+1)`` latitudes ×
  ``2(L+1)+1`` longitudes, e3nn's ``ToS2Grid`` / ``FromS2Grid`` quadrature) reproduces band-limited functions
  exactly, but the pointwise non-linearity creates degrees above L that alias: the block, and a model using
  it, is equivariant only approximately (measured in ``tests/models/test_esen.py``).

Symscale's own choices are kept where fairchem's differ only in constants, not in FLOPs or parameters:
Bessel radial basis (fairchem: Gaussians), messages scaled by ``envelope / avg_neighbors`` (fairchem:
envelope only), :class:`~symscale.models.so2.EquivariantRMSNorm`, variance-preserving initialisation, and no
charge / spin / dataset embeddings.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from .layers import N_ELEMENTS, SILU_GAIN, init_linear_, scatter_sum
from .so2 import EdgeRotation, SO2Convolution, SO3Linear, degree_of_rows, frame_rows, gate, gate_blocks

FFN_KINDS = ("gated", "spectral", "grid")


class EdgeElementFeatures(nn.Module):
    """``(E, B) basis -> (E, B + 2R)``: ``[basis, e_src(Z_j), e_tgt(Z_i)]`` for edges ``i ← j``.

    The embeddings start at ``U(−10⁻³, 10⁻³)`` as in fairchem: the radial MLPs then start as functions of the
    distance alone (with unit-scale embeddings the ``2R`` element inputs swamp the ``B`` basis functions
    under the MLP's LayerNorm, and training starts markedly slower) and learn the element dependence.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.source = nn.Embedding(N_ELEMENTS, dim)
        self.target = nn.Embedding(N_ELEMENTS, dim)
        nn.init.uniform_(self.source.weight, -1e-3, 1e-3)
        nn.init.uniform_(self.target.weight, -1e-3, 1e-3)

    def forward(self, basis: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        i, j = edge_index
        dtype = basis.dtype
        return torch.cat([basis, self.source(numbers[j]).to(dtype), self.target(numbers[i]).to(dtype)], dim=-1)


class RadialMLP(nn.Sequential):
    """``Linear → LayerNorm → SiLU`` for each consecutive pair of ``dims`` (a SiLU after the last one too:
    the next linear map, inside the consumer, is the MLP's last layer)."""

    def __init__(self, dims: list[int]):
        layers: list[nn.Module] = []
        for k in range(len(dims) - 1):
            layers += [init_linear_(nn.Linear(dims[k], dims[k + 1]), 1.0 if k == 0 else SILU_GAIN),
                       nn.LayerNorm(dims[k + 1]), nn.SiLU()]
        super().__init__(*layers)


class ConcatMessageBlock(nn.Module):
    """Edge message ``SO2Conv(2C → H, radial) → gate → SO2Conv(H → C)`` on ``[h_j, h_i]`` in the edge frame,
    summed over neighbours (fairchem's ``Edgewise``); ``radial`` is :class:`EdgeElementFeatures`' output."""

    def __init__(self, lmax: int, mmax: int, width: int, hidden: int, edge_dim: int, radial_hidden: int,
                 parity: str):
        super().__init__()
        self.radial = RadialMLP([edge_dim, radial_hidden, radial_hidden])
        self.conv1 = SO2Convolution(lmax, mmax, 2 * width, hidden, n_extra=lmax * hidden,
                                    radial_dim=radial_hidden, parity=parity)
        self.conv2 = SO2Convolution(lmax, mmax, hidden, width, parity=parity, gain=SILU_GAIN)
        rows, _ = frame_rows(lmax, mmax)
        # degree of each edge-frame row: gate_blocks needs no index, but the buffer stays in the state_dict
        # (the checkpoint layout of earlier versions, which gated with it)
        self.register_buffer("degree", degree_of_rows(lmax)[rows])
        self.lmax, self.hidden = lmax, hidden

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, rot: EdgeRotation,
                radial: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``h``: ``(n, K, C)``; ``rot``: the edges' into-frame maps; ``radial``: ``(E, B + 2R)``;
        ``weight``: ``(E, 1, 1)``. Returns the aggregated update ``(n, K, C)``."""
        i, j = edge_index
        # the edge-frame features as their m blocks (EdgeRotation.into_blocks of the pair: contiguous, read by
        # the SO(2) convolutions and the gate without copies, splits or concatenations), (E, rows, 2C) each:
        # R [h_j, h_i] = [R h_j, R h_i] (the rotation acts on each channel); rotating the halves, each written
        # into its half of one tensor, avoids any (E, ·, 2C) concatenation and its strided gradient slices
        # (and two C-column products are faster than one with 2C)
        x = rot.into_blocks((h.index_select(0, j), h.index_select(0, i)))
        y, gates = self.conv1(x, self.radial(radial))
        y = gate_blocks(y, gates.view(-1, self.lmax, self.hidden))
        y, _ = self.conv2(y)
        msg = rot.back_blocks(y, weight)  # weight * back to the global frame, (E, K, C)
        return scatter_sum(msg, i, h.shape[0])


class ElementEdgeDegreeEmbedding(nn.Module):
    """``Σ_j D(r̂_ij) · [m = 0 coefficients = RadialMLP(edge features)]`` (fairchem's ``EdgeDegreeEmbedding``)."""

    def __init__(self, lmax: int, width: int, edge_dim: int, radial_hidden: int):
        super().__init__()
        self.radial = RadialMLP([edge_dim, radial_hidden, radial_hidden])
        self.lin = init_linear_(nn.Linear(radial_hidden, (lmax + 1) * width), SILU_GAIN)
        self.lmax, self.width = lmax, width

    def forward(self, x0: torch.Tensor, edge_index: torch.Tensor, rot: EdgeRotation, radial: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        """``x0``: ``(n, C)`` (only its size is used: the elements are in ``radial``). Returns ``(n, K, C)``."""
        m0 = self.lin(self.radial(radial)).reshape(-1, self.lmax + 1, self.width)
        return rot.back_m0_sum(m0, edge_index[0], x0.shape[0], weight)  # only the m = 0 rows are filled


class SpectralFeedForward(nn.Module):
    """``SO3Linear(C → H) → gate → SO3Linear(H → C)``; gates ``SiLU(Linear(C → L·H))`` of the ℓ = 0 row."""

    def __init__(self, lmax: int, width: int, hidden: int):
        super().__init__()
        self.scalars = init_linear_(nn.Linear(width, lmax * hidden))
        self.lin1 = SO3Linear(lmax, width, hidden)
        self.lin2 = SO3Linear(lmax, hidden, width, gain=SILU_GAIN)
        self.register_buffer("degree", degree_of_rows(lmax))
        self.lmax, self.hidden = lmax, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = nn.functional.silu(self.scalars(x[:, 0])).view(-1, self.lmax, self.hidden)
        return self.lin2(gate(self.lin1(x), g, self.degree))


def s2_grid(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to, from)`` matrices ``(G, K)`` and ``(K, G)`` of the ``2(L+1) × (2(L+1)+1)`` S² grid (float64).

    ``from @ to`` is the identity (quadrature exact up to degree L). ``to`` is scaled so that features with
    unit second moment per coefficient (what :class:`~symscale.models.so2.EquivariantRMSNorm` gives on
    average) have unit mean square on the grid; ``from`` carries the inverse factor.
    """
    res = (2 * (lmax + 1), 2 * (lmax + 1) + 1)
    k = (lmax + 1) ** 2
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its grids in the default dtype
    try:
        to = o3.ToS2Grid(lmax, res, normalization="component")(torch.eye(k)).reshape(k, -1).T
        g = to.shape[0]
        back = o3.FromS2Grid(res, lmax, normalization="component")(torch.eye(g).reshape(g, *res)).T
    finally:
        torch.set_default_dtype(previous)
    scale = 1.0 / math.sqrt(float((to * to).mean(0).sum()))
    return to * scale, back / scale


class GridFeedForward(nn.Module):
    """Pointwise ``C → H → H → C`` SiLU MLP (no biases) on the S² grid of :func:`s2_grid` (fairchem's
    ``GridAtomwise``). Only approximately equivariant (see the module docstring).

    The MLP's first and last linear maps act on channels and the grid transforms on coefficients, so they
    commute: they are applied to the ``K`` coefficients instead of the ``G`` grid points (the same function;
    ``G = 2(L+1)(2L+3) > K = (L+1)²``). Each transform is one matmul over all atoms.
    """

    def __init__(self, lmax: int, width: int, hidden: int):
        super().__init__()
        to, back = s2_grid(lmax)  # kept in float64 (like EdgeFrame's constants), cast to the input's dtype
        self.register_buffer("to_grid", to)
        self.register_buffer("from_grid", back)
        dims = [width, hidden, hidden, width]
        layers: list[nn.Module] = []
        for k in range(3):
            layers.append(init_linear_(nn.Linear(dims[k], dims[k + 1], bias=False), 1.0 if k == 0 else SILU_GAIN))
            if k < 2:
                layers.append(nn.SiLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K, C) -> (n, K, C)``."""
        first, act1, middle, act2, last = self.mlp
        n, k, _ = x.shape
        to, back = self.to_grid.to(x.dtype), self.from_grid.to(x.dtype)
        h = first(x.transpose(0, 1))                                     # (K, n, H)
        hidden = h.shape[-1]
        grid = (to @ h.reshape(k, n * hidden)).view(to.shape[0], n, hidden)  # (G, n, H)
        grid = act2(middle(act1(grid)))
        out = (back @ grid.reshape(grid.shape[0], n * hidden)).view(k, n, hidden)
        return last(out).transpose(0, 1)


def feed_forward(kind: str, lmax: int, width: int, hidden: int) -> nn.Module:
    """The ``"spectral"`` or ``"grid"`` node feed-forward (``"gated"`` lives in ``esen.py``)."""
    if kind == "spectral":
        return SpectralFeedForward(lmax, width, hidden)
    if kind == "grid":
        return GridFeedForward(lmax, width, hidden)
    raise ValueError(f"feed_forward: kind must be 'spectral' or 'grid', got {kind!r}")
