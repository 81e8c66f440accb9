"""Building blocks of eSCN-style SO(2) convolutions on spherical-harmonic features (ℓ ≤ lmax).

Feature layout, **rows first**: one tensor ``(K, n, C)`` with ``K = (lmax+1)²`` rows in e3nn order
(row ``ℓ² + ℓ + m``, ``m = -ℓ..ℓ``, real basis, polar axis **y**; in e3nn ≥ 0.5 the ℓ=1 rows are
``(x, y, z)``) and ``C`` channels. Rows first makes every constant rotation one large GEMM over ``n·C``.

The trick of eSCN (Passaro & Zitnick 2023): rotate every edge so that its direction ``r̂`` becomes the
polar axis. In that frame a tensor product with the edge's spherical harmonics only couples coefficients
with the same ``|m|``, so the O(L⁶) Clebsch–Gordan product becomes an O(L³) "SO(2) convolution": a linear
map per ``m`` over ``(ℓ, channel)``, with ``(+m, −m)`` mixed like a complex multiplication.

* :class:`EdgeFrame` computes, once per forward, what rotating features into every edge's frame needs
  (an :class:`EdgeRotation`: ``cos/sin`` of ``mα, mβ`` from ``r̂``, no inverse trigonometric functions, so
  gradients are finite for every direction) and applies it as elementwise products plus constant GEMMs.
* :class:`SO2Convolution` is the per-``m`` linear map in the edge frame, modulated by radial functions.
* :class:`SO3Linear`, :class:`EquivariantRMSNorm` and :func:`gate` act on node features.

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


def _block_diag(blocks: list[torch.Tensor]) -> torch.Tensor:
    k = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(blocks[0].shape[:-2] + (k, k))
    s = 0
    for b in blocks:
        out[..., s:s + b.shape[-1], s:s + b.shape[-1]] = b
        s += b.shape[-1]
    return out


class EdgeFrame(nn.Module):
    """Rotations of spherical-harmonic features into and out of edge-aligned frames.

    For an edge direction ``r̂`` with e3nn angles ``(α, β)`` the rotation is ``D(r̂) = D(α, β, 0)``, which maps
    the polar axis y to ``r̂``; it factorises as ``D = Y(α) · J Y(β) Jᵀ`` where ``Y(θ)`` (rotation about y) has
    two non-zeros per row — ``cos(|m|θ)`` on the diagonal and ``±sin(|m|θ)`` at ``(ℓ, −m)`` — and ``J``
    (the Wigner matrix of the rotation taking y to x, so that ``J Y(β) Jᵀ`` rotates about x) is a constant.
    Applying ``D`` to features is thus two elementwise steps and two products with a constant matrix, which
    are single large GEMMs — no per-edge matrices are ever built. ``Y``'s coefficients are fitted exactly
    from ``e3nn.o3.wigner_D`` at construction (its sparsity pattern is checked), and ``cos/sin`` of ``mα, mβ``
    come from ``r̂`` by the angle-addition recursion, never from ``acos/atan2``.

    Poles: for ``|r̂_y| > 0.9`` a second chart is used, ``D(r̂) = D(Q) D(Qᵀ r̂)`` with ``Q`` the rotation by π/2
    about x, so that every edge's angles are far from their singularities and gradients stay exact. Both
    charts put ``r̂`` on the polar axis (they differ by a rotation about it, to which SO(2) convolutions are
    equivariant). The constant ``D(Q)`` is applied to node features (:meth:`to_chart`, :meth:`from_chart`),
    not per edge.

    Layout: features are **rows first**, ``(K, N, C)`` with ``K = (lmax+1)²`` rows in e3nn order; edge-frame
    features keep only the rows ``|m| ≤ mmax`` in m-major order (:func:`frame_rows`).
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

    def _build_constants(self) -> None:
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
        ls = range(lmax + 1)
        samples = _block_diag([o3.wigner_D(l, theta, 0 * theta, 0 * theta) for l in ls])  # (N, K, K)
        basis = torch.einsum("nf,nab->fab", trig * weight, samples)  # exact Fourier coefficients of Y(θ)
        degree = degree_of_rows(lmax)
        k = degree.shape[0]
        m = torch.arange(k) - degree * degree - degree
        flip = torch.arange(k) - 2 * m
        cos_idx = torch.where(m == 0, 0, 2 * m.abs() - 1)
        sin_idx = torch.where(m == 0, 0, 2 * m.abs())
        sign = torch.where(m == 0, zero, basis[sin_idx, torch.arange(k), flip])
        sparse = torch.zeros_like(basis)
        sparse[cos_idx, torch.arange(k), torch.arange(k)] = 1.0
        sparse[sin_idx, torch.arange(k), flip] += sign
        if (basis - sparse).abs().max() > 1e-9 or (sign.abs() - (m != 0).to(f64)).abs().max() > 1e-9:
            raise RuntimeError("e3nn's rotation about y does not have the expected cos/sin structure")
        j = _block_diag([o3.wigner_D(l, *j_angles) for l in ls])
        rows, self.sizes = frame_rows(lmax, self.mmax)
        self.register_buffer("q", o3.angles_to_matrix(*q_angles))
        self.register_buffer("dq", _block_diag([o3.wigner_D(l, *q_angles) for l in ls]))
        self.register_buffer("j", j)
        self.register_buffer("jt_rows", j.T[:, rows].contiguous())  # (K, K'): J^T restricted to frame rows
        self.register_buffer("j_rows", j[rows].contiguous())  # (K', K)
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long))
        self.register_buffer("flip", flip)
        self.register_buffer("cos_idx", cos_idx)
        self.register_buffer("sin_idx", sin_idx)
        self.register_buffer("sign", sign)
        self.register_buffer("sign_t", sign[flip])

    # ------------------------------------------------------------------ per-forward geometry
    def forward(self, u: torch.Tensor) -> "EdgeRotation":
        """Rotation data of unit edge vectors ``u`` ``(E, 3)``, to be shared by all blocks of a forward."""
        pole = u[:, 1].abs() > 0.9
        v = torch.where(pole[:, None], u @ self.q.to(u.dtype), u)  # chart 2: Qᵀ u (row vectors)
        ta, tb = _angle_trig(v, self.lmax)
        return EdgeRotation(self, pole, *self._coefficients(ta), *self._coefficients(tb))

    def _coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(K, E, 1)`` diagonal and off-diagonal coefficients of ``Y(θ)`` and ``Y(θ)ᵀ``."""
        c = t[:, self.cos_idx].T[..., None]
        s = t[:, self.sin_idx].T[..., None]
        return c, s * self.sign.to(t.dtype)[:, None, None], s * self.sign_t.to(t.dtype)[:, None, None]

    # ------------------------------------------------------------------ constant parts
    def to_chart(self, h: torch.Tensor) -> torch.Tensor:
        """``D(Q)ᵀ h`` for rows-first node features ``(K, N, C)`` (the basis chart-2 edges start from)."""
        return _apply(self.dq.T.to(h.dtype), h)

    def from_chart(self, h: torch.Tensor) -> torch.Tensor:
        """``D(Q) h``: chart-2 results back to the global basis."""
        return _apply(self.dq.to(h.dtype), h)

    def wigner(self, u: torch.Tensor) -> torch.Tensor:
        """Dense ``(E, K, K)`` matrices ``D(u)`` (for tests; the model never builds them)."""
        rot = self(u)
        k = (self.lmax + 1) ** 2
        eye = torch.eye(k, dtype=u.dtype, device=u.device)[:, None, :].expand(k, u.shape[0], k)
        d = rot.rotate(eye, inverse=False)  # (K, E, K): D @ I in the edge's chart
        d = torch.where(rot.pole[None, :, None], self.from_chart(d), d)
        return d.permute(1, 0, 2)


def _apply(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x`` over the rows of a rows-first tensor ``(K, N, C)``: one GEMM."""
    return (a @ x.reshape(x.shape[0], -1)).reshape(a.shape[0], *x.shape[1:])


class EdgeRotation:
    """Per-forward rotation data from :class:`EdgeFrame`; features are rows-first ``(rows, E, C)``."""

    def __init__(self, frame: EdgeFrame, pole: torch.Tensor, ca, sa, sat, cb, sb, sbt):
        self.frame, self.pole = frame, pole
        self.ca, self.sa, self.sat, self.cb, self.sb, self.sbt = ca, sa, sat, cb, sb, sbt

    def _y(self, x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return c * x + s * x[self.frame.flip]

    def rotate(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        """Full ``D x`` (or ``Dᵀ x``) in the edge's chart, ``(K, E, C) -> (K, E, C)``."""
        j = self.frame.j.to(x.dtype)
        if inverse:
            x = self._y(x, self.ca, self.sat)
            x = self._y(_apply(j.T, x), self.cb, self.sbt)
            return _apply(j, x)
        x = self._y(_apply(j.T, x), self.cb, self.sb)
        return self._y(_apply(j, x), self.ca, self.sa)

    def to_frame(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, E, C)`` chart-basis features -> ``(K', E, C)`` edge-frame rows ``|m| ≤ mmax`` (m-major)."""
        f = self.frame
        x = self._y(x, self.ca, self.sat)
        x = self._y(_apply(f.j.T.to(x.dtype), x), self.cb, self.sbt)
        return _apply(f.j_rows.to(x.dtype), x)

    def from_frame(self, y: torch.Tensor) -> torch.Tensor:
        """``(k, E, C)`` edge-frame rows (the first ``k`` of the m-major order; dropped rows are zero) ->
        ``(K, E, C)`` in the chart basis."""
        f = self.frame
        x = self._y(_apply(f.jt_rows[:, : y.shape[0]].to(y.dtype), y), self.cb, self.sb)
        return self._y(_apply(f.j.to(y.dtype), x), self.ca, self.sa)


def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class SO2Convolution(nn.Module):
    """Linear map of edge-frame features ``(K', E, c_in) -> (K', E, c_out)`` (rows ``|m| ≤ mmax`` in m-major
    order) commuting with rotations about the polar axis (and, for ``parity="o3"``, with the mirror that
    fixes it).

    * ``m = 0``: one dense map over ``(ℓ, channel)`` (with bias), plus ``n_extra`` invariant scalars
      (e.g. gates) returned separately as ``(E, n_extra)``.
    * ``m > 0``: ``(x₊, x₋) -> (W₁x₊ − W₂x₋, W₂x₊ + W₁x₋)`` over ``(ℓ ≥ m, channel)``; ``W₂`` exists only for
      ``parity="so3"``.
    * Radial modulation: when ``radial_dim`` is set, the input block of each ``m`` is multiplied elementwise
      by a linear function of the edge's radial features (shared by ``±m``, so equivariance is kept).
    """

    def __init__(self, lmax: int, mmax: int, c_in: int, c_out: int, n_extra: int = 0,
                 radial_dim: int | None = None, parity: str = "o3"):
        super().__init__()
        if parity not in PARITIES:
            raise ValueError(f"parity must be one of {PARITIES}, got {parity!r}")
        self.c_in, self.c_out, self.n_extra, self.parity = c_in, c_out, n_extra, parity
        _, self.sizes = frame_rows(lmax, mmax)
        n0 = self.sizes[0]
        self.fc0 = nn.Linear(n0 * c_in, n0 * c_out + n_extra)
        self.w1 = nn.ParameterList([_uniform(n * c_in, n * c_out, fan_in=n * c_in) for n in self.sizes[1:]])
        self.w2 = nn.ParameterList([_uniform(n * c_in, n * c_out, fan_in=2 * n * c_in)
                                    for n in self.sizes[1:]] if parity == "so3" else [])
        self.radial = (nn.Linear(radial_dim, sum(self.sizes) * c_in) if radial_dim is not None else None)

    def forward(self, x: torch.Tensor, radial: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n_edges = x.shape[1]
        if self.radial is not None:
            if radial is None:
                raise ValueError("SO2Convolution built with radial_dim needs radial features")
            mods = torch.split(self.radial(radial), [n * self.c_in for n in self.sizes], dim=1)
        else:
            mods = [None] * len(self.sizes)
        blocks = torch.split(x, [self.sizes[0]] + [2 * n for n in self.sizes[1:]], dim=0)
        n0 = self.sizes[0]
        x0 = blocks[0].transpose(0, 1)  # (E, n0, c_in) view
        x0 = (x0.reshape(n_edges, -1) if mods[0] is None
              else mods[0].view(n_edges, n0, self.c_in) * x0).reshape(n_edges, -1)
        y0, extra = torch.split(self.fc0(x0), [n0 * self.c_out, self.n_extra], dim=1)
        outs = [y0.view(n_edges, n0, self.c_out).transpose(0, 1)]
        for k, (n, xm, mod) in enumerate(zip(self.sizes[1:], blocks[1:], mods[1:])):
            xm = xm.view(2, n, n_edges, self.c_in).permute(2, 0, 1, 3)  # (E, ±, n, c_in) view
            xm = (xm.reshape(n_edges, 2, -1) if mod is None
                  else (mod.view(n_edges, 1, n, self.c_in) * xm).reshape(n_edges, 2, -1))
            if self.parity == "so3":
                w1, w2 = self.w1[k], self.w2[k]
                w = torch.cat([torch.cat([w1, w2], 1), torch.cat([-w2, w1], 1)], 0)
                y = xm.reshape(n_edges, -1) @ w
            else:
                y = xm @ self.w1[k]
            outs.append(y.view(n_edges, 2, n, self.c_out).permute(1, 2, 0, 3).reshape(2 * n, n_edges, -1))
        return torch.cat(outs, dim=0), extra


def gate(x: torch.Tensor, gates: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Equivariant gated non-linearity on rows-first features: SiLU on row 0 (the scalar), ``x · sigmoid(g_ℓ)``
    on the rows of degree ℓ > 0.

    ``x``: ``(rows, N, C)``; ``gates``: ``(lmax, N, C)`` invariant scalars; ``degree``: ``(rows,)`` degree of
    each row (any row order: e3nn or edge-frame m-major, row 0 being ℓ=0).
    """
    x0, rest = torch.split(x, [1, x.shape[0] - 1], dim=0)
    return torch.cat([nn.functional.silu(x0), rest * torch.sigmoid(gates)[degree[1:] - 1]], dim=0)


class SO3Linear(nn.Module):
    """Channel mixing with one ``(c_in, c_out)`` matrix per degree ℓ (shared over m); bias on ℓ=0 only.
    Rows-first ``(K, N, c_in) -> (K, N, c_out)``."""

    def __init__(self, lmax: int, c_in: int, c_out: int):
        super().__init__()
        self.weight = _uniform(lmax + 1, c_in, c_out, fan_in=c_in)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("degree", degree_of_rows(lmax))
        bias_mask = torch.zeros(self.degree.shape[0], 1, 1)
        bias_mask[0] = 1.0
        self.register_buffer("bias_mask", bias_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias_mask.to(x.dtype) * self.bias, x, self.weight[self.degree])


class EquivariantRMSNorm(nn.Module):
    """Equivariant RMS normalisation over all degrees (the "balanced" variant of eSCN/eSEN), rows-first.

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
        x0, rest = torch.split(x, [1, x.shape[0] - 1], dim=0)
        x = torch.cat([x0 - x0.mean(-1, keepdim=True), rest], dim=0)
        ms = torch.einsum("knc,k->n", x * x, self.balance.to(x.dtype))
        y = x * torch.rsqrt(ms + self.eps)[:, None] * self.scale[self.degree][:, None]
        y0, rest = torch.split(y, [1, y.shape[0] - 1], dim=0)
        return torch.cat([y0 + self.bias, rest], dim=0)
