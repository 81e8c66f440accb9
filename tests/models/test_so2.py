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
    frame = EdgeFrame(lmax, mmax)
    rot = frame(directions())  # (E, K', K)
    k_frame = len(frame_rows(lmax, mmax)[0])
    err_frame = float((rot @ rot.transpose(1, 2) - torch.eye(k_frame)).abs().max())
    print(f"lmax={lmax} mmax={mmax}: |R R^T - 1| {err_frame:.1e}", end="")
    assert err_frame < 1e-12
    if mmax == lmax:  # nothing truncated: unrotating restores the node features exactly
        x = torch.randn(rot.shape[0], rot.shape[2], 3)
        err = float((rot.transpose(1, 2) @ (rot @ x) - x).abs().max())
        print(f", |R^T R x - x| {err:.1e}", end="")
        assert err < 1e-12
    print()


def test_edge_frame_gradients_finite_at_poles():
    frame = EdgeFrame(4, 2)
    vec = (directions() * 1.3).requires_grad_(True)
    u = vec / vec.norm(dim=-1, keepdim=True)
    weights = torch.randn(vec.shape[0], *frame(u.detach()).shape[1:])
    (frame(u) * weights).sum().backward()
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
    x, radial = torch.randn(7, k_frame, 3), torch.randn(7, 4)
    y, extra = conv(x, radial)
    errs = []
    for gamma in (0.3, 2.1, -1.2):
        p = _polar_rotation(lmax, mmax, gamma)
        y_rot, extra_rot = conv(p @ x, radial)
        errs.append(max(float((y_rot - p @ y).abs().max()), float((extra_rot - extra).abs().max())))
    m = _polar_mirror(lmax, mmax)
    y_mir, _ = conv(m @ x, radial)
    err_mirror = float((y_mir - m @ y).abs().max())
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
    x = torch.randn(5, (lmax + 1) ** 2, c)
    d = wigner(lmax, random_rotation(3))
    lin, norm = SO3Linear(lmax, c, 4), EquivariantRMSNorm(lmax, c)
    gates = torch.randn(5, lmax, c)
    degree = degree_of_rows(lmax)
    errs = {
        "SO3Linear": float((lin(d @ x) - d @ lin(x)).abs().max()),
        "RMSNorm": float((norm(d @ x) - d @ norm(x)).abs().max()),
        "gate": float((gate(d @ x, gates, degree) - d @ gate(x, gates, degree)).abs().max()),
    }
    print("  ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert max(errs.values()) < 1e-12
    # the norm really normalises: the degree-balanced mean square is one (unit scale, zero bias)
    y = norm(x)
    y = torch.cat([y[:, :1], y[:, 1:]], dim=1)
    balanced = sum(y[:, l * l:(l + 1) ** 2].pow(2).mean(dim=(1, 2)) for l in range(lmax + 1)) / (lmax + 1)
    assert torch.allclose(balanced, torch.ones(5), atol=1e-4)
