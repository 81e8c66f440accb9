"""eSEN through the shared suite (O(3)-equivariant with parity="o3"), plus its own options and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from suite import F64, ModelSuite, ethanol, random_rotation, rel_err, transform, water

from symscale.data import Batch
from symscale.errors import ConfigError
from symscale.models import build, count_parameters


class TestESEN(ModelSuite):
    name = "esen"
    options = {"num_layers": 2}  # lmax=4, mmax=2 (defaults)
    equivariant = True
    reflection = True


class TestESENFairchem(ModelSuite):
    """structure="fairchem" (fairchem eSCNMDBackbone's layout) with UMA's spectral feed-forward: exact."""
    name = "esen"
    options = {"num_layers": 2, "structure": "fairchem", "ffn": "spectral"}
    equivariant = True
    reflection = True


class TestESENFairchemGrid(ModelSuite):
    """structure="fairchem" with eSEN's S² grid feed-forward (its default): the pointwise MLP aliases degrees
    above lmax, so rotations and reflections hold to ~2e-2 at initialisation, not to rounding (see
    test_grid_feed_forward_error_is_aliasing_only); a wrong frame or parity would give errors of order one."""
    name = "esen"
    options = {"num_layers": 2, "structure": "fairchem"}
    equivariant = True
    reflection = True
    equivariance_tol = 0.1


def _batch(atoms_list) -> Batch:
    return Batch.from_atoms(atoms_list, cutoff=5.0, dtype=F64)


def _rattled_ethanol(seed: int = 4) -> Atoms:
    atoms = ethanol()
    atoms.rattle(0.1, seed=seed)  # breaks the mirror plane: the structure is chiral
    return atoms


def _symmetry_errors(model, b: Batch, proper: bool) -> float:
    errs = []
    for seed in (1, 2):
        rot = random_rotation(seed, proper=proper)
        ref, out = model(b), model(transform(b, rot))
        errs += [rel_err(out["energy"], ref["energy"]), rel_err(out["forces"], ref["forces"] @ rot.T)]
    return max(errs)


@pytest.mark.parametrize("lmax,mmax", [(1, None), (2, None), (3, None), (4, 4), (3, 1), (2, 0)])
def test_every_lmax_is_equivariant(lmax, mmax):
    torch.manual_seed(0)
    model = build("esen", 4, lmax=lmax, mmax=mmax, num_layers=2).double()
    b = _batch([_rattled_ethanol(), water()])
    err_rot, err_ref = _symmetry_errors(model, b, True), _symmetry_errors(model, b, False)
    print(f"lmax={lmax} mmax={model.mmax}: rotation {err_rot:.1e} reflection {err_ref:.1e}")
    assert err_rot < 1e-8 and err_ref < 1e-8
    assert model(b)["forces"].abs().max() > 1e-4


def test_so3_parity_is_rotation_equivariant_but_chiral():
    """parity='so3' (eSCN's complex weights) keeps rotations exact and tells mirror images apart."""
    torch.manual_seed(0)
    model = build("esen", 4, parity="so3", num_layers=2).double()
    b = _batch([_rattled_ethanol()])
    err_rot, err_ref = _symmetry_errors(model, b, True), _symmetry_errors(model, b, False)
    print(f"so3: rotation {err_rot:.1e} reflection {err_ref:.1e}")
    assert err_rot < 1e-8 and err_ref > 1e-3
    assert count_parameters(model) > count_parameters(build("esen", 4, num_layers=2))


def test_edges_along_polar_axis():
    """Bonds exactly along ±y (e3nn's polar axis): finite outputs, gradients, and FD-exact forces."""
    torch.manual_seed(0)
    atoms = Atoms("OCO", positions=[[0.0, -1.16, 0.0], [0.0, 0.0, 0.0], [0.0, 1.16, 0.0]])
    b = _batch([atoms])
    direct = build("esen", 4, num_layers=2).double()
    out = direct(b)
    out["forces"].pow(2).sum().backward()
    assert torch.isfinite(out["forces"]).all()
    assert all(torch.isfinite(p.grad).all() for p in direct.parameters() if p.grad is not None)
    # by symmetry the direct forces point along y (and the centre's vanishes): no noise blown up by the norm
    assert out["forces"][:, [0, 2]].abs().max() < 1e-10 * out["forces"].abs().max()
    assert out["forces"][1].abs().max() < 1e-10 * out["forces"].abs().max()
    model = build("esen", 4, num_layers=2, forces="conservative").double()
    forces = model(b)["forces"]
    assert torch.isfinite(forces).all()
    h = 1e-5
    fd = torch.empty(9, dtype=F64)
    with torch.no_grad():
        for c in range(9):
            e = []
            for sign in (1.0, -1.0):
                pos = b.pos.clone()
                pos.view(-1)[c] += sign * h
                e.append(model(b.replace(pos=pos))["energy"].sum())
            fd[c] = -(e[0] - e[1]) / (2 * h)
    err = rel_err(forces.reshape(-1), fd)
    print(f"polar-axis FD error {err:.1e} (|F| {fd.abs().max():.1e})")
    assert fd.abs().max() > 1e-4 and err < 1e-6


def test_force_head_reads_l1_channels():
    """Direct forces are a linear map of the ℓ=1 features: zero head -> zero forces."""
    torch.manual_seed(0)
    model = build("esen", 4, num_layers=1).double()
    b = _batch([water()])
    assert model(b)["forces"].abs().max() > 0
    model.force_head.weight.data.zero_()
    assert torch.all(model(b)["forces"] == 0)


def test_options_change_the_model():
    base = count_parameters(build("esen", 8))
    for opts in ({"lmax": 2}, {"mmax": 4}, {"num_layers": 2}, {"num_basis": 4}, {"radial_hidden": 16},
                 {"ffn_factor": 1}, {"parity": "so3"}, {"structure": "fairchem"}, {"ffn": "grid"},
                 {"ffn": "spectral"}):
        assert count_parameters(build("esen", 8, **opts)) != base, opts
    torch.manual_seed(0)
    b = _batch([water()])
    ref = build("esen", 4, num_layers=1).double()
    e_ref = ref(b)["energy"]
    other = build("esen", 4, num_layers=1, avg_neighbors=3.0).double()
    other.load_state_dict(ref.state_dict())
    assert not torch.allclose(other(b)["energy"], e_ref)


@pytest.mark.parametrize("opts", [{"lmax": 5}, {"lmax": 0}, {"mmax": 3, "lmax": 2}, {"num_layers": 0},
                                  {"parity": "o2"}, {"avg_neighbors": -1.0}, {"lmax": 2.5},
                                  {"structure": "mace"}, {"ffn": "mlp"}])
def test_bad_options_are_config_errors(opts):
    with pytest.raises(ConfigError, match="esen"):
        build("esen", 8, **opts)


def test_smooth_across_the_polar_chart_boundary():
    """An edge whose |r̂_y| crosses 0.9 switches Wigner charts; the energy stays smooth (second difference
    O(h²)) and conservative forces still match finite differences there."""
    torch.manual_seed(0)
    model = build("esen", 4, num_layers=2, forces="conservative").double()
    theta0, h = float(np.arccos(0.9)), 2e-4

    def bent(theta: float) -> Batch:  # the C-O bond turns through the boundary, the C-H bond stays put
        u = np.array([np.sin(theta), np.cos(theta), 0.0])
        return _batch([Atoms("COH", positions=[[0.0, 0.0, 0.0], 1.2 * u, [1.0, -0.3, 0.4]])])

    energies = [float(model(bent(theta0 + k * h))["energy"][0].detach()) for k in (-2, -1, 0, 1, 2)]
    first = abs(energies[3] - energies[1])
    third = abs(energies[4] - 2 * energies[3] + 2 * energies[1] - energies[0])
    print(f"chart boundary: first difference {first:.1e}, third difference {third:.1e}")
    # smooth: third ~ h² · first (scale-free); a jump J between charts would leave ~J in the third difference
    assert first > 1e-8 and third < 1e-5 * first
    b = bent(theta0 + 1e-9)
    forces = model(b)["forces"].detach()
    fd = torch.empty(9, dtype=F64)
    with torch.no_grad():
        for c in range(9):
            e = []
            for sign in (1.0, -1.0):
                pos = b.pos.clone()
                pos.view(-1)[c] += sign * 1e-5
                e.append(model(b.replace(pos=pos))["energy"].sum())
            fd[c] = -(e[0] - e[1]) / 2e-5
    err = rel_err(forces.reshape(-1), fd)
    print(f"chart boundary FD error {err:.1e}")
    assert fd.abs().max() > 1e-4 and err < 1e-6


def test_fairchem_structure_has_the_reference_sizes():
    """At fairchem's released proportions (sphere = hidden = edge channels C = 14, 64 radial basis functions,
    lmax 4, mmax 2, complex m > 0 weights) the blocks have exactly the parameter counts of fairchem-core
    2.24.0's eSCNMDBackbone (benchmarks/fairchem_peer.py, params_by_module): Edgewise 58,744, GridAtomwise
    588, EdgeDegreeEmbedding 2,618."""
    model = build("esen", 14, num_layers=2, structure="fairchem", parity="so3", ffn_factor=1, num_basis=64,
                  radial_hidden=14)
    assert count_parameters(model.messages[0]) == 58744
    assert count_parameters(model.ffns[0]) == 588
    assert count_parameters(model.edge_embedding) == 2618


def test_grid_feed_forward_error_is_aliasing_only():
    """The S² grid round trip is exact up to lmax; with linear pointwise maps the grid feed-forward is exactly
    equivariant; only the SiLUs (degrees above lmax folded back by the grid) make it approximate."""
    from e3nn import o3

    from symscale.models.esen_blocks import GridFeedForward, s2_grid

    to, back = s2_grid(4)
    assert torch.allclose(back @ to, torch.eye(25, dtype=F64), atol=1e-12)
    torch.manual_seed(0)
    ffn = GridFeedForward(4, 6, 12).double()
    x = torch.randn(5, 25, 6, dtype=F64)  # unit second moment per coefficient, as after EquivariantRMSNorm
    rot = random_rotation(3)
    d = o3.Irreps("0e+1o+2e+3o+4e").D_from_matrix(rot)
    err = rel_err(ffn(torch.einsum("ij,njc->nic", d, x)), torch.einsum("ij,njc->nic", d, ffn(x)))
    linear = GridFeedForward(4, 6, 12).double()
    linear.mlp[1], linear.mlp[3] = torch.nn.Identity(), torch.nn.Identity()
    err_lin = rel_err(linear(torch.einsum("ij,njc->nic", d, x)), torch.einsum("ij,njc->nic", d, linear(x)))
    print(f"grid feed-forward equivariance error: SiLU {err:.1e}, linear {err_lin:.1e}")
    assert err_lin < 1e-12 and 1e-6 < err < 0.3  # ~0.1 for unit-scale random features (the model: ~1e-2)


@pytest.mark.parametrize("ffn", ["grid", "spectral"])
def test_fairchem_structure_sparse_rotation_matches_dense(monkeypatch, ffn):
    """structure="fairchem" rotates with the block-sparse EdgeRotation when the rotation needs no gradient and
    with the dense batched matmuls otherwise (positions requiring grad): energies, forces and parameter
    gradients agree to rounding (float64)."""
    from symscale.models.edge_frame import EdgeRotation

    torch.manual_seed(0)
    model = build("esen", 5, num_layers=2, structure="fairchem", parity="so3", ffn=ffn).double()
    b = _batch([_rattled_ethanol(), water()])
    paths: list[bool] = []
    into = EdgeRotation.into_blocks
    monkeypatch.setattr(EdgeRotation, "into_blocks", lambda self, x: paths.append(self.sparse) or into(self, x))
    results, used = [], []
    for pos in (b.pos, b.pos.clone().requires_grad_(True)):  # sparse, then dense
        paths.clear()
        out = model(b.replace(pos=pos))
        used.append(set(paths))
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append([out["energy"].detach(), out["forces"].detach(), *grads])
    assert used == [{True}, {False}]
    for a, ref in zip(*results):
        assert float((a - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    assert float(results[0][1].abs().max()) > 1e-3


@pytest.mark.parametrize("width,hidden", [(6, 6), (5, 10)])
def test_grid_feed_forward_matches_pointwise_mlp_on_the_grid(width, hidden):
    """GridFeedForward applies its first and last linear maps to the coefficients (they commute with the grid
    transforms): the same function as the MLP applied at every grid point between ``to`` and ``from``."""
    from symscale.models.esen_blocks import GridFeedForward

    torch.manual_seed(0)
    ffn = GridFeedForward(4, width, hidden).double()
    x = torch.randn(7, 25, width, dtype=F64)
    with torch.no_grad():
        ref = ffn.from_grid @ ffn.mlp(ffn.to_grid @ x)  # (G, K) @ (n, K, C): the MLP at each of the G points
        out = ffn(x)
    assert out.shape == x.shape
    assert float((out - ref).abs().max()) < 1e-12 * float(ref.abs().max())
