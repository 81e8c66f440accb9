"""The training step's optimiser pieces against the library code they replace: ``FlatScheduleFree`` against
``schedulefree.AdamWScheduleFree``, ``clip_gradients`` against ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import copy

import pytest
import torch
from schedulefree import AdamWScheduleFree

from symscale.data import Batch
from symscale.models import build
from symscale.models.flops import default_loss, reference_atoms
from symscale.train.optim import FlatScheduleFree, clip_gradients, hidden_parameters, parameter_groups


def _model_and_groups():
    torch.manual_seed(0)
    model = build("mpnn", 4, num_layers=2)
    hidden = hidden_parameters(model, lambda w: build("mpnn", w, num_layers=2), 4)
    return model, hidden


def _groups(model, hidden):
    return parameter_groups(model, 1e-2, hidden, base_width=2, width=4)  # two groups, two learning rates


def test_flat_schedulefree_matches_the_per_tensor_optimizer():
    batch = Batch.from_atoms(reference_atoms()[:2], cutoff=5.0, dtype=torch.float32)
    ref_model, hidden = _model_and_groups()
    model = copy.deepcopy(ref_model)
    kw = dict(lr=1e-2, warmup_steps=3, weight_decay=0.01)
    ref, opt = AdamWScheduleFree(_groups(ref_model, hidden), **kw), FlatScheduleFree(_groups(model, hidden), **kw)
    ref.train()
    opt.train()
    bias = dict(model.named_parameters())["layers.1.update.0.bias"]
    for step in range(10):
        for m, o in ((ref_model, ref), (model, opt)):
            o.zero_grad(set_to_none=True)
            default_loss(m(batch), batch).backward()
            if step in (3, 4):  # a parameter without a gradient: the per-tensor path of that group
                dict(m.named_parameters())["layers.1.update.0.bias"].grad = None
            o.step()
        if step == 6:  # evaluation weights, then a state_dict round trip (rebuilds the flat buffers)
            ref.eval()
            opt.eval()
            for a, b in zip(ref_model.parameters(), model.parameters()):
                torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
            ref.train()
            opt.train()
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert bias.grad is not None and sorted(opt._flat) == [0, 1]  # both groups ran on flat buffers
    for a, b in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[b]["z"], ref.state[a]["z"], rtol=1e-6, atol=1e-7)
    # the same checkpoint layout: per-parameter tensors in the model and the optimiser state
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in ref_model.state_dict().items()}
    mine, theirs = opt.state_dict(), ref.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert {k: {n: t.shape for n, t in s.items()} for k, s in mine["state"].items()} == \
        {k: {n: t.shape for n, t in s.items()} for k, s in theirs["state"].items()}


@pytest.mark.parametrize("scale, max_norm", [(0.02, 10.0), (1.0, 10.0), (1.0, None), (float("nan"), 10.0)])
def test_clip_gradients_matches_clip_grad_norm(scale, max_norm):
    model, _ = _model_and_groups()
    params = list(model.parameters())
    torch.manual_seed(1)
    grads = [torch.randn_like(p) * scale for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    want = float(torch.nn.utils.clip_grad_norm_(params, float("inf") if max_norm is None else max_norm))
    clipped = [p.grad.clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    got = clip_gradients(iter(params), max_norm)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), equal_nan=True)
    for p, c in zip(params, clipped):
        torch.testing.assert_close(p.grad, c, equal_nan=True)
    if scale == 1.0 and max_norm is not None:
        assert want > max_norm and not torch.equal(clipped[0], grads[0])  # the case that clips
