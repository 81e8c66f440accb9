"""Rotation augmentation, symmetry loss and frame averaging on small real molecules (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from symscale.data.batch import Batch
from symscale.data.structure import Structure
from symscale.models.layers import BesselBasis, ElementEmbedding, ForceFieldModel, MLP, scatter_sum
from symscale.train.symmetry import (FrameAveraging, centres_of_mass, pca_frames, random_rotations,
                                     rotate_batch, symmetry_loss, tile_batch)

CUTOFF = 4.0


class RawVectorModel(ForceFieldModel):
    """Not rotation-equivariant on purpose: raw edge vectors feed an MLP (the study's unconstrained MPNN
    in miniature); direct force head."""

    def __init__(self, width: int = 16, forces: str = "direct"):
        super().__init__(forces=forces, cutoff=CUTOFF)
        self.width = width
        self.embed = ElementEmbedding(width)
        self.rbf = BesselBasis(CUTOFF, 6)
        self.edge = MLP([width + 6 + 3, width, width])
        self.energy_head = MLP([width, width, 1])
        self.force_head = MLP([width, width, 3])

    def compute(self, batch, pos):
        vec = batch.edge_vectors(pos)
        d = torch.linalg.vector_norm(vec, dim=-1)
        i, j = batch.edge_index
        env = self.rbf.envelope(d).unsqueeze(-1)
        msg = self.edge(torch.cat([self.embed(batch.numbers)[j], self.rbf(d), vec], -1)) * env
        h = self.embed(batch.numbers) + scatter_sum(msg, i, pos.shape[0])
        return self.energy_head(h).squeeze(-1), self.force_head(h)


class PairModel(ForceFieldModel):
    """Equivariant and conservative: a learned element-pair potential of the distance."""

    def __init__(self, width: int = 8):
        super().__init__(forces="conservative", cutoff=CUTOFF)
        self.width = width
        self.embed = ElementEmbedding(width)
        self.rbf = BesselBasis(CUTOFF, 6)
        self.mlp = MLP([2 * width + 6, width, 1])

    def compute(self, batch, pos):
        vec = batch.edge_vectors(pos)
        d = torch.linalg.vector_norm(vec, dim=-1)
        i, j = batch.edge_index
        z = self.embed(batch.numbers)
        e = self.mlp(torch.cat([z[i] + z[j], z[i] * z[j], self.rbf(d)], -1)).squeeze(-1)
        return scatter_sum(e * self.rbf.envelope(d), i, pos.shape[0]), None


def generic_molecules(seed: int = 0) -> list[Structure]:
    """Distorted small molecules: no two covariance eigenvalues coincide."""
    rng = np.random.default_rng(seed)
    out = []
    for name in ("CH3CH2OH", "CH3COOH", "H2O", "CH3NO2"):
        a = molecule(name)
        a.positions += rng.normal(scale=0.08, size=a.positions.shape)
        out.append(Structure(numbers=a.numbers, positions=a.positions,
                             forces=rng.normal(size=a.positions.shape), energy=float(rng.normal())))
    return out


@pytest.fixture
def mol_batch() -> Batch:
    return Batch.from_structures(generic_molecules(), cutoff=CUTOFF, dtype=torch.float64)


def models(seed: int = 0):
    torch.manual_seed(seed)
    raw = RawVectorModel().double()
    raw.set_normalization({1: -13.6, 6: -1030.0, 7: -1480.0, 8: -2040.0}, 0.05, 0.7)
    return raw


def test_random_rotations_are_haar_proper_and_seeded():
    R = random_rotations(4000, torch.Generator().manual_seed(1))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4000, dtype=torch.float64), atol=1e-12)
    # Haar: E[R] = 0 and the rotation angle has density (1 - cos t)/pi, so E[trace R] = 0, E[tr^2] = 1.
    assert R.mean(0).abs().max() < 0.05
    tr = torch.diagonal(R, dim1=-2, dim2=-1).sum(-1)
    assert abs(tr.mean()) < 0.06 and abs((tr**2).mean() - 1.0) < 0.08
    again = random_rotations(4000, torch.Generator().manual_seed(1))
    assert torch.equal(R, again)
    assert random_rotations(2, torch.Generator().manual_seed(1), dtype=torch.float32).dtype == torch.float32


def test_rotate_batch_molecules(mol_batch):
    R = random_rotations(mol_batch.n_structures, torch.Generator().manual_seed(2))
    rot = rotate_batch(mol_batch, R)
    com0, com1 = centres_of_mass(mol_batch), centres_of_mass(rot)
    assert torch.allclose(com0, com1, atol=1e-12)
    # distances and edge vectors rotate consistently; forces rotate; energies untouched
    v0, v1 = mol_batch.edge_vectors(), rot.edge_vectors()
    Rt = R.transpose(-1, -2)[mol_batch.batch[mol_batch.edge_index[0]]]
    assert torch.allclose(torch.einsum("ei,eij->ej", v0, Rt), v1, atol=1e-12)
    s = mol_batch.batch == 1
    assert torch.allclose(mol_batch.forces[s] @ R[1].T, rot.forces[s], atol=1e-12)
    assert torch.equal(rot.energy, mol_batch.energy)
    # the neighbour list of the rotated geometry is the same set of edges
    fresh = Batch.from_structures([Structure(numbers=mol_batch.numbers[s].numpy(),
                                             positions=rot.pos[s].numpy())], cutoff=CUTOFF)
    assert fresh.n_edges == int((mol_batch.batch[mol_batch.edge_index[0]] == 1).sum())


def test_rotate_batch_periodic_cell():
    a = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    a.rattle(0.05, seed=3)
    st = Structure.from_atoms(a)
    b = Batch.from_structures([st], cutoff=CUTOFF, dtype=torch.float64)
    R = random_rotations(1, torch.Generator().manual_seed(4))
    rot = rotate_batch(b, R)
    assert torch.allclose(rot.cell[0], b.cell[0] @ R[0].T, atol=1e-12)
    # rebuilding the neighbour list from the rotated cell reproduces the rotated edge vectors
    rebuilt = Batch.from_structures([Structure(numbers=st.numbers, positions=rot.pos.numpy(),
                                               cell=rot.cell[0].numpy(), pbc=st.pbc)],
                                    cutoff=CUTOFF, dtype=torch.float64)
    key = lambda v: torch.sort(torch.linalg.vector_norm(v, dim=-1)).values
    assert rebuilt.n_edges == b.n_edges
    assert torch.allclose(key(rebuilt.edge_vectors()), key(rot.edge_vectors()), atol=1e-9)


def test_tile_batch_layout(mol_batch):
    t = tile_batch(mol_batch, 3)
    assert t.n_structures == 3 * mol_batch.n_structures and t.tokens == 3 * mol_batch.tokens
    assert torch.allclose(t.edge_vectors().view(3, -1, 3)[2], mol_batch.edge_vectors())
    model = models()
    out, out_t = model(mol_batch), model(t)
    assert torch.allclose(out_t["energy"].view(3, -1)[1], out["energy"], atol=1e-10)
    assert torch.allclose(out_t["forces"].view(3, -1, 3)[2], out["forces"], atol=1e-10)


def test_symmetry_loss_zero_for_equivariant_model(mol_batch):
    torch.manual_seed(0)
    model = PairModel().double()
    model.set_normalization(None, 0.05, 0.7)
    loss, extra = symmetry_loss(model, mol_batch, n_rotations=5, generator=torch.Generator().manual_seed(0))
    assert extra == 6
    assert float(loss.detach()) < 1e-10
    out = model(mol_batch)
    loss2, extra2 = symmetry_loss(model, mol_batch, 3, torch.Generator().manual_seed(1), outputs=out)
    assert extra2 == 3 and float(loss2.detach()) < 1e-10


def test_symmetry_loss_positive_and_differentiable_for_raw_model(mol_batch):
    model = models()
    model.train()
    loss, extra = symmetry_loss(model, mol_batch, n_rotations=5, generator=torch.Generator().manual_seed(0))
    assert extra == 6 and float(loss.detach()) > 1e-2
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    # same generator seed -> same loss
    model.zero_grad()
    again, _ = symmetry_loss(model, mol_batch, 5, torch.Generator().manual_seed(0))
    assert torch.allclose(loss, again)


@pytest.mark.parametrize("proper", [False, True])
def test_frame_averaging_makes_raw_model_symmetric(mol_batch, proper):
    raw = models()
    fa = FrameAveraging(raw, proper=proper)
    assert fa.n_frames == (4 if proper else 8)
    frames, _, gap = pca_frames(mol_batch, proper=proper)
    assert frames.shape == (fa.n_frames, mol_batch.n_structures, 3, 3)
    assert float(gap.min()) > 1e-3  # generic molecules
    R = random_rotations(mol_batch.n_structures, torch.Generator().manual_seed(5))
    if not proper:
        R[0] = -R[0]  # an improper rotation (inversion composed with a rotation)
    rot = rotate_batch(mol_batch, R)
    f_rot = torch.einsum("nj,nij->ni", fa(mol_batch)["forces"], R[mol_batch.batch])
    out, out_rot = fa(mol_batch), fa(rot)
    assert torch.allclose(out["energy"], out_rot["energy"], atol=1e-8, rtol=0)
    assert (f_rot - out_rot["forces"]).abs().max() < 1e-8
    # the raw model is clearly not symmetric
    raw_e = raw(mol_batch)["energy"] - raw(rot)["energy"]
    raw_f = torch.einsum("nj,nij->ni", raw(mol_batch)["forces"], R[mol_batch.batch]) - raw(rot)["forces"]
    assert raw_e.abs().max() > 1e-5 and raw_f.abs().max() > 1e-3
    # translations do not matter (centre of mass), and the loss of the wrapped model vanishes
    moved = mol_batch.replace(pos=mol_batch.pos + torch.tensor([1.5, -2.0, 0.3], dtype=torch.float64))
    assert torch.allclose(fa(moved)["energy"], out["energy"], atol=1e-8, rtol=0)
    loss, extra = symmetry_loss(fa, mol_batch, 2, torch.Generator().manual_seed(0))
    assert float(loss.detach()) < 1e-8 and extra == 3


def test_frame_averaging_permutation_equivariant_and_forwards_attributes(mol_batch):
    raw = models()
    fa = FrameAveraging(raw)
    s = Batch.from_structures(generic_molecules()[:1], cutoff=CUTOFF, dtype=torch.float64)
    perm = torch.randperm(s.tokens, generator=torch.Generator().manual_seed(0))
    st = generic_molecules()[0]
    sp = Batch.from_structures([Structure(numbers=st.numbers[perm.numpy()], positions=st.positions[perm.numpy()])],
                               cutoff=CUTOFF, dtype=torch.float64)
    o, op = fa(s), fa(sp)
    assert torch.allclose(o["energy"], op["energy"], atol=1e-9, rtol=0)
    assert torch.allclose(o["forces"][perm], op["forces"], atol=1e-9)
    assert list(fa.parameters()) and len(list(fa.parameters())) == len(list(raw.parameters()))
    fa.set_normalization(None, 0.1, 2.0)
    assert float(raw.energy_scale) == 0.1 and float(fa.force_scale) == 2.0
    assert fa.cutoff == CUTOFF and fa.inner_force_mode == "direct" and fa.force_mode == "direct"
    assert fa.last_min_gap is not None and fa.last_min_gap > 0


def test_frame_averaging_degenerate_molecule_reports_small_gap():
    a = molecule("CH4")  # tetrahedral: isotropic covariance, frames are arbitrary
    b = Batch.from_atoms([a], cutoff=CUTOFF, dtype=torch.float64)
    fa = FrameAveraging(models())
    fa(b)
    assert fa.last_min_gap < 1e-8


# ----------------------------------------------------------------------------------------- the staircase
def test_symmetry_loss_on_registry_models(mol_batch):
    from symscale.models import build

    torch.manual_seed(0)
    egnn = build("egnn", 8, cutoff=CUTOFF).double()
    mpnn = build("mpnn", 8, cutoff=CUTOFF).double()
    for m in (egnn, mpnn):
        m.set_normalization(None, 0.05, 0.5)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    l_egnn, _ = symmetry_loss(egnn, mol_batch, 5, gen())
    l_mpnn, _ = symmetry_loss(mpnn, mol_batch, 5, gen())
    assert float(l_egnn.detach()) < 1e-10
    assert float(l_mpnn.detach()) > 1e-3
    l_mpnn.backward()
    assert all(p.grad is not None for p in mpnn.parameters() if p.requires_grad)


def test_frame_averaging_registry_mpnn(mol_batch):
    from symscale.models import build

    torch.manual_seed(1)
    mpnn = build("mpnn", 8, cutoff=CUTOFF).double()
    fa = FrameAveraging(mpnn)
    R = random_rotations(mol_batch.n_structures, torch.Generator().manual_seed(7))
    rot = rotate_batch(mol_batch, R)
    o, o_rot = fa(mol_batch), fa(rot)
    f_back = torch.einsum("nj,nij->ni", o["forces"], R[mol_batch.batch])
    assert (o["energy"] - o_rot["energy"]).abs().max() < 1e-8
    assert (f_back - o_rot["forces"]).abs().max() < 1e-8
    raw_f = torch.einsum("nj,nij->ni", mpnn(mol_batch)["forces"], R[mol_batch.batch]) - mpnn(rot)["forces"]
    assert raw_f.abs().max() > 1e-4
