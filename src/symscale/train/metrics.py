"""Evaluation schedule, validation metrics and the run directory's ``metrics.jsonl`` / ``summary.json``.

Keys are those of ``docs/contracts.md``. ``metrics.jsonl`` has one JSON object per evaluation, appended
and flushed as it happens; ``summary.json`` is rewritten atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..atomic import write_text
from ..data.batch import Batch
from .loss import ErrorSums, LossFunction

METRIC_KEYS = ("step", "tokens", "params", "kappa", "compute", "flops_measured", "train_time_s",
               "energy_mae_per_atom", "force_mae", "force_l2", "loss")
#: How the run computed (:meth:`symscale.train.precision.Precision.record`): the config ``dtype`` and
#: whether TF32 matmuls were in effect; in every ``metrics.jsonl`` record and in ``summary.json``.
PRECISION_KEYS = ("precision", "tf32")
SUMMARY_KEYS = ("run_id", "model", "width", "params", "kappa", "status", "reason", "tokens", "steps")


def evaluation_points(budget: int, points: int, first: int) -> list[int]:
    """``points`` token counts log-spaced from ``first`` to ``budget`` (inclusive), rounded up and
    de-duplicated; the budget itself is always the last one."""
    budget = int(budget)
    first = int(min(max(1, first), budget))
    if points <= 1 or first >= budget:
        return [budget]
    grid = np.ceil(np.geomspace(first, budget, points)).astype(np.int64)
    out = sorted(set(int(x) for x in grid) | {budget})
    return [x for x in out if x <= budget]


class EvalSchedule:
    """Decides after which step to evaluate: the first step at which ``tokens`` reaches the next point.

    Several points crossed by one step give a single evaluation, so evaluated token counts strictly
    increase.
    """

    def __init__(self, points: list[int]):
        self.points = list(points)

    def due(self, tokens: int) -> bool:
        return any(tokens >= p for p in self.points)

    def consume(self, tokens: int) -> None:
        self.points = [p for p in self.points if p > tokens]


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: LossFunction,
             device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
             autocast: torch.dtype | None = None) -> dict[str, float]:
    """Validation metrics of ``model`` over ``batches`` (see :class:`~symscale.train.loss.ErrorSums`).

    The model is put in eval mode for the call and restored afterwards. Conservative-force models need
    autograd for forces, so gradients are enabled inside the model's own forward.
    """
    was_training = model.training
    model.eval()
    sums = ErrorSums(loss_fn)
    try:
        for b in batches:
            b = b.to(device, dtype)
            with _autocast(device, autocast):
                pred = model(b)
            pred = {k: v.float() if autocast is not None else v for k, v in pred.items()}
            sums.add(pred, b)
    finally:
        model.train(was_training)
    return sums.result()


def _autocast(device, dtype):
    dev = torch.device(device)
    if dtype is None:
        return torch.autocast(dev.type, enabled=False)
    return torch.autocast(dev.type, dtype=dtype)


class MetricsLog:
    """Append-only ``metrics.jsonl`` with one record per evaluation."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if line:
                rows.append(json.loads(line))
        return rows

    def append(self, record: dict[str, Any]) -> None:
        missing = [k for k in METRIC_KEYS + PRECISION_KEYS if k not in record]
        if missing:
            raise KeyError(f"metrics record lacks {missing}")
        with open(self.path, "a") as fh:
            fh.write(json.dumps(_plain(record)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_after(self, step: int) -> list[dict[str, Any]]:
        """Keep only records with ``step <= step`` (used on resume: a record written after the last
        checkpoint would otherwise be repeated); rewrite atomically; return the kept records."""
        kept = [r for r in self.read() if int(r["step"]) <= step]
        write_text(self.path, "".join(json.dumps(_plain(r)) + "\n" for r in kept))
        return kept


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(_plain(data), indent=2) + "\n")


def _plain(x: Any) -> Any:
    """JSON-safe copy: numpy / torch scalars to Python numbers, non-finite floats to strings."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def compute_multiplier(symmetry_cfg, n_frames: int = 1) -> float:
    """Factor on ``3 κ N D`` for the extra passes symmetry costs (see ``docs/training.md``).

    * symmetry loss with ``M`` rotations: every step also runs forward + backward on ``M`` rotated copies,
      so ``1 + M``;
    * frame averaging over ``G`` frames: every forward and backward (training and evaluation) runs the
      inner model on ``G`` copies, so ``G`` -- and ``G (1 + M)`` with both;
    * augmentation is free (one rotation per structure, no extra pass): ``1``.
    """
    mult = float(n_frames)
    if symmetry_cfg.loss is not None:
        mult *= 1 + symmetry_cfg.loss.rotations
    return mult


def variant_tag(symmetry_cfg, subset=None, epochs=None) -> str | None:
    """A short tag naming how symmetry / data reuse differ from a plain single-epoch run (the laws
    group runs by ``model`` plus this tag), e.g. ``"aug"``, ``"symloss5"``, ``"fa"``, ``"subset0.01x100"``."""
    parts = []
    if symmetry_cfg.augment:
        parts.append("aug")
    if symmetry_cfg.loss is not None:
        parts.append(f"symloss{symmetry_cfg.loss.rotations}")
    if symmetry_cfg.frame_averaging:
        parts.append("fa")
    if subset is not None or (epochs is not None and epochs > 1):
        parts.append(f"subset{subset if subset is not None else 'all'}x{epochs if epochs is not None else 1:g}")
    return "+".join(parts) or None


def run_summary(cfg, setup, counters: dict, status: str, reason: str | None, last: dict | None = None) -> dict:
    """The ``summary.json`` of a run: its config ``cfg`` (:class:`~symscale.train.config.RunConfig`), what
    :func:`symscale.train.run.prepare` built (``setup``), the step / token / time ``counters``, its
    ``status`` and ``reason``, and ``last``, the last evaluation record with a finite loss (``final``)."""
    out = {"run_id": cfg.run_id(), "model": cfg.model.family, "width": cfg.model.width, "params": setup.params,
           "kappa": setup.kappa, "status": status, "reason": reason, "tokens": int(counters["tokens"]),
           "steps": int(counters["step"]),
           "variant": variant_tag(cfg.symmetry, cfg.data.subset, cfg.epochs), "budget_tokens": int(setup.budget),
           "compute_multiplier": setup.multiplier,
           "train_time_s": float(counters["train_time_s"]), "device": str(setup.device), "dtype": cfg.dtype,
           **setup.precision.record(), "loader_workers": cfg.loader_workers,
           "lr_groups": {g["name"]: {"lr": g["base_lr"], "tensors": len(g["params"])}
                         for g in setup.optimizer.param_groups}}
    if cfg.group:
        out["group"] = cfg.group
    if getattr(setup, "compile", None) is not None:
        out["compile"] = setup.compile
    if last is not None:
        out["final"] = {k: last[k] for k in ("step", "tokens", "compute", "loss", "energy_mae_per_atom",
                                             "force_mae", "force_l2")}
    return out
