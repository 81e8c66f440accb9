"""A tiny learned element-pair potential shared by the calculator and MD tests."""

from __future__ import annotations

import torch

from symscale.models.layers import MLP, BesselBasis, ElementEmbedding, ForceFieldModel, scatter_sum

CUTOFF = 4.0


class PairModel(ForceFieldModel):
    """Learned element-pair potential: smooth and conservative by default, or with a (non-symmetric)
    direct head on the raw edge vectors."""

    def __init__(self, width: int = 8, forces: str = "conservative"):
        super().__init__(forces=forces, cutoff=CUTOFF)
        self.width = width
        self.embed = ElementEmbedding(width)
        self.rbf = BesselBasis(CUTOFF, 6)
        self.mlp = MLP([2 * width + 6, width, 1])
        self.head = MLP([3 + width, 3])

    def compute(self, batch, pos):
        vec = batch.edge_vectors(pos)
        d = torch.linalg.vector_norm(vec, dim=-1)
        i, j = batch.edge_index
        z = self.embed(batch.numbers)
        env = self.rbf.envelope(d)
        e = self.mlp(torch.cat([z[i] + z[j], z[i] * z[j], self.rbf(d)], -1)).squeeze(-1) * env
        f = scatter_sum(self.head(torch.cat([vec, z[j]], -1)) * env.unsqueeze(-1), i, pos.shape[0])
        return scatter_sum(e, i, pos.shape[0]), f
