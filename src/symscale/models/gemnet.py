"""``gemnet``: an invariant many-body force field of body order 4, in the manner of GemNet-OC.

Rung "invariant" of the symmetry staircase (Gasteiger et al. 2021/2022). Every feature is a scalar
built from distances, bond angles and dihedral angles, so energies are E(3)-invariant; forces come from
a **direct force head** ``F_i = -sum_j f_ij r_hat_ij`` on invariant edge outputs ``f_ij``.

Sign convention: with ``r_ij = pos[j] - pos[i]`` (:mod:`symscale.data.neighbors`), ``r_hat_ij`` points
from ``i`` to ``j``; a **positive** ``f_ij`` pushes ``i`` away from ``j`` (repulsion), the convention of
a pair force ``f = -dV/dr``.

Architecture (width ``w`` = atom and edge embedding size, the single scaling knob):

* atoms ``h_i`` from an element embedding; edges ``m_ij = MLP([h_i, h_j, rbf(d_ij)])`` with a Bessel
  basis and a smooth envelope at ``cutoff``;
* ``num_layers`` interaction blocks, each updating edges from
  - **triplets** ``k -> j -> i`` (edges within ``triplet_cutoff``): the down-projected message of
    ``(j, k)`` times Legendre polynomials of the angle at ``j``, summed per edge and mixed by a bilinear
    layer (GemNet-OC's efficient form), then up-projected;
  - **quadruplets** ``l -> k -> j -> i`` (edges within ``quadruplet_cutoff``, ``body_order=4`` only):
    the down-projected message of ``(k, l)``, gated by the radial basis of the central bond ``(j, k)``,
    times dihedral harmonics ``(sin_j sin_k)^m cos(m phi)`` x ``[1, cos_j, cos_k]``, mixed bilinearly;
  - the atoms (``m_ij <- [h_i, h_j, m_ij]``, at the start of the block); then atoms are updated from
    the sum of their edges gated by the radial basis;
* after every block an output block: per-atom energies and per-edge force magnitudes ``f_ij``, summed
  over blocks (as GemNet-OC does).

Smoothness: each triplet / quadruplet term carries the product of polynomial envelopes of all its edges
at its own cutoff and the dihedral features vanish where the dihedral is undefined, so the energy is
smooth in the positions. Sums are normalised by ``1/sqrt(1 + sum of envelopes)`` (a smooth soft degree).

Cost: triplets and quadruplets grow fast with their cutoffs (on drug-like molecules ~10 triplets and
~30-60 quadruplets per edge at 4 / 3 Å); both are aggregated by batched matrix products over a padded
layout (targets sorted into 4 buckets by term count, gathered in one pass), never as a
``(terms, basis, channels)`` tensor; the quadruplet product ``x_in · gate_mid`` is formed once per ``(mid,
in)`` triplet, not per quadruplet. The edge MLPs on ``[h_i, h_j, ...]`` project the atom parts per atom and
gather them (:func:`~symscale.models.layers.pair_linear`: the same map, fewer FLOPs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.batch import Batch
from ..errors import ConfigError
from . import gemnet_geometry as geo
from .gemnet_terms import aggregate, table_rows, term_layout
from .layers import (MLP, RADIAL_GAIN, SILU_GAIN, BesselBasis, ElementEmbedding, ForceFieldModel,
                     PolynomialEnvelope, edge_vectors, init_linear_, pair_linear, scatter_sum)

OPTIONS: dict[str, tuple[object, str]] = {
    "forces": ("direct", "force mode: 'direct' (force head sum_j f_ij r_hat_ij) or 'conservative'"),
    "cutoff": (5.0, "radius (Å) of the edge graph (embeddings, atom updates, force head)"),
    "triplet_cutoff": (4.0, "radius (Å) of edges taking part in triplet (angle) interactions, <= cutoff"),
    "quadruplet_cutoff": (3.0, "radius (Å) of edges in quadruplet (dihedral) terms, <= triplet_cutoff"),
    "body_order": (4, "4: triplets and quadruplets (dihedrals); 3: triplets only, no quadruplets built"),
    "num_layers": (4, "number of interaction blocks (fixed depth; only width is scaled)"),
    "num_radial": (16, "Bessel radial basis functions"),
    "num_spherical": (7, "Legendre polynomials P_0..P_{n-1} of the triplet angle"),
    "num_dihedral": (3, "dihedral harmonics m=1..n of (sin_j sin_k)^m cos(m phi)"),
    "triplet_dim": (None, "down-projected triplet message size; None = max(many_body_floor, width // 4)"),
    "quadruplet_dim": (None, "down-projected quadruplet message size; None = max(many_body_floor // 2, "
                             "width // 8, 1)"),
    "many_body_floor": (16, "smallest default triplet_dim (quadruplet_dim: half of it): 16 keeps small widths "
                            "expressive but fixes ~2.8k parameters per block, so N barely grows below width "
                            "64; 1-2 makes every many-body map scale with the width (scaling studies)"),
    "max_neighbors": (None, "keep only the nearest n edges per atom in triplet/quadruplet sub-graphs "
                            "(None = all; a cap makes the energy non-smooth where the ranking changes)"),
}

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_EDGES_PER_ATOM = 16.0  # typical edges per atom at 5 Å in molecules (init scale of the force head only)


class _ManyBody(nn.Module):
    """One many-body edge update in GemNet-OC's efficient bilinear form.

    For every target edge ``e`` it forms ``A_e = sum_t basis_t (x) x_t`` over its terms ``t`` (triplets or
    quadruplets), where ``x_t = SiLU(down(m))[src_t] * radial(rbf)[gate_t]``, then
    ``out_e = up(SiLU(bilinear(A_e)))``. ``A`` is a batched matrix product over padded
    ``(targets, terms, basis)`` layouts (see :func:`gemnet_geometry.dense_layout`), so no
    ``(terms, basis, channels)`` tensor is materialised. No biases: an edge without terms gets 0.
    ``down`` and ``radial`` are applied by the caller (:class:`_Block`; ``down`` fused with ``edge_self``).
    """

    def __init__(self, width: int, num_radial: int, num_basis: int, dim: int):
        super().__init__()
        self.down = nn.Linear(width, dim, bias=False)
        self.radial = nn.Linear(num_radial, dim, bias=False)
        self.bilinear = nn.Linear(num_basis * dim, dim, bias=False)
        self.up = nn.Linear(dim, width, bias=False)
        self.act = nn.SiLU()

    def forward(self, u: torch.Tensor, x: torch.Tensor, gate: torch.Tensor, terms: dict | None,
                inplace: bool = False) -> torch.Tensor:
        """``u`` plus the update of every edge ``(E, w)``, given ``x = SiLU(down(m))`` and ``gate = radial(rbf)``
        ``(E, D)``; ``terms`` from :meth:`GemNet.interaction_graph` (edges without terms get 0). ``inplace``:
        add into ``u`` itself (a tensor no other autograd node needs)."""
        if terms is None:
            return u
        if terms["table"] is None:                            # triplets: the radial gate of the source edge
            table = x * gate
        else:                                                 # quadruplets: x of in, gate of mid, per triplet
            table = table_rows(x, gate, terms)
        agg = aggregate(table, terms)  # (rows, B * D): a few padding buckets, not a loop over edges
        update = self.up(self.act(self.bilinear(agg)))
        return u.index_add_(0, terms["rows"], update) if inplace else u.index_add(0, terms["rows"], update)


class _Block(nn.Module):
    """Interaction block: edges from atoms, triplet (+ quadruplet) edge update, atoms from edges."""

    def __init__(self, width: int, num_radial: int, num_spherical: int, num_quad_basis: int,
                 trip_dim: int, quad_dim: int, quadruplets: bool):
        super().__init__()
        self.triplet = _ManyBody(width, num_radial, num_spherical, trip_dim)
        self.quadruplet = _ManyBody(width, num_radial, num_quad_basis, quad_dim) if quadruplets else None
        self.edge_self = nn.Linear(width, width)
        self.edge_mlp = MLP([width, width, width])
        self.atom_radial = nn.Linear(num_radial, width, bias=False)
        self.atom_mlp = MLP([width, width, width])
        self.edge_from_atoms = MLP([3 * width, width, width])
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, m: torch.Tensor, g: dict) -> tuple[torch.Tensor, torch.Tensor]:
        centre, neigh = g["centre"], g["neigh"]
        first, act, last = self.edge_from_atoms  # MLP on [h_i, h_j, m_ij], node parts projected per atom
        m = (m + last(act(pair_linear(first, h, centre, neigh, m)))) * _INV_SQRT2
        # edge_self and the down-projections read the same m and all end in a SiLU: one product, one SiLU
        maps = [self.edge_self, self.triplet.down] + ([self.quadruplet.down] if self.quadruplet else [])
        sizes = [lin.out_features for lin in maps]
        bias = torch.cat([self.edge_self.bias, self.edge_self.bias.new_zeros(sum(sizes[1:]))])
        y = self.act(nn.functional.linear(m, torch.cat([lin.weight for lin in maps]), bias))
        u, *xs = torch.split(y, sizes, dim=1)
        rbf = g["rbf"]
        u = self.triplet(u, xs[0], self.triplet.radial(rbf), g["triplets"])
        if self.quadruplet is not None:
            inplace = g["triplets"] is not None  # u is then the triplet update's own output
            u = self.quadruplet(u, xs[1], self.quadruplet.radial(rbf), g["quadruplets"], inplace)
        m = (m + self.edge_mlp(u)) * _INV_SQRT2
        agg = scatter_sum(m * self.atom_radial(rbf), centre, h.shape[0]) * g["a_scale"].unsqueeze(-1)
        h = (h + self.atom_mlp(agg)) * _INV_SQRT2
        return h, m


class _Output(nn.Module):
    """Output block after an interaction block (GemNet-OC sums them over blocks): a per-atom energy
    from ``h`` and an invariant per-edge force magnitude ``f_ij`` from ``m``, gated by the radial basis
    (so ``f_ij`` vanishes smoothly at the cutoff).

    Init: ``f_ij`` sums ``width`` channels, the atom force sums ~``_EDGES_PER_ATOM`` edges and the model sums
    ``num_outputs`` blocks, so the last force layer's gain is divided by the square root of their product:
    normalised forces start at order 0.3–1 rather than several units (variance-preserving MLPs).
    """

    def __init__(self, width: int, num_radial: int, num_outputs: int = 1):
        super().__init__()
        self.energy_mlp = MLP([width, width, 1], last_bias=False)  # a bias cancels in E - E_isolated
        self.force_mlp = MLP([width, width, width])
        init_linear_(self.force_mlp[-1], SILU_GAIN / (width * _EDGES_PER_ATOM * num_outputs) ** 0.5)
        self.force_radial = init_linear_(nn.Linear(num_radial, width, bias=False))

    def energy(self, h: torch.Tensor) -> torch.Tensor:
        return self.energy_mlp(h).squeeze(-1)

    def force(self, m: torch.Tensor, rbf: torch.Tensor) -> torch.Tensor:
        return (self.force_mlp(m) * self.force_radial(rbf)).sum(-1) * RADIAL_GAIN  # rbf scale: layers.py


class GemNet(ForceFieldModel):
    """GemNet-OC-like invariant model of body order 4 (see the module docstring).

    Args:
        width: atom and edge embedding width (the scaling knob; the paper uses 32..320).
        forces, cutoff, triplet_cutoff, quadruplet_cutoff, body_order, num_layers, num_radial,
        num_spherical, num_dihedral, triplet_dim, quadruplet_dim, many_body_floor, max_neighbors: see
        :data:`OPTIONS`.
    """

    def __init__(self, width: int, forces: str = "direct", cutoff: float = 5.0,
                 triplet_cutoff: float = 4.0, quadruplet_cutoff: float = 3.0, body_order: int = 4,
                 num_layers: int = 4, num_radial: int = 16, num_spherical: int = 7, num_dihedral: int = 3,
                 triplet_dim: int | None = None, quadruplet_dim: int | None = None,
                 many_body_floor: int = 16, max_neighbors: int | None = None):
        super().__init__(forces=forces, cutoff=cutoff)
        _check(width > 0, "width", width, "must be positive")
        _check(body_order in (3, 4), "body_order", body_order, "must be 3 or 4")
        _check(0 < triplet_cutoff <= cutoff, "triplet_cutoff", triplet_cutoff, f"must be in (0, {cutoff}]")
        _check(body_order == 3 or 0 < quadruplet_cutoff <= triplet_cutoff, "quadruplet_cutoff",
               quadruplet_cutoff, f"must be in (0, triplet_cutoff={triplet_cutoff}]")
        for name, val in (("num_layers", num_layers), ("num_radial", num_radial),
                          ("num_spherical", num_spherical), ("num_dihedral", num_dihedral)):
            _check(int(val) == val and val >= 1, name, val, "must be a positive integer")
        for name, val in (("triplet_dim", triplet_dim), ("quadruplet_dim", quadruplet_dim)):
            _check(val is None or (_is_int(val) and val >= 1), name, val, "must be None or a positive integer")
        _check(_is_int(many_body_floor) and many_body_floor >= 1, "many_body_floor", many_body_floor,
               "must be a positive integer")
        _check(max_neighbors is None or max_neighbors >= 1, "max_neighbors", max_neighbors,
               "must be None or >= 1")
        self.width = int(width)
        self.body_order = int(body_order)
        self.triplet_cutoff = float(triplet_cutoff)
        self.quadruplet_cutoff = float(quadruplet_cutoff)
        self.num_spherical = int(num_spherical)
        self.num_dihedral = int(num_dihedral)
        self.max_neighbors = max_neighbors
        floor = int(many_body_floor)
        trip_dim = int(triplet_dim or max(floor, width // 4))
        quad_dim = int(quadruplet_dim or max(floor // 2, width // 8, 1))
        quads = self.body_order == 4

        self.rbf = BesselBasis(cutoff, num_radial)
        self.env = PolynomialEnvelope(cutoff)
        self.env_trip = PolynomialEnvelope(triplet_cutoff)
        self.env_quad = PolynomialEnvelope(quadruplet_cutoff)
        self.embedding = ElementEmbedding(width)
        self.edge_embedding = MLP([2 * width + num_radial, width, width])
        self.blocks = nn.ModuleList(
            _Block(width, num_radial, self.num_spherical, 3 * self.num_dihedral, trip_dim, quad_dim, quads)
            for _ in range(num_layers))
        self.outputs = nn.ModuleList(_Output(width, num_radial, num_layers) for _ in range(num_layers))

    # ------------------------------------------------------------------ geometry
    def interaction_graph(self, batch: Batch, vec: torch.Tensor, dist: torch.Tensor) -> dict:
        """Index sets and invariant bases of one batch (edges, triplets and, at body order 4, quadruplets)."""
        ei, shift, n = batch.edge_index, batch.edge_shift, batch.pos.shape[0]
        n_edges = ei.shape[1]
        d = dist.detach()
        env = self.env(dist)  # the envelope of the radial basis as well (same cutoff and power)
        g: dict = {"centre": ei[0], "neigh": ei[1], "rbf": self.rbf(dist, env.unsqueeze(-1))}
        g["a_scale"] = _soft_degree(env, ei[0], n)
        unit = geo.unit_columns(vec)  # (3, E), shared by angles and dihedrals
        fused = not (torch.is_grad_enabled() and vec.requires_grad)  # constant bases: fused aggregation

        t_mask = geo.nearest_mask(ei[0], d, d < self.triplet_cutoff, self.max_neighbors)
        t_out, t_in = geo.triplets(ei, shift, t_mask, n)
        env_t = self.env_trip(dist)
        w_t = env_t.index_select(0, t_out) * env_t.index_select(0, t_in)
        g["t_out"], g["t_in"] = t_out, t_in
        w_t = w_t * _soft_degree(w_t, t_out, n_edges).index_select(0, t_out)
        basis = geo.legendre(geo.triplet_cosine(vec, t_out, t_in, unit), self.num_spherical) * w_t.unsqueeze(-1)
        g["triplets"] = term_layout(basis, t_out, t_in, n_edges, n_edges, fused=fused)

        if self.body_order == 4:
            q_mask = t_mask & (d < self.quadruplet_cutoff)
            keep = torch.nonzero(q_mask.index_select(0, t_out) & q_mask.index_select(0, t_in)).squeeze(-1)
            tq_out, tq_in = t_out.index_select(0, keep), t_in.index_select(0, keep)
            q_out, q_mid, q_in, q_trip = geo.quadruplets(ei, shift, tq_out, tq_in, with_triplet=True)
            env_q = self.env_quad(dist)
            w_q = env_q.index_select(0, q_out) * env_q.index_select(0, q_mid) * env_q.index_select(0, q_in)
            cos_j, cos_k, x, y = geo.dihedral_components(vec, q_out, q_mid, q_in, unit)
            harm = geo.dihedral_harmonics(x, y, self.num_dihedral, dim=0)            # (M, Q)
            g["q_out"], g["q_mid"], g["q_in"] = q_out, q_mid, q_in
            w_q = w_q * _soft_degree(w_q, q_out, n_edges).index_select(0, q_out)
            ang = torch.stack([w_q, cos_j * w_q, cos_k * w_q])                      # (3, Q), weight folded in
            basis = vec.new_empty(q_out.shape[0], 3, self.num_dihedral)               # (Q, 3M): a * M + m,
            basis = basis.copy_(ang.T.unsqueeze(2) * harm.T.unsqueeze(1)).flatten(1)  # written term-major
            g["quadruplets"] = term_layout(basis, q_out, q_trip, n_edges, tq_out.shape[0],
                                           table=(tq_in, tq_out), fused=fused)
        return g

    # ------------------------------------------------------------------ model
    def compute(self, batch: Batch, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        vec = edge_vectors(batch, pos)
        dist = torch.linalg.vector_norm(vec, dim=-1)
        g = self.interaction_graph(batch, vec, dist)
        centre, neigh = g["centre"], g["neigh"]
        h = self.embedding(batch.numbers).to(pos.dtype)
        first, act, last = self.edge_embedding  # MLP on [h_i, h_j, rbf_ij], node parts projected per atom
        m = last(act(pair_linear(first, h, centre, neigh, g["rbf"])))
        direct = self.force_mode == "direct"
        energy, f = h.new_zeros(h.shape[0]), m.new_zeros(m.shape[0])
        for block, output in zip(self.blocks, self.outputs):
            h, m = block(h, m, g)
            energy = energy + output.energy(h)
            if direct:
                f = f + output.force(m, g["rbf"])
        if not direct:
            return energy, None
        return energy, edge_forces_to_atoms(f, vec, dist, centre, pos.shape[0])


GemNetOC = GemNet  # the registry's preferred name for this family


def edge_forces_to_atoms(f: torch.Tensor, vec: torch.Tensor, dist: torch.Tensor, centre: torch.Tensor,
                         n_atoms: int) -> torch.Tensor:
    """``F_i = -sum_j f_ij r_hat_ij``: positive ``f_ij`` pushes ``i`` away from ``j``. Shape ``(n, 3)``."""
    unit = vec / dist.clamp_min(1e-12).unsqueeze(-1)
    return -scatter_sum(f.unsqueeze(-1) * unit, centre, n_atoms)


def _soft_degree(weight: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``1 / sqrt(1 + sum of weights per bin)``: a normalisation that is smooth in the weights."""
    return torch.rsqrt(1.0 + scatter_sum(weight, index, size))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: object, what: str) -> None:
    if not ok:
        raise ConfigError(f"model 'gemnet': option {name}={value!r} {what}")
