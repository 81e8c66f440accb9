"""Optimisers, learning-rate control, gradient clipping and μP learning-rate groups.

Two optimisers:

* ``schedulefree``: :class:`schedulefree.AdamWScheduleFree` (the study's choice) with its built-in linear
  warmup over ``warmup_steps`` and no decay. The parameters the model holds during training are the
  interpolation ``y``; the weights to *evaluate and save* are the averaged sequence ``x``, which the
  optimiser swaps in on ``optimizer.eval()`` and out again on ``optimizer.train()``. The loop therefore
  calls :func:`eval_mode` before every evaluation and checkpoint, :func:`train_mode` after.
* ``adamw``: :class:`torch.optim.AdamW` with linear warmup over ``warmup_steps`` followed by a cosine
  decay in *tokens* (fraction of the token budget seen) down to ``min_lr_ratio * lr``.
  ``eval_mode`` / ``train_mode`` are no-ops for it.

μP groups (``mup: {base_width, lr}``): following the study, the learning rate is transferred across widths
as ``η(w) = η* · w_base / w`` -- but only for *hidden* matrices, whose fan-in and fan-out both grow with
width (for Adam this is the μP rule; vector-like parameters -- element embeddings, biases, norms, the
scalar read-out -- keep ``η*``, as μP prescribes for input and bias parameters). Hidden parameters are
found empirically by :func:`hidden_parameters`: the model is built at ``width`` and ``2·width`` and a
parameter is hidden when its element count grows at least 3.5× (≈ 4× = quadratic in width); 2× growth
(one width-sized axis) or none makes it a non-hidden parameter.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from schedulefree import AdamWScheduleFree
from torch import nn

HIDDEN_GROWTH = 3.5  # numel(2w) / numel(w) at or above which a parameter counts as a hidden matrix


def hidden_parameters(model: nn.Module, build_at: Callable[[int], nn.Module], width: int) -> set[str]:
    """Names of the parameters of ``model`` (built at ``width``) that are hidden matrices.

    ``build_at(w)`` must build the same architecture at width ``w``. A parameter is hidden when
    ``numel`` at ``2 * width`` is at least :data:`HIDDEN_GROWTH` times ``numel`` at ``width``.
    """
    twice = dict(build_at(2 * width).named_parameters())
    hidden = set()
    for name, p in model.named_parameters():
        q = twice.get(name)
        if q is not None and q.numel() >= HIDDEN_GROWTH * p.numel():
            hidden.add(name)
    return hidden


def parameter_groups(model: nn.Module, lr: float, hidden: set[str] | None = None,
                     base_width: int | None = None, width: int | None = None) -> list[dict]:
    """Optimiser groups: one ``"hidden"`` group at ``lr * base_width / width`` and one ``"other"`` at
    ``lr`` when ``hidden`` is given, else a single group at ``lr``. Each group records ``name`` and
    ``base_lr`` (its peak learning rate)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if hidden is None:
        return [{"params": [p for _, p in params], "lr": lr, "base_lr": lr, "name": "all"}]
    if base_width is None or width is None:
        raise ValueError("μP groups need base_width and width")
    scale = base_width / width
    groups = []
    hid = [p for n, p in params if n in hidden]
    oth = [p for n, p in params if n not in hidden]
    if hid:
        groups.append({"params": hid, "lr": lr * scale, "base_lr": lr * scale, "name": "hidden"})
    if oth:
        groups.append({"params": oth, "lr": lr, "base_lr": lr, "name": "other"})
    return groups


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` (an :class:`~symscale.train.config.OptimizerConfig`)."""
    if cfg.name == "schedulefree":
        opt = FlatScheduleFree(groups, lr=groups[0]["lr"], betas=tuple(cfg.betas), eps=cfg.eps,
                               weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps)
        opt.train()
        return opt
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


class FlatScheduleFree(AdamWScheduleFree):
    """:class:`schedulefree.AdamWScheduleFree` (same arguments, same update, same ``state_dict``) computed on
    one contiguous buffer per parameter group.

    On CPU a ``torch._foreach_*`` operation runs one kernel per tensor: the parent's 9 per step cost ~0.5
    ms for the 40–60 parameter tensors of a small model, 10–20 % of its training step. At a group's first
    step its parameters, ``z`` and ``exp_avg_sq`` are copied into three flat buffers, and each parameter's
    data and state entry becomes a view of its slice (the model's and the optimiser's ``state_dict`` still
    hold one tensor per parameter). Each step then concatenates the gradients once and runs every
    operation once on the whole buffer: the parent's elementwise arithmetic, in the same order. The
    buffers are rebuilt from the current values when the state was replaced (``load_state_dict``) or a
    parameter's data was (``.to()``, ``.data =``). A group in which a parameter has no gradient, or that
    mixes dtypes or devices, gets the parent's per-tensor update. Unlike the parent, ``p.grad`` keeps the
    raw gradient (the parent normalises it in place).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._flat: dict[int, tuple] = {}  # group index -> (state, data pointers, y, z, exp_avg_sq)

    def _buffers(self, k: int, params: list[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """Flat ``(y, z, exp_avg_sq)`` of group ``k`` (built or rebuilt here); ``None`` when not flattenable."""
        rec = self._flat.get(k)
        if rec is not None and rec[0] is self.state and rec[1] == [p.data_ptr() for p in params]:
            return rec[2:]
        ref = params[0]
        if any(p.dtype != ref.dtype or p.device != ref.device or p.layout != torch.strided for p in params):
            return None
        y = torch.empty(sum(p.numel() for p in params), dtype=ref.dtype, device=ref.device)
        z, v = torch.empty_like(y), torch.empty_like(y)
        off = 0
        for p in params:
            part, off = slice(off, off + p.numel()), off + p.numel()
            state = self.state[p]
            y[part].copy_(p.detach().reshape(-1))
            if "z" in state:
                z[part].copy_(state["z"].reshape(-1))
                v[part].copy_(state["exp_avg_sq"].reshape(-1))
            else:  # the parent's initialisation at a parameter's first step
                z[part].copy_(y[part])
                v[part].zero_()
            p.data = y[part].view(p.shape)
            state["z"], state["exp_avg_sq"] = z[part].view(p.shape), v[part].view(p.shape)
        self._flat[k] = (self.state, [p.data_ptr() for p in params], y, z, v)
        return y, z, v

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``Optimizer.zero_grad``; ``set_to_none=True`` as one plain loop (a third of the parent's time)."""
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimisation step (``AdamWScheduleFree.step``, see the class docstring)."""
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError("Optimizer was not in train mode when step is called. Please insert .train() "
                               "and .eval() calls on the optimizer. See documentation for details.")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for k, group in enumerate(self.param_groups):  # the parent's schedule, verbatim
            beta1, beta2 = group["betas"]
            step = group["k"]
            sched = (step + 1) / group["warmup_steps"] if step < group["warmup_steps"] else 1.0
            bias_correction2 = 1 - beta2 ** (step + 1)
            lr = group["scheduled_lr"] = group["lr"] * sched
            lr_max = group["lr_max"] = max(lr, group["lr_max"])
            weight = ((step + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
            weight_sum = group["weight_sum"] = group["weight_sum"] + weight
            ckp1 = weight / weight_sum if weight_sum != 0 else 0
            params = group["params"]
            grads = [p.grad for p in params]
            flat = self._buffers(k, params) if params and all(g is not None for g in grads) else None
            if flat is not None:
                y, z, v = ([t] for t in flat)
                grad = [torch._C._nn.flatten_dense_tensors(grads)]  # one copy into a new flat tensor
            else:
                y = [p for p in params if p.grad is not None]
                for p in y:
                    if "z" not in self.state[p]:
                        self.state[p]["z"] = torch.clone(p, memory_format=torch.preserve_format)
                        self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                grad = [p.grad for p in y]
                z, v = [self.state[p]["z"] for p in y], [self.state[p]["exp_avg_sq"] for p in y]
            if y:
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, grad, grad, value=1 - beta2)
                denom = torch._foreach_div(v, bias_correction2)
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_div_(grad, denom)
                if group["weight_decay"] != 0:
                    torch._foreach_add_(grad, y, alpha=group["weight_decay"])
                torch._foreach_lerp_(y, z, weight=ckp1)
                torch._foreach_add_(y, grad, alpha=lr * (beta1 * (1 - ckp1) - 1))
                torch._foreach_sub_(z, grad, alpha=lr)
            group["k"] = step + 1
        return loss


def is_schedule_free(opt: torch.optim.Optimizer) -> bool:
    return hasattr(opt, "eval") and hasattr(opt, "train") and callable(getattr(opt, "eval"))


def eval_mode(opt: torch.optim.Optimizer) -> None:
    """Swap the evaluation weights (schedule-free ``x``) into the model; no-op for other optimisers."""
    if is_schedule_free(opt):
        opt.eval()


def train_mode(opt: torch.optim.Optimizer) -> None:
    """Swap the training weights (schedule-free ``y``) back into the model; no-op for other optimisers."""
    if is_schedule_free(opt):
        opt.train()


def cosine_factor(step: int, fraction: float, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier of ``adamw``: linear warmup over ``warmup_steps`` optimiser steps, then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * fraction)) / 2`` with ``fraction`` = tokens / budget."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    frac = min(max(fraction, 0.0), 1.0)
    return warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's ``lr`` to ``base_lr * factor`` (used by ``adamw`` before each step)."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float | None) -> float:
    """Clip the global gradient L2 norm to ``max_norm`` (``None`` = measure only); return the norm
    *before* clipping (``inf``/``nan`` when a gradient is not finite).

    ``torch.nn.utils.clip_grad_norm_``'s scaling (gradients times ``min(max_norm / (norm + 1e-6), 1)``),
    with the norm taken of all gradients concatenated (one copy and one reduction instead of a norm per
    tensor: equal to rounding), and the gradients multiplied only when the factor is below 1 (or not a
    number): multiplying by exactly 1 changes nothing and costs one kernel per parameter tensor.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    try:  # dense gradients on one device (different dtypes are promoted)
        norm = torch.linalg.vector_norm(torch._C._nn.flatten_dense_tensors(grads))
    except RuntimeError:  # sparse or on several devices: torch's per-tensor norms
        norm = torch.nn.utils.get_total_norm(grads)
    value = float(norm)
    # the factor is exactly 1 (nothing to do) unless the norm comes within float32 rounding of max_norm
    if max_norm is not None and not value + 1e-6 < max_norm * (1.0 - 1e-5):
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if not float(coef) >= 1.0:  # also when the norm is not finite (coef 0 or nan), as clip_grad_norm_
            torch._foreach_mul_(grads, coef)
    return value
