"""κ and training-step FLOPs measured with FlopCounterMode."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from symscale.models import build, count_parameters
from symscale.models.flops import (kappa_table, measure_kappa, reference_batch, training_step_flops)
from symscale.models.layers import ElementEmbedding, ForceFieldModel


@pytest.fixture(scope="module")
def ref():
    return reference_batch()


class LinearModel(ForceFieldModel):
    """Embedding (no FLOPs) then one bias-free nn.Linear per atom: 2 * d_in * d_out FLOPs a row."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.width = d_in
        self.embedding = ElementEmbedding(d_in)
        self.linear = nn.Linear(d_in, d_out, bias=False)

    def compute(self, batch, pos):
        y = self.linear(self.embedding(batch.numbers).to(pos.dtype))
        return y[:, 0], y[:, 1:4]


def test_reference_batch_is_fixed_and_realistic(ref):
    again = reference_batch()
    assert torch.equal(ref.pos, again.pos) and torch.equal(ref.edge_index, again.edge_index)
    assert ref.n_structures == 6 and 100 < ref.tokens < 140
    assert 8 < ref.n_edges / ref.tokens < 30  # neighbours per atom within 5 Å


def test_linear_model_counts_exactly_two_in_out_per_row(ref):
    d_in, d_out = 24, 5
    model = LinearModel(d_in, d_out)
    k = measure_kappa(model, ref)
    rows = ref.tokens + int(torch.unique(ref.numbers).numel())  # atoms + isolated-atom reference pass
    print(f"linear model forward FLOPs {k['forward_flops']} for {rows} rows")
    assert k["forward_flops"] == 2 * d_in * d_out * rows
    assert k["params"] == count_parameters(model) and k["atoms"] == ref.tokens
    assert k["kappa"] == pytest.approx(k["forward_flops"] / (k["params"] * ref.tokens))


@pytest.mark.parametrize("family", ["mpnn", "egnn"])
def test_kappa_positive_and_step_about_three_forward(family, ref):
    torch.manual_seed(0)
    model = build(family, 32)
    before = [p.detach().clone() for p in model.parameters()]
    k = measure_kappa(model, ref)
    step = training_step_flops(model, ref)
    print(f"{family}: kappa {k['kappa']:.2f} (incl. elementwise {k['kappa_elementwise']:.2f}), "
          f"step/forward {step['ratio']:.2f}")
    assert k["kappa"] > 0 and k["kappa_elementwise"] > k["kappa"]
    assert step["forward_flops"] == k["forward_flops"]  # train/eval mode does not change a direct model
    assert 2.0 < step["ratio"] < 4.0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_batch_follows_model_dtype(ref):
    torch.manual_seed(0)
    model = build("egnn", 16)
    k32 = measure_kappa(model, ref)
    k64 = measure_kappa(model.double(), ref)  # the float32 reference batch is cast to float64
    assert k64["forward_flops"] == k32["forward_flops"]
    assert training_step_flops(model, ref)["forward_flops"] == k32["forward_flops"]


def test_mpnn_kappa_close_to_two(ref):
    """Node-level matmuls dominate the MPNN, so κ is slightly above 2 (the study: 2.33)."""
    k = measure_kappa(build("mpnn", 128), ref)
    assert 2.0 < k["kappa"] < 3.5


def test_conservative_step_costs_more_than_direct(ref):
    torch.manual_seed(0)
    direct = training_step_flops(build("mpnn", 16), ref)
    torch.manual_seed(0)
    cons = training_step_flops(build("mpnn", 16, forces="conservative"), ref)
    assert cons["forward_flops"] > direct["forward_flops"] and cons["flops"] > direct["flops"]


def test_custom_loss_fn_is_used(ref):
    model = build("mpnn", 16)
    energy_only = training_step_flops(model, ref, loss_fn=lambda out, b: out["energy"].sum())
    full = training_step_flops(model, ref)
    assert energy_only["flops"] < full["flops"]  # the force head gets no backward pass


def test_kappa_table_prints_markdown_rows():
    out = io.StringIO()
    rows = kappa_table(["mpnn"], widths={"mpnn": (8, 16)}, stream=out)
    text = out.getvalue()
    assert [r["width"] for r in rows] == [8, 16]
    assert text.count("| mpnn |") == 2 and "neighbours/atom" in text
