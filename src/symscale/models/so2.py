"""Building blocks of eSCN-style SO(2) convolutions on spherical-harmonic features (ℓ ≤ lmax).

Feature layout: one tensor ``(n, K, C)`` with ``K = (lmax+1)²`` rows in e3nn order (row ``ℓ² + ℓ + m``,
``m = -ℓ..ℓ``, real basis, polar axis **y**; in e3nn ≥ 0.5 the ℓ=1 rows are ``(x, y, z)``) and ``C`` channels.

The trick of eSCN (Passaro & Zitnick 2023): rotate every edge so that its direction ``r̂`` becomes the
polar axis. In that frame a tensor product with the edge's spherical harmonics only couples coefficients
with the same ``|m|``, so the O(L⁶) Clebsch–Gordan product becomes an O(L³) "SO(2) convolution": a linear
map per ``m`` over ``(ℓ, channel)``, with ``(+m, −m)`` mixed like a complex multiplication.

* :class:`EdgeFrame` builds, once per forward, the Wigner-D rotation of every edge (block-diagonal per ℓ)
  from ``r̂`` without inverse trigonometric functions, so gradients are finite for every direction.
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
from e3nn import o3
from torch import nn

from .layers import SILU_GAIN, init_linear_

PARITIES = ("o3", "so3")


def degree_of_rows(lmax: int) -> torch.Tensor:
    """``(K,)`` degree ℓ of each row in e3nn order."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def frame_rows(lmax: int, mmax: int) -> tuple[list[int], list[int]]:
    """Rows kept in the edge frame (``|m| ≤ mmax``), in m-major order, and the block size per ``m``.

    Order: ``m=0`` for ℓ = 0..lmax, then for each m = 1..mmax the ``+m`` rows (ℓ = m..lmax) followed by
    the ``−m`` rows (same ℓ). Returns (e3nn row indices, ``n_m`` = number of ℓ per sign of ``m``).
    """
    rows = [l * l + l for l in range(lmax + 1)]
    sizes = [lmax + 1]
    for m in range(1, mmax + 1):
        rows += [l * l + l + m for l in range(m, lmax + 1)]
        rows += [l * l + l - m for l in range(m, lmax + 1)]
        sizes.append(lmax + 1 - m)
    return rows, sizes


def _trig_multiples(c: torch.Tensor, s: torch.Tensor, lmax: int) -> torch.Tensor:
    """``(E, 2*lmax+1)`` = ``[1, cos θ, sin θ, cos 2θ, sin 2θ, ...]`` from ``cos θ, sin θ`` (no angles)."""
    out = [torch.ones_like(c)]
    cm, sm = torch.ones_like(c), torch.zeros_like(c)
    for _ in range(lmax):
        cm, sm = cm * c - sm * s, sm * c + cm * s
        out += [cm, sm]
    return torch.stack(out, dim=-1)


def _angle_trig(u: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trig multiples of e3nn's ``(α, β)`` of unit vectors ``u`` (``β = acos(u_y)``, ``α = atan2(u_x, u_z)``).

    ``sin β`` is clamped below at 0.1 so nothing diverges; callers only use directions with
    ``|u_y| ≤ 0.9`` (``sin β ≥ 0.43``), where the clamp is inactive and the values are exact.
    """
    x, y, z = u.unbind(-1)
    sb = torch.sqrt(torch.clamp(x * x + z * z, min=0.01))
    return _trig_multiples(z / sb, x / sb, lmax), _trig_multiples(y, sb, lmax)


class EdgeFrame(nn.Module):
    """Per-edge Wigner-D matrices ``D(r̂) = D(α, β, 0)`` (e3nn convention: ``D`` maps the polar axis y to r̂).

    ``D_ℓ(α, β, 0) = Y_ℓ(α) · J_ℓ Y_ℓ(β) J_ℓᵀ`` where ``Y_ℓ(θ)`` (rotation about y) is a trigonometric
    polynomial of degree ℓ in θ whose coefficient matrices are fitted exactly from ``e3nn.o3.wigner_D`` at
    construction, and ``J_ℓ`` is the Wigner matrix of the rotation taking y to x (so ``J Y(β) Jᵀ`` rotates
    about x). ``cos/sin`` of ``mα, mβ`` come from ``r̂`` by the angle-addition recursion, never from
    ``acos/atan2``. Near the poles (``|r̂_y| > 0.9``) a second chart is used: ``D(r̂) = D(Q) D(Qᵀ r̂)`` with
    ``Q`` the rotation by π/2 about x; both charts give an edge frame with r̂ on the polar axis (they differ by
    a rotation about that axis, to which SO(2) convolutions are equivariant), and gradients stay finite.
    """

    def __init__(self, lmax: int, mmax: int):
        super().__init__()
        self.lmax, self.mmax = int(lmax), int(mmax)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
        try:
            self._build_constants()
        finally:
            torch.set_default_dtype(previous)
        rows, sizes = frame_rows(lmax, mmax)
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long))
        self.sizes = sizes

    def _build_constants(self) -> None:
        """Rotation-about-y Fourier coefficients, ``J_ℓ`` and ``D(Q)`` from e3nn, in float64."""
        lmax = self.lmax
        f64 = torch.float64
        zero = torch.zeros((), dtype=f64)
        n_samples = 4 * lmax + 4
        theta = torch.arange(n_samples, dtype=f64) * (2 * math.pi / n_samples)
        trig = _trig_multiples(torch.cos(theta), torch.sin(theta), lmax)  # (N, F)
        weight = torch.full((2 * lmax + 1,), 2.0 / n_samples, dtype=f64)
        weight[0] = 1.0 / n_samples
        rot_y_to_x = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64)
        j_angles = o3.matrix_to_angles(rot_y_to_x)
        q_angles = (zero, torch.tensor(math.pi / 2, dtype=f64), zero)
        self.register_buffer("q", o3.angles_to_matrix(*q_angles))
        for l in range(lmax + 1):
            y_samples = o3.wigner_D(l, theta, torch.zeros_like(theta), torch.zeros_like(theta))
            basis = torch.einsum("nf,nab->fab", trig * weight, y_samples)  # exact Fourier coefficients
            self.register_buffer(f"ybasis{l}", basis)
            self.register_buffer(f"j{l}", o3.wigner_D(l, *j_angles))
            self.register_buffer(f"dq{l}", o3.wigner_D(l, *q_angles))

    def blocks(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Per-ℓ Wigner blocks ``[(E, 2ℓ+1, 2ℓ+1)]`` of ``D(u)`` for unit vectors ``u`` ``(E, 3)``."""
        n_edges = u.shape[0]
        dtype = u.dtype
        near_pole = (u[:, 1].abs() > 0.9)[:, None, None]
        both = torch.cat([u, u @ self.q.to(dtype)])  # second chart: Qᵀ u (row vectors)
        ta, tb = _angle_trig(both, self.lmax)
        out = []
        for l in range(self.lmax + 1):
            basis = getattr(self, f"ybasis{l}").to(dtype)[: 2 * l + 1]
            j = getattr(self, f"j{l}").to(dtype)
            ya = torch.einsum("ef,fab->eab", ta[:, : 2 * l + 1], basis)
            yb = torch.einsum("ef,fab->eab", tb[:, : 2 * l + 1], basis)
            d = ya @ (j @ yb @ j.T)
            d1, d2 = d[:n_edges], getattr(self, f"dq{l}").to(dtype) @ d[n_edges:]
            out.append(torch.where(near_pole, d2, d1))
        return out

    def wigner(self, u: torch.Tensor) -> torch.Tensor:
        """Block-diagonal ``(E, K, K)`` Wigner matrix ``D(u)`` (e3nn row order)."""
        blocks = self.blocks(u)
        k = (self.lmax + 1) ** 2
        d = u.new_zeros((u.shape[0], k, k))
        for l, b in enumerate(blocks):
            d[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2] = b
        return d

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(E, K', K)`` map into the edge frame: rows ``|m| ≤ mmax`` of ``D(u)ᵀ`` in m-major order.

        ``x_edge = R @ x`` rotates node features into the frame where ``u`` is the polar axis; ``Rᵀ``
        rotates edge-frame features back (the dropped ``|m| > mmax`` rows count as zero).
        """
        return self.wigner(u).transpose(1, 2)[:, self.rows]


def _normal(*shape: int, fan_in: int, gain: float = 1.0) -> nn.Parameter:
    """Variance-preserving weights ``N(0, gain² / fan_in)`` (see :func:`symscale.models.layers.init_linear_`)."""
    return nn.Parameter(torch.randn(*shape) * (gain / math.sqrt(fan_in)))


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
        self.radial = (init_linear_(nn.Linear(radial_dim, sum(self.sizes) * c_in), SILU_GAIN)
                       if radial_dim is not None else None)

    def forward(self, x: torch.Tensor, radial: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns edge-frame output ``(E, K', c_out)`` and the extra scalars ``(E, n_extra)``."""
        n_edges = x.shape[0]
        if self.radial is not None:
            if radial is None:
                raise ValueError("SO2Convolution built with radial_dim needs radial features")
            mods = torch.split(self.radial(radial), [n * self.c_in for n in self.sizes], dim=1)
        else:
            mods = [None] * len(self.sizes)
        # split (not slice): its backward is a concatenation, not zero-filled full-size gradients
        blocks = torch.split(x, [self.sizes[0]] + [2 * n for n in self.sizes[1:]], dim=1)
        n0 = self.sizes[0]
        x0 = blocks[0].reshape(n_edges, -1)
        if mods[0] is not None:
            x0 = x0 * mods[0]
        y0, extra = torch.split(self.fc0(x0), [n0 * self.c_out, self.n_extra], dim=1)
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
        return torch.cat(outs, dim=1), extra


def gate(x: torch.Tensor, gates: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Equivariant gated non-linearity: SiLU on the ℓ=0 row (row 0), ``x · sigmoid(g_ℓ)`` on ℓ > 0.

    ``x``: ``(N, rows, C)`` with row 0 the scalar; ``gates``: ``(N, lmax, C)`` invariant scalars;
    ``degree``: ``(rows,)`` degree of each row (any row order: e3nn or edge-frame m-major).
    """
    x0, rest = torch.split(x, [1, x.shape[1] - 1], dim=1)
    return torch.cat([nn.functional.silu(x0), rest * torch.sigmoid(gates)[:, degree[1:] - 1]], dim=1)


class SO3Linear(nn.Module):
    """Channel mixing with one ``(c_in, c_out)`` matrix per degree ℓ (shared over m); bias on ℓ=0 only.
    Weights ``N(0, gain² / c_in)``, bias 0 (variance-preserving)."""

    def __init__(self, lmax: int, c_in: int, c_out: int, gain: float = 1.0):
        super().__init__()
        self.weight = _normal(lmax + 1, c_in, c_out, fan_in=c_in, gain=gain)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("degree", degree_of_rows(lmax))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K, c_in) -> (n, K, c_out)``."""
        y = torch.einsum("nkc,kcd->nkd", x, self.weight[self.degree])
        y0, rest = torch.split(y, [1, y.shape[1] - 1], dim=1)
        return torch.cat([y0 + self.bias, rest], dim=1)


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
        x0, rest = torch.split(x, [1, x.shape[1] - 1], dim=1)
        x = torch.cat([x0 - x0.mean(-1, keepdim=True), rest], dim=1)
        ms = torch.einsum("nkc,k->n", x * x, self.balance.to(x.dtype))
        y = x * torch.rsqrt(ms + self.eps)[:, None, None] * self.scale[self.degree]
        y0, rest = torch.split(y, [1, y.shape[1] - 1], dim=1)
        return torch.cat([y0 + self.bias, rest], dim=1)
