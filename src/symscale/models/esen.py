"""``esen``: the top of the symmetry staircase — spherical-harmonic features up to ℓ_max = 4 exchanged by
eSCN-style SO(2) convolutions in edge-aligned frames (after fairchem's eSCN / eSEN; written from the papers).

Node features are one tensor ``(n, (lmax+1)², width)``: ``width`` channels ("sphere channels") for every
``(ℓ, m)``. They start as the element embedding (ℓ=0) plus an edge-degree embedding (every ℓ: a sum over
neighbours of ``D(r̂_ij)`` applied to radial/element-dependent ``m=0`` coefficients). A block (pre-norm
residual, ``num_layers`` of them) is

1. **message**: for every edge ``i ← j``, ``L_recv(h)_i + L_send(h)_j`` (per-degree channel mixings) is
   rotated into the frame where ``r̂_ij`` is the polar axis (rows ``|m| ≤ mmax`` only), passed through
   ``SO2Conv → gate → SO2Conv`` (the first one modulated by a radial MLP of the distance), rotated back,
   multiplied by the smooth cutoff envelope and summed over ``j`` (divided by ``avg_neighbors``);
2. **node feed-forward**: per-ℓ channel mixing to ``ffn_factor·width`` channels, gate, mixing back; the
   gates and hidden scalars also see the squared norms of the ℓ > 0 channels.

The per-edge Wigner matrices ``(E, K', K)`` are built once per forward and shared by all blocks; rotating is
one block-sparse matmul over all edges each way (:class:`~symscale.models.edge_frame.EdgeRotation`). Cost per
edge and block is O(L³·C + L²·C²) — no Clebsch–Gordan tensor product anywhere. Energies come from the ℓ=0
channels, direct forces from a learned linear map of the ℓ=1 channels (an equivariant vector per atom).

Symmetry: with ``parity="o3"`` (default) all features have natural parity and the model is equivariant to
rotations and reflections; ``parity="so3"`` keeps eSCN's ``+m ↔ −m`` ("imaginary") weights, which add
pseudo-tensor paths and make the model only rotation-equivariant (mirror images may get different energies).

Structure: ``structure="fairchem"`` switches to the layout of fairchem's eSEN (``eSCNMDBackbone``; blocks in
``esen_blocks.py``): each edge rotates ``[h_j, h_i]`` (2C channels) and convolves it to ``ffn_factor·width``
hidden channels, each block has its own radial MLP of the distance and both elements, and the node
feed-forward defaults to fairchem's S² grid MLP (``ffn``). At matched parameters it costs about 1.6× the
forward FLOPs of the default layout (docs/benchmarks.md, "eSEN vs fairchem eSCNMDBackbone").

Depth: the paper used 12 blocks; the default here is 4, which keeps CPU training practical while still
giving every atom a 4 × cutoff receptive field. ``num_layers`` changes it; width remains the scaling knob.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from ..data.batch import Batch
from ..errors import ConfigError
from .layers import (MLP, RADIAL_GAIN, SILU_GAIN, BesselBasis, ElementEmbedding, ForceFieldModel,
                     PolynomialEnvelope, edge_vectors, init_linear_, pair_linear, scatter_sum)
from .esen_blocks import (FFN_KINDS, ConcatMessageBlock, EdgeElementFeatures, ElementEdgeDegreeEmbedding,
                          feed_forward)
from .so2 import (PARITIES, EdgeFrame, EdgeRotation, EquivariantRMSNorm, SO2Convolution, SO3Linear,
                  degree_of_rows, frame_rows, gate, gate_blocks)

STRUCTURES = ("symscale", "fairchem")

OPTIONS: dict[str, tuple[object, str]] = {
    "lmax": (4, "highest degree ℓ of the spherical-harmonic node features (1..4)"),
    "mmax": (None, "highest |m| kept in the edge frame (0..lmax); None = min(lmax, 2) as in eSCN"),
    "num_layers": (4, "number of message + feed-forward blocks (the paper used 12; depth is not scaled)"),
    "num_basis": (8, "Bessel radial basis functions"),
    "radial_hidden": (32, "hidden width of the radial MLP that modulates the SO(2) convolutions"),
    "ffn_factor": (2, "hidden channels of the node feed-forward (and, structure 'fairchem', of the messages) "
                   "= ffn_factor × width"),
    "avg_neighbors": (10.0, "messages are summed and divided by this typical neighbour count"),
    "parity": ("o3", "'o3': rotation- and reflection-equivariant; 'so3': eSCN's +m/-m mixing, rotations only"),
    "structure": ("symscale", "'symscale': node-level receiver/sender mixing, one shared radial MLP; 'fairchem': "
                  "fairchem eSCNMDBackbone's layout ([h_j, h_i] per edge, radial MLP per block; esen_blocks)"),
    "ffn": (None, "node feed-forward: 'gated', 'spectral' or 'grid' (S² grid, approximately equivariant); "
            "None = 'gated' for structure 'symscale', 'grid' for 'fairchem'"),
}


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None
                                                                                and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"model 'esen': option {name!r} must be an integer in {rng}, got {value!r}")
    return value


class MessageBlock(nn.Module):
    """Edge message ``SO2Conv(C → C, radial) → gate → SO2Conv(C → C)`` in the edge frame of
    ``L_recv(h)_i + L_send(h)_j`` (per-degree channel mixings at node level, which commute with the edge
    rotation), summed over neighbours.

    eSEN concatenates receiver and sender (2C channels) before rotating; mixing them at node level first is
    the same linear map restricted to a C-channel bottleneck and halves the per-edge rotation and first
    convolution, the dominant costs.
    """

    def __init__(self, lmax: int, mmax: int, width: int, radial_dim: int, parity: str):
        super().__init__()
        self.recv = SO3Linear(lmax, width, width, gain=0.5 ** 0.5)  # receiver + sender: unit variance
        self.send = SO3Linear(lmax, width, width, gain=0.5 ** 0.5)
        self.conv1 = SO2Convolution(lmax, mmax, width, width, n_extra=lmax * width,
                                    radial_dim=radial_dim, parity=parity)
        self.conv2 = SO2Convolution(lmax, mmax, width, width, parity=parity, gain=SILU_GAIN)  # after the gate
        rows, _ = frame_rows(lmax, mmax)
        # degree of each edge-frame row: gate_blocks needs no index, but the buffer stays in the state_dict
        # (the checkpoint layout of earlier versions, which gated with it)
        self.register_buffer("degree", degree_of_rows(lmax)[rows])
        self.lmax, self.width = lmax, width

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, rot: EdgeRotation,
                radial: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``h``: ``(n, K, C)``; ``rot``: the edges' into-frame maps; ``radial``: ``(E, R)``;
        ``weight``: ``(E, 1, 1)`` envelope / normalisation. Returns the aggregated update ``(n, K, C)``."""
        i, j = edge_index
        # edge-frame features as their m blocks (contiguous: no copies between the products)
        x = rot.into_blocks(self.recv(h).index_select(0, i) + self.send(h).index_select(0, j))
        y, gates = self.conv1(x, radial)
        y = gate_blocks(y, gates.view(-1, self.lmax, self.width))
        y, _ = self.conv2(y)
        msg = rot.back_blocks(y, weight)  # weight * back to the global frame, (E, K, C)
        return scatter_sum(msg, i, h.shape[0])


class FeedForward(nn.Module):
    """Node-wise ``SO3Linear(C → H) → gate → SO3Linear(H → C)``.

    The gates and an additive term of the hidden scalars are linear in the node's invariants: its ℓ=0
    channels and the squared norm of every ℓ > 0 channel. This is how information of degree ℓ ≥ 2 reaches
    the scalars (and so the energy) exactly, without a sphere-grid activation, which is only approximately
    equivariant.
    """

    def __init__(self, lmax: int, width: int, hidden: int):
        super().__init__()
        self.lin1 = SO3Linear(lmax, width, hidden)
        self.invariants = init_linear_(nn.Linear((lmax + 1) * width, (lmax + 1) * hidden))
        self.lin2 = SO3Linear(lmax, hidden, width, gain=SILU_GAIN)  # after the gate
        degree = degree_of_rows(lmax)
        self.register_buffer("degree", degree)
        pool = nn.functional.one_hot(degree[1:] - 1, lmax).to(torch.get_default_dtype())
        # (K-1, lmax): which degree each row's square counts to. forward sums the rows of each degree
        # directly (an einsum with this matrix was a permuted copy and a batched matmul); the buffer stays in
        # the state_dict (the checkpoint layout of earlier versions)
        self.register_buffer("pool", pool)
        self.lmax, self.hidden = lmax, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, _ = x.shape
        # splits, not slices: their backward is one concatenation, not zero-filled full-size gradients
        x0, rest = torch.split(x, [1, k - 1], dim=1)
        degrees = torch.split(rest * rest, [2 * l + 1 for l in range(1, self.lmax + 1)], dim=1)
        sq = torch.stack([d.sum(1) for d in degrees], dim=1)           # (n, lmax, C): squared norms per degree
        inv = self.invariants(torch.cat([x0.reshape(n, -1), sq.reshape(n, -1)], dim=-1))
        inv0, g = torch.split(inv, [self.hidden, self.lmax * self.hidden], dim=1)
        h = self.lin1(x) + nn.functional.pad(inv0[:, None], (0, 0, 0, k - 1))  # added to the ℓ = 0 row only
        return self.lin2(gate(h, g.reshape(n, self.lmax, self.hidden), self.degree))


class EdgeDegreeEmbedding(nn.Module):
    """Initial features of every degree: ``Σ_j D(r̂_ij) · [m=0 coefficients linear in (radial, z_i, z_j)]``.

    In the edge frame only ``m = 0`` is filled (a function of the distance and both elements); rotated back
    this is a sum of spherical harmonics ``Y_ℓ(r̂_ij)`` weighted per channel, like eSEN's edge-degree embedding.
    Without it the first block's ``m > 0`` weights would act on zeros.
    """

    def __init__(self, lmax: int, width: int, radial_dim: int):
        super().__init__()
        self.lin = init_linear_(nn.Linear(radial_dim + 2 * width, (lmax + 1) * width))
        self.lmax, self.width = lmax, width

    def forward(self, x0: torch.Tensor, edge_index: torch.Tensor, rot: EdgeRotation, radial: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        """``x0``: ``(n, C)`` element embeddings. Returns ``(n, K, C)``."""
        i, j = edge_index
        m0 = pair_linear(self.lin, x0, i, j, radial, edge_first=True)  # lin([radial, x0_i, x0_j]), per atom
        # back to the global frame (only the m=0 rows are filled) and summed over neighbours
        return rot.back_m0_sum(m0.reshape(-1, self.lmax + 1, self.width), i, x0.shape[0], weight)


class ESEN(ForceFieldModel):
    """eSEN-style equivariant force field; ``width`` = sphere channels per ``(ℓ, m)``.

    Args:
        width: channels per spherical-harmonic coefficient (the paper scanned 4…64).
        forces: ``"direct"`` (ℓ=1 force head, the study's choice) or ``"conservative"`` (−dE/dpos).
        cutoff: neighbour cutoff in Å (radial basis and envelope vanish there).
        lmax, mmax, num_layers, num_basis, radial_hidden, ffn_factor, avg_neighbors, parity, structure, ffn:
            see ``OPTIONS``.
    """

    def __init__(self, width: int, forces: str = "direct", cutoff: float = 5.0, lmax: int = 4,
                 mmax: int | None = None, num_layers: int = 4, num_basis: int = 8, radial_hidden: int = 32,
                 ffn_factor: int = 2, avg_neighbors: float = 10.0, parity: str = "o3",
                 structure: str = "symscale", ffn: str | None = None):
        super().__init__(forces=forces, cutoff=cutoff)
        width = _check_int("width", width, 1)
        lmax = _check_int("lmax", lmax, 1, 4)
        mmax = min(lmax, 2) if mmax is None else _check_int("mmax", mmax, 0, lmax)
        num_layers = _check_int("num_layers", num_layers, 1)
        num_basis = _check_int("num_basis", num_basis, 1)
        radial_hidden = _check_int("radial_hidden", radial_hidden, 1)
        ffn_factor = _check_int("ffn_factor", ffn_factor, 1)
        if isinstance(avg_neighbors, bool) or not isinstance(avg_neighbors, (int, float)) or avg_neighbors <= 0:
            raise ConfigError(f"model 'esen': option 'avg_neighbors' must be a positive number, "
                              f"got {avg_neighbors!r}")
        if parity not in PARITIES:
            raise ConfigError(f"model 'esen': option 'parity' must be one of {PARITIES}, got {parity!r}")
        if structure not in STRUCTURES:
            raise ConfigError(f"model 'esen': option 'structure' must be one of {STRUCTURES}, got {structure!r}")
        ffn = ("gated" if structure == "symscale" else "grid") if ffn is None else ffn
        if ffn not in FFN_KINDS:
            raise ConfigError(f"model 'esen': option 'ffn' must be one of {FFN_KINDS} or None, got {ffn!r}")
        self.structure, self.ffn = structure, ffn
        fair, hidden = structure == "fairchem", ffn_factor * width
        edge_dim = num_basis + 2 * radial_hidden  # structure 'fairchem': [basis, e_src(Z_j), e_tgt(Z_i)]
        self.width, self.lmax, self.mmax, self.parity = width, lmax, mmax, parity
        self.num_layers = num_layers
        self.avg_neighbors = float(avg_neighbors)
        self.embedding = ElementEmbedding(width)
        self.frame = EdgeFrame(lmax, mmax)
        self.basis = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialEnvelope(cutoff)
        if fair:  # per-edge element features; every block and the edge embedding have their own radial MLP
            self.radial = EdgeElementFeatures(radial_hidden)
            self.edge_embedding = ElementEdgeDegreeEmbedding(lmax, width, edge_dim, radial_hidden)
        else:
            self.radial = nn.Sequential(MLP([num_basis, radial_hidden, radial_hidden]),
                                        nn.SiLU())
            self.edge_embedding = EdgeDegreeEmbedding(lmax, width, radial_hidden)
        self.norms1 = nn.ModuleList([EquivariantRMSNorm(lmax, width) for _ in range(num_layers)])
        self.messages = nn.ModuleList([
            ConcatMessageBlock(lmax, mmax, width, hidden, edge_dim, radial_hidden, parity) if fair
            else MessageBlock(lmax, mmax, width, radial_hidden, parity) for _ in range(num_layers)])
        self.norms2 = nn.ModuleList([EquivariantRMSNorm(lmax, width) for _ in range(num_layers)])
        self.ffns = nn.ModuleList([FeedForward(lmax, width, hidden) if ffn == "gated"
                                   else feed_forward(ffn, lmax, width, hidden) for _ in range(num_layers)])
        self.norm_out = EquivariantRMSNorm(lmax, width)
        self.energy_head = MLP([width, hidden, hidden, 1] if fair else [width, width, 1],
                               last_bias=False)  # a constant cancels in E - E_isolated
        self.force_head = init_linear_(nn.Linear(width, 1, bias=False))
        # Row k = e3nn's ℓ=1 coefficients of the unit vector e_k; as that basis change is orthogonal, a row
        # of ℓ=1 coefficients times this matrix gives (x, y, z) whatever e3nn's ℓ=1 ordering is.
        unit = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True,
                                      normalization="norm")
        self.register_buffer("l1_to_xyz", unit.T.contiguous().to(torch.get_default_dtype()))

    def compute(self, batch: Batch, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = pos.shape[0]
        k = (self.lmax + 1) ** 2
        x0 = self.embedding(batch.numbers).to(pos.dtype)
        x = torch.cat([x0[:, None], pos.new_zeros((n, k - 1, self.width))], dim=1)
        edge_index = batch.edge_index
        if edge_index.shape[1] > 0:
            vec = edge_vectors(batch, pos)
            dist = torch.linalg.norm(vec, dim=-1)
            rot = self.frame.rotation(vec / dist.clamp(min=1e-9)[:, None])  # shared by all blocks
            radial = self.basis(dist) * RADIAL_GAIN
            radial = self.radial(radial, batch.numbers, edge_index) if self.structure == "fairchem" else \
                self.radial(radial)
            weight = (self.envelope(dist) / self.avg_neighbors)[:, None, None]
            x = x + self.edge_embedding(x0, edge_index, rot, radial, weight)
            for norm1, message, norm2, ffn in zip(self.norms1, self.messages, self.norms2, self.ffns):
                x = x + message(norm1(x), edge_index, rot, radial, weight)
                x = x + ffn(norm2(x))
        else:  # no edges: messages vanish, the node feed-forward still acts
            for norm2, ffn in zip(self.norms2, self.ffns):
                x = x + ffn(norm2(x))
        x = self.norm_out(x)
        energy = self.energy_head(x[:, 0]).squeeze(-1)
        if self.force_mode == "conservative":
            return energy, None
        forces = self.force_head(x[:, 1:4]).squeeze(-1) @ self.l1_to_xyz.to(pos.dtype)
        return energy, forces
