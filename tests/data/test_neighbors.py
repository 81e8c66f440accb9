"""vesin neighbour lists against ASE's reference ``ase.neighborlist.neighbor_list``."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from symscale.data import neighbor_list


def _edges(i, j, shift):
    return sorted(zip(i.tolist(), j.tolist(), np.round(shift, 6).tolist()))


def _ase(atoms, cutoff):
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    return i, j, S @ atoms.cell.array


@pytest.mark.parametrize("cutoff", [1.2, 2.5, 5.0])
def test_molecule_matches_ase(cutoff):
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    (i_ref, j_ref, s_ref) = _ase(atoms, cutoff)
    edges, shift = neighbor_list(atoms.positions, cutoff)
    assert _edges(edges[0], edges[1], shift) == _edges(i_ref, j_ref, s_ref)
    assert not np.any(edges[0] == edges[1])


@pytest.mark.parametrize("cell_kind", ["cubic", "triclinic", "slab"])
def test_periodic_matches_ase(cell_kind):
    rng = np.random.default_rng(1)
    if cell_kind == "cubic":
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    elif cell_kind == "triclinic":
        atoms = bulk("Si", "diamond", a=5.43)  # primitive (non-orthogonal) cell, small: many images
    else:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        atoms.center(vacuum=5.0, axis=2)
        atoms.pbc = (True, True, False)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    cutoff = 4.0
    i_ref, j_ref, s_ref = _ase(atoms, cutoff)
    edges, shift = neighbor_list(atoms.positions, cutoff, atoms.cell.array, atoms.pbc)
    assert len(i_ref) > 0
    assert _edges(edges[0], edges[1], shift) == _edges(i_ref, j_ref, s_ref)
    # the edge vectors r_ij = pos[j] - pos[i] + shift equal ASE's D vectors
    d = atoms.positions[edges[1]] - atoms.positions[edges[0]] + shift
    assert np.all(np.linalg.norm(d, axis=1) < cutoff)


@pytest.mark.parametrize("periodic", [False, True])
def test_max_neighbors_keeps_the_nearest(periodic):
    if periodic:
        atoms = bulk("Si", "diamond", a=5.43)
        atoms.positions += np.random.default_rng(2).normal(scale=0.05, size=atoms.positions.shape)
        cell, pbc = atoms.cell.array, atoms.pbc
    else:
        atoms = molecule("C6H6")
        atoms.positions += np.random.default_rng(2).normal(scale=0.02, size=atoms.positions.shape)
        cell = pbc = None
    cutoff, k = 5.0, 4
    i_ref, j_ref, d_ref = ase_neighbor_list("ijd", atoms, cutoff)
    edges, shift = neighbor_list(atoms.positions, cutoff, cell, pbc, max_neighbors=k)
    dist = np.linalg.norm(atoms.positions[edges[1]] - atoms.positions[edges[0]] + shift, axis=1)
    for c in range(len(atoms)):
        ref = np.sort(d_ref[i_ref == c])
        mine = np.sort(dist[edges[0] == c])
        assert len(mine) == min(k, len(ref))
        np.testing.assert_allclose(mine, ref[:len(mine)], atol=1e-9)  # the k nearest of the full list
