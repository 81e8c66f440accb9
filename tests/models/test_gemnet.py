"""``gemnet``: the shared model suite plus checks of what is specific to the invariant many-body family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from suite import F64, ModelSuite, ethanol, random_rotation, rel_err, transform, water

from symscale.data import Batch
from symscale.errors import ConfigError
from symscale.models import build, count_parameters
from symscale.models import gemnet_geometry as geo
from symscale.models.gemnet import GemNet, edge_forces_to_atoms


class TestGemNet(ModelSuite):
    name = "gemnet"
    options = {"num_layers": 2}
    equivariant = True  # E(3)-invariant features (dihedral enters through cos(m phi) only)


def _model(**opts) -> GemNet:
    torch.manual_seed(0)
    return build("gemnet", 8, **{"num_layers": 2, **opts}).to(F64)


def _third_difference(model, base: Atoms, anchor: int, r: float, h: float = 1e-3) -> tuple[float, list]:
    """Move an H radially from atom ``anchor`` through distance ``r``; return the third difference of E."""
    pos = base.positions
    u = pos[anchor] - pos.mean(0)
    u = u / np.linalg.norm(u)
    energies, counts = [], []
    with torch.no_grad():
        for k in range(4):
            atoms = base + Atoms("H", positions=[pos[anchor] + (r + (k - 1.5) * h) * u])
            b = Batch.from_atoms([atoms], cutoff=5.0, dtype=F64)
            vec = b.edge_vectors()
            g = model.interaction_graph(b, vec, vec.norm(dim=-1))
            counts.append((g["t_out"].numel(), g["q_out"].numel() if "q_out" in g else 0))
            energies.append(float(model(b)["energy"][0]))
    e = energies
    return abs(e[3] - 3 * e[2] + 3 * e[1] - e[0]), counts


class _HardCutoff(torch.nn.Module):
    """A step function in place of an envelope: what the smoothness test must detect."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return (d < self.cutoff).to(d.dtype)


@pytest.mark.parametrize("which", ["triplet", "quadruplet"])
def test_smooth_at_interaction_cutoffs(which):
    """Crossing the triplet (quadruplet) cutoff changes the index sets but not the energy's smoothness;
    the same probe with the envelope replaced by a hard step sees a jump."""
    model = _model()
    r = model.triplet_cutoff if which == "triplet" else model.quadruplet_cutoff
    jump, counts = _third_difference(model, molecule("H2O"), 0, r, h=2e-4)
    k = 0 if which == "triplet" else 1
    assert counts[1][k] > counts[2][k], counts  # the set really changes mid-way
    attr = "env_trip" if which == "triplet" else "env_quad"
    setattr(model, attr, _HardCutoff(r))
    hard, _ = _third_difference(model, molecule("H2O"), 0, r, h=2e-4)
    print(f"{which} cutoff jump {jump:.2e} (with a hard cutoff: {hard:.2e})")
    # scale-free: a smooth energy gives ~h^3 d3E/dr3 (tiny), a jump does not shrink with h
    assert jump < 1e-4 * hard


def test_direct_force_sign_convention():
    """Positive f_ij pushes i away from j: for a dimer along x, atom 0 is pushed to -x, atom 1 to +x."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.3, 0.0, 0.0]], dtype=F64)
    ei = torch.tensor([[0, 1], [1, 0]])
    vec = pos[ei[1]] - pos[ei[0]]
    forces = edge_forces_to_atoms(torch.tensor([2.0, 2.0], dtype=F64), vec, vec.norm(dim=-1), ei[0], 2)
    assert torch.allclose(forces, torch.tensor([[-2.0, 0, 0], [2.0, 0, 0]], dtype=F64))


def test_direct_head_learns_pair_repulsion():
    """A few steps of fitting the direct head to a repulsive pair target V = 1/r give repulsive forces."""
    torch.manual_seed(0)
    model = build("gemnet", 8, num_layers=1).to(F64)
    dimers = [Atoms("HH", positions=[[0, 0, 0], list(np.random.default_rng(s).normal(size=3) * 0.3
                                                      + [0.9 + 0.15 * s, 0, 0])]) for s in range(6)]
    b = Batch.from_atoms(dimers, cutoff=5.0, dtype=F64)
    vec = b.pos[1::2] - b.pos[0::2]
    d = vec.norm(dim=-1, keepdim=True)
    f1 = vec / d**3  # -dV/dx_1 for V = 1/r: atom 1 pushed away from atom 0
    target = torch.stack([-f1, f1], dim=1).reshape(-1, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss = (model(b)["forces"] - target).pow(2).sum(-1).mean()
        loss.backward()
        opt.step()
    pred = model(b)["forces"].detach()
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
    print(f"loss {loss.item():.3e}, min cos(pred, target) {float(cos.min()):.3f}")
    assert torch.all(cos > 0.99)


def test_body_order_3_is_smaller_and_builds_no_quadruplets(monkeypatch):
    m4, m3 = _model(), _model(body_order=3)
    assert count_parameters(m3) < count_parameters(m4)

    def forbidden(*args, **kwargs):
        raise AssertionError("quadruplets built at body_order=3")

    monkeypatch.setattr(geo, "quadruplets", forbidden)
    b = Batch.from_atoms([ethanol(), water()], cutoff=5.0, dtype=F64)
    ref, out = m3(b), m3(transform(b, random_rotation(3)))
    assert rel_err(out["energy"], ref["energy"]) < 1e-10
    with pytest.raises(AssertionError, match="quadruplets built"):
        m4(b)


def test_dihedral_changes_the_energy_only_at_body_order_4():
    """Rotating a terminal H of H2O2 about the O-O bond keeps every distance and angle of the triplet
    sub-graph (H-O-O-H chain at 1.8 Å) but changes the torsion: only a body-order-4 model sees it."""
    base = molecule("H2O2")
    other = base.copy()
    other.set_dihedral(2, 0, 1, 3, base.get_dihedral(2, 0, 1, 3) + 40.0, indices=[3])
    opts = {"triplet_cutoff": 1.8, "quadruplet_cutoff": 1.8, "cutoff": 2.2}
    e = {}
    for bo in (3, 4):
        model = _model(body_order=bo, **opts)
        b = Batch.from_atoms([base, other], cutoff=2.2, dtype=F64)
        e[bo] = model(b)["energy"].detach()
    print(f"torsion energy change: body order 3 {float(e[3][1] - e[3][0]):.2e}, "
          f"4 {float(e[4][1] - e[4][0]):.2e}")
    # exactly blind at body order 3 (round-off only); clearly sensitive at body order 4
    assert abs(float(e[3][1] - e[3][0])) < 1e-14
    assert abs(float(e[4][1] - e[4][0])) > 1e-8


def test_max_neighbors_and_cutoffs_bound_the_index_sets():
    b = Batch.from_atoms([molecule("C6H6")], cutoff=5.0, dtype=F64)
    vec = b.edge_vectors()
    d = vec.norm(dim=-1)
    sizes = {}
    for key, opts in {"default": {}, "small": {"triplet_cutoff": 3.0, "quadruplet_cutoff": 2.0},
                      "capped": {"max_neighbors": 3}}.items():
        g = _model(**opts).interaction_graph(b, vec, d)
        sizes[key] = (g["t_out"].numel(), g["q_out"].numel())
    print(f"(triplets, quadruplets) on benzene: {sizes}")
    assert sizes["small"][0] < sizes["default"][0] and sizes["small"][1] < sizes["default"][1]
    assert sizes["capped"][0] < sizes["default"][0]
    g = _model(max_neighbors=3).interaction_graph(b, vec, d)
    per_out = torch.bincount(g["t_out"], minlength=b.n_edges)
    assert int(per_out.max()) <= 3  # at most 3 in-edges (j, k) per centre j, the back-edge excluded
    assert torch.isfinite(_model(max_neighbors=3)(b)["forces"]).all()


def test_collinear_molecule_forces_finite():
    """A linear molecule (undefined dihedrals everywhere) gives finite conservative forces."""
    atoms = Atoms("HCCH", positions=[[0, 0, -1.66], [0, 0, -0.6], [0, 0, 0.6], [0, 0, 1.66]])
    model = _model(forces="conservative", quadruplet_cutoff=4.0)
    out = model(Batch.from_atoms([atoms], cutoff=5.0, dtype=F64))
    assert torch.isfinite(out["forces"]).all()
    assert torch.allclose(out["forces"][:, :2], torch.zeros(4, 2, dtype=F64), atol=1e-12)


@pytest.mark.parametrize("opts", [{"body_order": 5}, {"triplet_cutoff": 6.0}, {"quadruplet_cutoff": 0.0},
                                  {"quadruplet_cutoff": 4.5},
                                  {"num_layers": 0}, {"max_neighbors": 0}, {"many_body_floor": 0},
                                  {"many_body_floor": 2.5}, {"triplet_dim": 0}])
def test_bad_options_are_config_errors(opts):
    with pytest.raises(ConfigError, match="gemnet"):
        build("gemnet", 8, **opts)


def test_many_body_floor_makes_parameters_scale_with_width():
    """The default floor (16) fixes the many-body maps below width 64, so N barely grows there; floor 1
    lets every map follow the width (d log N / d log w >= 0.8 from width 1), and both agree from width 64."""
    def n(w, **o):
        return count_parameters(build("gemnet", w, **o))

    assert n(4) == n(4, many_body_floor=16)                      # the default is floor 16
    assert np.log2(n(2) / n(1)) < 0.2                             # default: N almost constant at small widths
    for w in (1, 2, 4, 8):
        assert np.log2(n(2 * w, many_body_floor=1) / n(w, many_body_floor=1)) >= 0.8
    assert n(1, many_body_floor=1) < n(1) / 10
    assert n(64, many_body_floor=1) == n(64)
