"""Triplet / quadruplet index sets and invariant geometry of ``gemnet``, against brute-force Python."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from symscale.data.neighbors import neighbor_list
from symscale.models import gemnet_geometry as geo


def hand_molecule() -> Atoms:
    """Seven atoms: a bent, twisted chain with a branch, so some pairs are out of range at 2.6 Å."""
    pos = [[0.0, 0.0, 0.0], [1.5, 0.1, 0.0], [2.1, 1.4, 0.3], [3.5, 1.6, 1.1], [1.9, -1.2, -0.6],
           [4.6, 2.4, 0.5], [0.2, 1.1, -1.0]]
    return Atoms("CCCOCNH", positions=pos)


def graph(atoms: Atoms, cutoff: float):
    cell = np.asarray(atoms.cell) if atoms.pbc.any() else None
    ei, sh = neighbor_list(atoms.positions, cutoff, cell, atoms.pbc)
    ei, sh = torch.as_tensor(ei), torch.as_tensor(sh)
    vec = torch.as_tensor(atoms.positions)[ei[1]] - torch.as_tensor(atoms.positions)[ei[0]] + sh
    return ei, sh, vec


def brute_triplets(ei, vec, mask):
    """(out, in) with out=(i,j), in=(j,k), k not the same image as i: r_ij + r_jk != 0."""
    edges = [e for e in range(ei.shape[1]) if mask[e]]
    return {(o, n) for o in edges for n in edges
            if ei[1, o] == ei[0, n] and torch.linalg.norm(vec[o] + vec[n]) > 1e-6}


def brute_quadruplets(ei, vec, mask):
    """(out, mid, in) chains i-j-k-l of four distinct images."""
    trip = brute_triplets(ei, vec, mask)
    out = set()
    for (o, m), (m2, n) in itertools.product(trip, trip):
        if m == m2 and torch.linalg.norm(vec[o] + vec[m] + vec[n]) > 1e-6:
            out.add((o, m, n))
    return out


@pytest.mark.parametrize("sub_cutoff", [None, 2.0])
def test_triplets_and_quadruplets_match_brute_force(sub_cutoff):
    ei, sh, vec = graph(hand_molecule(), 2.6)
    d = vec.norm(dim=-1)
    mask = torch.ones_like(d, dtype=torch.bool) if sub_cutoff is None else d < sub_cutoff
    t_out, t_in = geo.triplets(ei, sh, mask, 7)
    got_t = list(zip(t_out.tolist(), t_in.tolist()))
    assert len(got_t) == len(set(got_t)), "duplicate triplets"
    ref_t = brute_triplets(ei, vec, mask)
    assert set(got_t) == ref_t and len(ref_t) > 5
    q = geo.quadruplets(ei, sh, t_out, t_in)
    got_q = list(zip(*(x.tolist() for x in q)))
    assert len(got_q) == len(set(got_q))
    ref_q = brute_quadruplets(ei, vec, mask)
    assert set(got_q) == ref_q and len(ref_q) > 2
    # four distinct atoms in every quadruplet of a molecule
    atoms = torch.stack([ei[0, q[0]], ei[1, q[0]], ei[1, q[1]], ei[1, q[2]]], dim=1)
    assert all(len(set(row)) == 4 for row in atoms.tolist())


def test_periodic_images_are_distinct_partners():
    """In a small cell an atom's own periodic images are neighbours; only the exact back-edge is dropped."""
    atoms = Atoms("HeNe", positions=[[0.0, 0.0, 0.0], [1.1, 0.9, 0.6]], cell=np.diag([2.4, 2.7, 3.1]),
                  pbc=True)
    ei, sh, vec = graph(atoms, 3.0)
    assert torch.any(ei[0] == ei[1])  # self-image edges exist
    mask = torch.ones(ei.shape[1], dtype=torch.bool)
    t_out, t_in = geo.triplets(ei, sh, mask, 2)
    assert set(zip(t_out.tolist(), t_in.tolist())) == brute_triplets(ei, vec, mask)
    mask = vec.norm(dim=-1) < 2.5
    t_out, t_in = geo.triplets(ei, sh, mask, 2)
    q = geo.quadruplets(ei, sh, t_out, t_in)
    assert set(zip(*(x.tolist() for x in q))) == brute_quadruplets(ei, vec, mask)


def test_empty_graph():
    ei = torch.zeros((2, 0), dtype=torch.long)
    sh = torch.zeros((0, 3))
    t_out, t_in = geo.triplets(ei, sh, None, 1)
    assert t_out.numel() == 0 and t_in.numel() == 0
    assert all(x.numel() == 0 for x in geo.quadruplets(ei, sh, t_out, t_in))


def test_pair_by_key_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randint(0, 6, (13,), generator=g), torch.randint(0, 6, (9,), generator=g)
    a, b = geo.pair_by_key(left, right, 6)
    got = list(zip(a.tolist(), b.tolist()))
    ref = [(x, y) for x in range(13) for y in range(9) if left[x] == right[y]]
    assert got == ref


def test_nearest_mask_keeps_nearest_per_centre():
    ei, _, vec = graph(molecule("CH3CH2OH"), 4.0)
    d = vec.norm(dim=-1)
    mask = d < 3.5
    keep = geo.nearest_mask(ei[0], d, mask, 3)
    for c in range(9):
        cand = [e for e in range(ei.shape[1]) if ei[0, e] == c and mask[e]]
        ref = sorted(cand, key=lambda e: (float(d[e]), e))[:3]
        assert sorted(torch.nonzero(keep & (ei[0] == c)).squeeze(-1).tolist()) == sorted(ref)


def _np_dihedral(p0, p1, p2, p3) -> float:
    """Reference dihedral (rad) from plane normals (IUPAC sign, as ``ase.Atoms.get_dihedral``)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))


def test_angles_and_dihedrals_match_numpy():
    atoms = hand_molecule()
    p = atoms.positions
    ei, sh, vec = graph(atoms, 2.6)
    t_out, t_in = geo.triplets(ei, sh, None, 7)
    cos = geo.triplet_cosine(vec.double(), t_out, t_in)
    for c, o, n in zip(cos.tolist(), t_out.tolist(), t_in.tolist()):
        i, j, k = int(ei[0, o]), int(ei[1, o]), int(ei[1, n])
        ref = np.dot(p[i] - p[j], p[k] - p[j]) / np.linalg.norm(p[i] - p[j]) / np.linalg.norm(p[k] - p[j])
        assert abs(c - ref) < 1e-12
        assert abs(np.degrees(np.arccos(c)) - atoms.get_angle(i, j, k)) < 1e-8
    q = geo.quadruplets(ei, sh, t_out, t_in)
    cos_j, cos_k, x, y = geo.dihedral_components(vec.double(), *q)
    assert len(x) > 2
    for n, (o, m, e) in enumerate(zip(*(t.tolist() for t in q))):
        i, j, k, l = int(ei[0, o]), int(ei[1, o]), int(ei[1, m]), int(ei[1, e])
        phi = _np_dihedral(p[i], p[j], p[k], p[l])
        s = np.sqrt(1 - cos_j[n].item() ** 2) * np.sqrt(1 - cos_k[n].item() ** 2)
        assert abs(np.degrees(np.arccos(cos_k[n].item())) - atoms.get_angle(j, k, l)) < 1e-8
        assert abs(x[n].item() - s * np.cos(phi)) < 1e-12 and abs(y[n].item() - s * np.sin(phi)) < 1e-12
        # ase measures the same torsion in [0, 360)
        assert abs((np.degrees(phi) - atoms.get_dihedral(i, j, k, l) + 180) % 360 - 180) < 1e-8


def test_dihedral_harmonics_and_legendre():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(20, generator=g, dtype=torch.float64)
    phi = torch.rand(20, generator=g, dtype=torch.float64) * 6
    h = geo.dihedral_harmonics(s * torch.cos(phi), s * torch.sin(phi), 4)
    m = torch.arange(1, 5, dtype=torch.float64)
    assert torch.allclose(h, s[:, None] ** m * torch.cos(m * phi[:, None]), atol=1e-14)
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    leg = geo.legendre(x, 6)
    for ell in range(6):
        ref = np.polynomial.legendre.legval(x.numpy(), np.eye(6)[ell])
        assert np.allclose(leg[:, ell].numpy(), ref, atol=1e-14)


def test_collinear_chain_is_nan_free_and_smooth():
    """Dihedral features of a straight chain vanish and have finite gradients."""
    pos = torch.tensor([[0.0, 0, 0], [1.2, 0, 0], [2.4, 0, 0], [3.6, 0, 0]], dtype=torch.float64,
                       requires_grad=True)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    vec = pos[ei[1]] - pos[ei[0]]
    cos_j, cos_k, x, y = geo.dihedral_components(vec, torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert x.item() == pytest.approx(0.0, abs=1e-15) and y.item() == pytest.approx(0.0, abs=1e-15)
    feats = geo.dihedral_harmonics(x, y, 3).sum() + cos_j.sum() + cos_k.sum()
    (grad,) = torch.autograd.grad(feats, pos)
    assert torch.isfinite(grad).all()


def test_dense_layout_bmm_equals_scattered_outer_products():
    """sum_t basis_t (x) x[src_t] per target, via the padded layout, equals the naive scatter."""
    g = torch.Generator().manual_seed(2)
    n_dst, n_terms = 9, 40
    dst = torch.randint(0, n_dst, (n_terms,), generator=g)
    dst[dst == 4] = 5  # a target without terms
    src = torch.randint(0, n_dst, (n_terms,), generator=g)
    basis = torch.randn(n_terms, 3, generator=g, dtype=torch.float64)
    x = torch.randn(n_dst, 4, generator=g, dtype=torch.float64)
    naive = torch.zeros(n_dst, 3, 4, dtype=torch.float64)
    naive.index_add_(0, dst, basis[:, :, None] * x[src][:, None])
    layout = geo.dense_layout(dst, n_dst, buckets=3)
    assert len(layout) == 3
    seen, aggs, all_rows = [], [], []
    for rows, idx, slot, kmax in layout:
        assert kmax == int(torch.bincount(dst[idx]).max()) and 4 not in rows.tolist()
        assert len(set(slot.tolist())) == idx.numel() and int(slot.max()) < rows.numel() * kmax
        dense_b = geo.to_dense(basis[idx], slot, rows.numel(), kmax)
        dense_src = torch.zeros(rows.numel() * kmax, dtype=torch.long).index_copy(0, slot, src[idx])
        aggs.append(torch.bmm(dense_b.transpose(1, 2), x[dense_src].view(rows.numel(), kmax, 4)))
        all_rows.append(rows)
        seen += idx.tolist()
    assert sorted(seen) == list(range(n_terms))
    rows = torch.cat(all_rows)
    assert torch.allclose(torch.cat(aggs), naive[rows], atol=1e-13)
    assert sorted(rows.tolist()) == sorted(set(dst.tolist()))
    assert geo.dense_layout(torch.zeros(0, dtype=torch.long), 3) == []


@pytest.mark.parametrize("grouped", [False, True])
def test_term_layout_matches_dense_layout_and_naive_sum(grouped):
    """gemnet_terms.term_layout builds dense_layout's grids (same rows, slots and bases) in whole-array
    operations, and aggregate (fused and autograd paths, forward and backward) equals the naive scatter."""
    from symscale.models.gemnet_terms import aggregate, term_layout

    g = torch.Generator().manual_seed(3)
    n_dst, n_terms = 11, 60
    dst = torch.randint(0, n_dst, (n_terms,), generator=g)
    dst[dst == 4] = 5  # a target without terms
    dst = torch.sort(dst).values if grouped else dst
    src = torch.randint(0, n_dst, (n_terms,), generator=g)
    basis = torch.randn(n_terms, 3, generator=g, dtype=torch.float64)
    layout = geo.dense_layout(dst, n_dst)
    for fused in (True, False):
        terms = term_layout(basis, dst, src, n_dst, n_dst, fused=fused)
        assert torch.equal(terms["rows"], torch.cat([rows for rows, _, _, _ in layout]))
        assert terms["sizes"] == [rows.numel() * kmax for rows, _, _, kmax in layout]
        for b, (rows, idx, slot, kmax) in zip(terms["basis"], layout):
            assert torch.equal(b, geo.to_dense(basis[idx], slot, rows.numel(), kmax).transpose(1, 2))
        x = torch.randn(n_dst, 4, generator=g, dtype=torch.float64, requires_grad=True)
        naive = torch.zeros(n_dst, 3, 4, dtype=torch.float64).index_add(0, dst, basis[:, :, None] * x[src][:, None])
        out = aggregate(x, terms).view(-1, 3, 4)
        assert torch.allclose(out, naive[terms["rows"]], atol=1e-13)
        w = torch.randn(out.shape, generator=g, dtype=torch.float64)
        (grad,) = torch.autograd.grad((out * w).sum(), x)
        (ref,) = torch.autograd.grad((naive[terms["rows"]] * w).sum(), x)
        assert torch.allclose(grad, ref, atol=1e-13)
    assert term_layout(basis[:0], dst[:0], src[:0], n_dst, n_dst) is None


def test_table_rows_sparse_backward_equals_gathers():
    """The quadruplet table x[in] * gate[mid]: with the fused layout its gathers' backward is a sparse
    matmul; values and gradients equal plain index_select."""
    from symscale.models.gemnet_terms import table_rows, term_layout

    g = torch.Generator().manual_seed(4)
    n_edges, n_table, n_terms = 10, 15, 40
    table = (torch.randint(0, n_edges, (n_table,), generator=g), torch.randint(0, n_edges, (n_table,), generator=g))
    dst, src = torch.randint(0, n_edges, (n_terms,), generator=g), torch.randint(0, n_table, (n_terms,), generator=g)
    terms = term_layout(torch.randn(n_terms, 2, dtype=torch.float64), dst, src, n_edges, n_table, table=table)
    assert terms["table_t"] is not None
    x, gate = (torch.randn(n_edges, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, ref = table_rows(x, gate, terms), x[table[0]] * gate[table[1]]
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * w).sum(), (x, gate))
    refs = torch.autograd.grad((ref * w).sum(), (x, gate))
    assert torch.allclose(out, ref) and all(torch.allclose(a, b, atol=1e-13) for a, b in zip(grads, refs))
