"""Building blocks of eSCN-style SO(2) convolutions on spherical-harmonic features (ℓ ≤ lmax).

Feature layout: one tensor ``(n, K, C)`` with ``K = (lmax+1)²`` rows in e3nn order (row ``ℓ² + ℓ + m``,
``m = -ℓ..ℓ``, real basis, polar axis **y**; in e3nn ≥ 0.5 the ℓ=1 rows are ``(x, y, z)``) and ``C`` channels.

The trick of eSCN (Passaro & Zitnick 2023): rotate every edge so that its direction ``r̂`` becomes the
polar axis. In that frame a tensor product with the edge's spherical harmonics only couples coefficients
with the same ``|m|``, so the O(L⁶) Clebsch–Gordan product becomes an O(L³) "SO(2) convolution": a linear
map per ``m`` over ``(ℓ, channel)``, with ``(+m, −m)`` mixed like a complex multiplication.

* :class:`~symscale.models.edge_frame.EdgeFrame` (module ``edge_frame``, re-exported here) builds, once per
  forward, the Wigner-D rotation of every edge (block-diagonal per ℓ) from ``r̂`` without inverse trigonometric
  functions, so gradients are finite for every direction.
* :class:`SO2Convolution` is the per-``m`` linear map in the edge frame, modulated by radial functions.
* :class:`SO3Linear`, :class:`EquivariantRMSNorm` and :func:`gate` act on node features in e3nn order.

Parity. Coefficients of natural parity (ℓ even → even, ℓ odd → odd, what vectors and their spherical
harmonics give) change under the mirror that fixes the polar axis by a sign that differs between ``+m``
and ``−m``. eSCN's "imaginary" weight (``+m ↔ −m`` coupling) realises the pseudo-tensor paths
(ℓ₁+ℓ₂+ℓ₃ odd) and breaks that mirror: the model is then SO(3)- but not O(3)-equivariant
(``parity="so3"``). With ``parity="o3"`` only the "real" weight is kept, every feature has natural parity
and the network is equivariant to rotations *and* reflections.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .edge_frame import EdgeFrame, EdgeRotation, degree_of_rows, frame_rows  # noqa: F401 (re-exported)
from .layers import SILU_GAIN, init_linear_

PARITIES = ("o3", "so3")


def _normal(*shape: int, fan_in: int, gain: float = 1.0) -> nn.Parameter:
    """Variance-preserving weights ``N(0, gain² / fan_in)`` (see :func:`symscale.models.layers.init_linear_`)."""
    return nn.Parameter(torch.randn(*shape) * (gain / math.sqrt(fan_in)))


class BlockLinear(nn.Linear):
    """:class:`torch.nn.Linear` ``in_features -> sum(sizes)`` whose output is returned as its column blocks
    ``[(N, sizes[b])]``, each computed by its own product: contiguous blocks (column slices of one product are
    strided, which made every elementwise product with them and the concatenation of their gradients slower
    than the extra small products). Same parameters (and state_dict) as the plain linear map."""

    def __init__(self, in_features: int, sizes: list[int]):
        super().__init__(in_features, sum(sizes))
        self.sizes = list(sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [nn.functional.linear(x, w, b) for w, b in
                zip(torch.split(self.weight, self.sizes), torch.split(self.bias, self.sizes))]


class SO2Convolution(nn.Module):
    """Linear map of edge-frame features ``(E, K', c_in) -> (E, K', c_out)`` commuting with rotations
    about the polar axis (and, for ``parity="o3"``, with the mirror that fixes it).

    * ``m = 0``: one dense map over ``(ℓ, channel)`` (with bias), plus ``n_extra`` invariant scalars
      (e.g. gates) returned separately.
    * ``m > 0``: ``(x₊, x₋) -> (W₁x₊ − W₂x₋, W₂x₊ + W₁x₋)`` over ``(ℓ ≥ m, channel)``; ``W₂`` exists only for
      ``parity="so3"``.
    * Radial modulation: when ``radial_dim`` is set, the input block of each ``m`` is multiplied elementwise
      by a linear function of the edge's radial features (shared by ``±m``, so equivariance is kept).
    """

    def __init__(self, lmax: int, mmax: int, c_in: int, c_out: int, n_extra: int = 0,
                 radial_dim: int | None = None, parity: str = "o3", gain: float = 1.0):
        super().__init__()
        if parity not in PARITIES:
            raise ValueError(f"parity must be one of {PARITIES}, got {parity!r}")
        self.c_in, self.c_out, self.n_extra, self.parity = c_in, c_out, n_extra, parity
        _, self.sizes = frame_rows(lmax, mmax)
        n0 = self.sizes[0]
        self.fc0 = init_linear_(nn.Linear(n0 * c_in, n0 * c_out + n_extra), gain)
        # (+m, -m) mixing with W2 sums two maps: each gets half the variance
        wgain = gain * (0.5 ** 0.5 if parity == "so3" else 1.0)
        self.w1 = nn.ParameterList([_normal(n * c_in, n * c_out, fan_in=n * c_in, gain=wgain)
                                    for n in self.sizes[1:]])
        self.w2 = nn.ParameterList([_normal(n * c_in, n * c_out, fan_in=n * c_in, gain=wgain)
                                    for n in self.sizes[1:]] if parity == "so3" else [])
        # radial modulation ~ unit scale from post-SiLU radial features
        self.radial = (init_linear_(BlockLinear(radial_dim, [n * c_in for n in self.sizes]), SILU_GAIN)
                       if radial_dim is not None else None)

    def forward(self, x: torch.Tensor | list[torch.Tensor], radial: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
        """Returns edge-frame output ``(E, K', c_out)`` and the extra scalars ``(E, n_extra)``; ``x`` given as
        its ``m`` blocks (a list): :meth:`forward_blocks` (called through the module, so that hooks and
        per-module FLOP counts see it)."""
        if isinstance(x, (list, tuple)):
            return self.forward_blocks(x, radial)
        # split (not slice): its backward is a concatenation, not zero-filled full-size gradients
        blocks = torch.split(x, [self.sizes[0]] + [2 * n for n in self.sizes[1:]], dim=1)
        outs, extra = self.forward_blocks(blocks, radial)
        return torch.cat(outs, dim=1), extra

    def forward_blocks(self, blocks: list[torch.Tensor] | tuple[torch.Tensor, ...],
                       radial: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`forward` on the input split into its ``m`` blocks: ``blocks[0]`` ``(E, n_0, c_in)`` the
        ``m = 0`` rows, ``blocks[m]`` ``(E, 2 n_m, c_in)`` the ``+m`` then ``−m`` rows (the layout of
        :meth:`EdgeRotation.into_blocks`); returns the output blocks ``[(E, rows, c_out)]`` and the extra
        scalars. Contiguous blocks are read without copies."""
        n_edges = blocks[0].shape[0]
        if self.radial is not None:
            if radial is None:
                raise ValueError("SO2Convolution built with radial_dim needs radial features")
            mods = self.radial(radial)
        else:
            mods = [None] * len(self.sizes)
        n0 = self.sizes[0]
        x0 = blocks[0].reshape(n_edges, -1)
        if mods[0] is not None:
            x0 = x0 * mods[0]
        y0 = self.fc0(x0)
        y0, extra = torch.split(y0, [n0 * self.c_out, self.n_extra], dim=1) if self.n_extra else (y0, y0[:, :0])
        outs = [y0.view(n_edges, n0, self.c_out)]
        for k, (n, xm, mod) in enumerate(zip(self.sizes[1:], blocks[1:], mods[1:])):
            xm = xm.reshape(n_edges, 2, n * self.c_in)  # (+m, -m)
            if mod is not None:
                xm = xm * mod[:, None]
            if self.parity == "so3":
                w1, w2 = self.w1[k], self.w2[k]
                y = xm.reshape(n_edges, 2 * n * self.c_in) @ torch.cat(
                    [torch.cat([w1, w2], 1), torch.cat([-w2, w1], 1)], 0)
            else:
                y = xm @ self.w1[k]
            outs.append(y.view(n_edges, 2 * n, self.c_out))
        return outs, extra


def gate(x: torch.Tensor, gates: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Equivariant gated non-linearity: SiLU on the ℓ=0 row (row 0), ``x · sigmoid(g_ℓ)`` on ℓ > 0.

    ``x``: ``(N, rows, C)`` with row 0 the scalar; ``gates``: ``(N, lmax, C)`` invariant scalars;
    ``degree``: ``(rows,)`` degree of each row (any row order: e3nn or edge-frame m-major).
    """
    x0, rest = torch.split(x, [1, x.shape[1] - 1], dim=1)
    expanded = torch.sigmoid(gates).index_select(1, degree[1:] - 1)  # (backward: index_add, not index_put)
    return torch.cat([nn.functional.silu(x0), rest * expanded], dim=1)


def gate_blocks(blocks: list[torch.Tensor], gates: torch.Tensor) -> list[torch.Tensor]:
    """:func:`gate` on edge-frame features split into their ``m`` blocks (:meth:`SO2Convolution.forward_blocks`):
    ``blocks[0]`` ``(E, lmax+1, C)`` the ``m = 0`` rows (ℓ = 0..lmax), ``blocks[m]`` ``(E, 2 n, C)`` the ``±m``
    rows (ℓ = m..lmax each); ``gates`` ``(E, lmax, C)``. Each block is multiplied by its degrees' gates
    (repeated for ``+m`` and ``−m``), with no ``(E, K'-1, C)`` gather of the gates and no concatenation of
    blocks."""
    s = torch.sigmoid(gates)                                            # (E, lmax, C): degree ℓ at ℓ - 1
    x0, rest = torch.split(blocks[0], [1, blocks[0].shape[1] - 1], dim=1)
    out = [torch.cat([nn.functional.silu(x0), rest * s], dim=1)]
    for m, b in enumerate(blocks[1:], start=1):
        sm = s if m == 1 else torch.split(s, [m - 1, b.shape[1] // 2], dim=1)[1]  # degrees m..lmax
        out.append(b * torch.cat([sm, sm], dim=1))                     # rows: +m (ℓ = m..lmax), then -m
    return out


class SO3Linear(nn.Module):
    """Channel mixing with one ``(c_in, c_out)`` matrix per degree ℓ (shared over m); bias on ℓ=0 only.
    Weights ``N(0, gain² / c_in)``, bias 0 (variance-preserving)."""

    def __init__(self, lmax: int, c_in: int, c_out: int, gain: float = 1.0):
        super().__init__()
        self.weight = _normal(lmax + 1, c_in, c_out, fan_in=c_in, gain=gain)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("degree", degree_of_rows(lmax))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K, c_in) -> (n, K, c_out)``: one batched matmul over the rows ``k``, the bias added to row 0
        inside it (a copy back to node-major order, which the edge gathers read fastest)."""
        bias = nn.functional.pad(self.bias[None, None], (0, 0, 0, 0, 0, x.shape[1] - 1))  # (K, 1, c_out)
        y = torch.baddbmm(bias, x.transpose(0, 1), self.weight.index_select(0, self.degree))  # (K, n, c_out)
        return y.transpose(0, 1).contiguous()


class EquivariantRMSNorm(nn.Module):
    """Equivariant RMS normalisation over all degrees (the "balanced" variant of eSCN/eSEN).

    The ℓ=0 row is centred over channels; then every row is divided by one per-node scale
    ``sqrt(mean_ℓ mean_{m,c} x_ℓ² + eps)`` in which each degree weighs equally, and multiplied by a learned
    per-(ℓ, channel) scale; the ℓ=0 row gets a learned bias (no bias for ℓ > 0). Normalising each degree
    separately would blow features that vanish by symmetry (odd ℓ at the centre of a linear molecule) up
    from rounding noise to O(1) and make the energy change abruptly near symmetric geometries.
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = degree_of_rows(lmax)
        self.register_buffer("degree", degree)
        balance = 1.0 / ((2 * degree + 1) * (lmax + 1) * channels)
        self.register_buffer("balance", balance.to(torch.get_default_dtype()))  # (K,) weights, sum = 1/C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        x0 = torch.split(x, [1, k - 1], dim=1)[0]
        # the mean of row 0 subtracted from row 0 only, the bias added to row 0 only: zero-padded to all
        # rows (elementwise on whole tensors, no split and concatenation)
        x = x - nn.functional.pad(x0.mean(-1, keepdim=True), (0, 0, 0, k - 1))
        ms = torch.mv((x * x).sum(-1), self.balance.to(x.dtype))
        factor = torch.rsqrt(ms + self.eps)[:, None, None] * self.scale.index_select(0, self.degree)
        return torch.addcmul(nn.functional.pad(self.bias[None], (0, 0, 0, k - 1)), x, factor)
