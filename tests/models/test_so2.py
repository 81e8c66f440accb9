"""Unit tests of the SO(2)-convolution building blocks (symscale.models.so2), errors printed."""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

from symscale.models.so2 import (EdgeFrame, EquivariantRMSNorm, SO2Convolution, SO3Linear, degree_of_rows,
                                 frame_rows, gate)

F64 = torch.float64


def directions(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Random unit vectors plus the awkward ones: both poles, near-poles and the chart boundary."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 3, generator=g, dtype=F64)
    special = torch.tensor([[0, 1, 0], [0, -1, 0], [1e-9, 1, 0], [0, -1, 1e-12], [1, 0, 0], [0, 0, 1],
                            [0.3, 0.9, 0.1], [math.sqrt(0.19), 0.9, 0.0]], dtype=F64)
    return torch.nn.functional.normalize(torch.cat([u, special]), dim=-1)


def block_diag(blocks: list[torch.Tensor]) -> torch.Tensor:
    k = sum(b.shape[-1] for b in blocks)
    out = blocks[0].new_zeros(blocks[0].shape[:-2] + (k, k))
    s = 0
    for b in blocks:
        n = b.shape[-1]
        out[..., s:s + n, s:s + n] = b
        s += n
    return out


def wigner(lmax: int, rot: torch.Tensor) -> torch.Tensor:
    """Block-diagonal e3nn Wigner matrix of a proper rotation matrix ``rot``."""
    angles = o3.matrix_to_angles(rot)
    return block_diag([o3.wigner_D(l, *angles) for l in range(lmax + 1)])


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    return q * torch.det(q)


@pytest.fixture(autouse=True)
def _f64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("lmax", [1, 2, 3, 4])
def test_edge_frame_matches_e3nn_and_maps_edge_to_polar_axis(lmax):
    frame = EdgeFrame(lmax, lmax)
    u = directions()
    d = frame.wigner(u)
    alpha, beta = o3.xyz_to_angles(u)
    far = u[:, 1].abs() <= 0.9  # chart 1: exactly e3nn's D(alpha, beta, 0)
    ref = block_diag([o3.wigner_D(l, alpha, beta, torch.zeros_like(alpha)) for l in range(lmax + 1)])
    err_e3nn = float((d[far] - ref[far]).abs().max())
    # every edge (both charts): D(u)^T maps Y(u) to Y(polar axis y), for every degree
    y_u = o3.spherical_harmonics(list(range(lmax + 1)), u, normalize=True)
    y_pole = o3.spherical_harmonics(list(range(lmax + 1)), torch.tensor([0.0, 1.0, 0.0]), normalize=True)
    err_axis = float((torch.einsum("eba,eb->ea", d, y_u) - y_pole).abs().max())
    err_orth = float((d @ d.transpose(1, 2) - torch.eye(d.shape[1])).abs().max())
    print(f"lmax={lmax}: |D - e3nn| {err_e3nn:.1e}, |D^T Y(u) - Y(y)| {err_axis:.1e}, |D D^T - 1| {err_orth:.1e}")
    assert err_e3nn < 1e-12 and err_axis < 1e-12 and err_orth < 1e-12


@pytest.mark.parametrize("lmax,mmax", [(2, 2), (4, 2), (4, 4), (3, 0)])
def test_rotate_then_unrotate(lmax, mmax):
    """to_frame / from_frame: into the frame keeps the |m| <= mmax rows of D^T x (m-major order); back out
    is its transpose; with nothing truncated the round trip is the identity."""
    frame = EdgeFrame(lmax, mmax)
    u = directions()
    rot = frame(u)
    d = frame.wigner(u)  # (E, K, K), includes the chart change for polar edges
    dq = frame.dq
    x = torch.randn((lmax + 1) ** 2, u.shape[0], 3)
    rows = frame.rows
    chart_x = torch.where(rot.pole[None, :, None], torch.einsum("ba,bec->aec", dq, x), x)
    into = rot.to_frame(chart_x)  # (K', E, C)
    ref_into = torch.einsum("eba,bec->aec", d, x)[rows]
    err_into = float((into - ref_into).abs().max())
    y = torch.randn(len(rows), u.shape[0], 3)
    back = rot.from_frame(y)
    back = torch.where(rot.pole[None, :, None], torch.einsum("ab,bec->aec", dq, back), back)
    ref_back = torch.einsum("eab,bec->aec", d[:, :, rows], y)
    err_back = float((back - ref_back).abs().max())
    print(f"lmax={lmax} mmax={mmax}: to_frame {err_into:.1e} from_frame {err_back:.1e}", end="")
    assert err_into < 1e-12 and err_back < 1e-12
    err_trip = float((rot.to_frame(rot.from_frame(y)) - y).abs().max())  # frame rows are orthonormal
    print(f", |to(from(y)) - y| {err_trip:.1e}", end="")
    assert err_trip < 1e-12
    if mmax == lmax:  # nothing truncated: unrotating restores the node features exactly
        err = float((rot.from_frame(rot.to_frame(x)) - x).abs().max())
        print(f", |from(to(x)) - x| {err:.1e}", end="")
        assert err < 1e-12
    print()


def test_edge_frame_gradients_finite_at_poles():
    frame = EdgeFrame(4, 2)
    vec = (directions() * 1.3).requires_grad_(True)
    u = vec / vec.norm(dim=-1, keepdim=True)
    x = torch.randn(25, vec.shape[0], 2)
    y = frame(u).to_frame(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(vec.grad).all()


def _polar_rotation(lmax: int, mmax: int, gamma: float) -> torch.Tensor:
    """Rotation about the polar axis (y) by gamma restricted to the edge-frame rows (closed under it)."""
    rows, _ = frame_rows(lmax, mmax)
    full = block_diag([o3.wigner_D(l, torch.tensor(gamma), torch.tensor(0.0), torch.tensor(0.0))
                       for l in range(lmax + 1)])
    return full[rows][:, rows]


def _polar_mirror(lmax: int, mmax: int) -> torch.Tensor:
    """Mirror x -> -x (fixes the polar axis) on natural-parity coefficients: (-1)^l D(rotation pi about x)."""
    rows, _ = frame_rows(lmax, mmax)
    rot = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    angles = o3.matrix_to_angles(rot)
    full = block_diag([(-1) ** l * o3.wigner_D(l, *angles) for l in range(lmax + 1)])
    return full[rows][:, rows]


@pytest.mark.parametrize("parity", ["o3", "so3"])
@pytest.mark.parametrize("lmax,mmax", [(4, 2), (3, 3), (1, 1)])
@torch.no_grad()
def test_so2_convolution_commutes_with_polar_rotations(parity, lmax, mmax):
    torch.manual_seed(0)
    conv = SO2Convolution(lmax, mmax, 3, 5, n_extra=2, radial_dim=4, parity=parity)
    k_frame = len(frame_rows(lmax, mmax)[0])
    x, radial = torch.randn(k_frame, 7, 3), torch.randn(7, 4)  # rows first (K', E, C)
    y, extra = conv(x, radial)
    assert y.shape == (k_frame, 7, 5) and extra.shape == (7, 2)

    def act(p, t):
        return torch.einsum("ab,bec->aec", p, t)

    errs = []
    for gamma in (0.3, 2.1, -1.2):
        p = _polar_rotation(lmax, mmax, gamma)
        y_rot, extra_rot = conv(act(p, x), radial)
        errs.append(max(float((y_rot - act(p, y)).abs().max()), float((extra_rot - extra).abs().max())))
    m = _polar_mirror(lmax, mmax)
    y_mir, _ = conv(act(m, x), radial)
    err_mirror = float((y_mir - act(m, y)).abs().max())
    print(f"{parity} lmax={lmax} mmax={mmax}: polar rotation error {max(errs):.1e}, mirror error {err_mirror:.1e}")
    assert max(errs) < 1e-12
    if parity == "o3":
        assert err_mirror < 1e-12
    else:  # eSCN's +m/-m weights are pseudo-tensor paths: not mirror-equivariant
        assert err_mirror > 1e-3


@torch.no_grad()
def test_node_layers_are_equivariant():
    torch.manual_seed(0)
    lmax, c = 4, 6
    x = torch.randn((lmax + 1) ** 2, 5, c)  # rows first (K, n, C)
    d = wigner(lmax, random_rotation(3))

    def act(t):
        return torch.einsum("ab,bnc->anc", d, t)

    lin, norm = SO3Linear(lmax, c, 4), EquivariantRMSNorm(lmax, c)
    torch.nn.init.normal_(lin.bias)
    gates = torch.randn(lmax, 5, c)
    degree = degree_of_rows(lmax)
    errs = {
        "SO3Linear": float((lin(act(x)) - act(lin(x))).abs().max()),
        "RMSNorm": float((norm(act(x)) - act(norm(x))).abs().max()),
        "gate": float((gate(act(x), gates, degree) - act(gate(x, gates, degree))).abs().max()),
    }
    print("  ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-12
    # the norm really normalises: the degree-balanced mean square is one (unit scale, zero bias)
    y = norm(x)
    balanced = sum(y[l * l:(l + 1) ** 2].pow(2).mean(dim=(0, 2)) for l in range(lmax + 1)) / (lmax + 1)
    assert torch.allclose(balanced, torch.ones(5), atol=1e-4)
