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
        from schedulefree import AdamWScheduleFree

        opt = AdamWScheduleFree(groups, lr=groups[0]["lr"], betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps)
        opt.train()
        return opt
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


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
    *before* clipping (``inf``/``nan`` when a gradient is not finite)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    return float(norm)
