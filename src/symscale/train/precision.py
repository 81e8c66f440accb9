"""Numerical precision of a training run: weight dtype, bfloat16 autocast and TF32 matmuls.

A run config's ``dtype`` and ``tf32`` resolve, on the run's device, to a :class:`Precision`:

==========  =============  ===========================================  ==========================
``dtype``   weights, Adam  forward + loss                               ``tf32: true``
==========  =============  ===========================================  ==========================
float32     float32        float32                                      TF32 matmuls (CUDA only)
bfloat16    float32        ``torch.autocast(device.type, bfloat16)``    TF32 for the float32 ops
float64     float64        float64                                      refused by the config
==========  =============  ===========================================  ==========================

bfloat16 is mixed precision with float32 master weights: the optimiser, the gradients and the weights stay
float32, and the model's outputs are cast back to float32 before the loss (:meth:`Precision.outputs`), so
energies and forces, losses and metrics are float32 whatever ran inside. Autocast works on the CPU as well
as on CUDA. TF32 (CUDA matmuls and cuDNN convolutions with 10-bit mantissas, on Ampere and later) is in
effect only on a CUDA device; on the CPU ``tf32`` changes nothing and is recorded as ``false``.

FLOP accounting does not depend on precision: κ and the measured step FLOPs count operations, not bits, and
are measured without autocast.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class Precision:
    """How a run computes (see the module docstring).

    Attributes:
        dtype: the config's ``dtype`` (``float32``, ``float64`` or ``bfloat16``).
        weights: dtype of the weights, the optimiser state and the batches.
        autocast: the autocast dtype (``torch.bfloat16``) or ``None``.
        tf32: whether TF32 matmuls are in effect (requested and on CUDA).
        device_type: ``cpu`` or ``cuda`` (where autocast applies).
    """

    dtype: str
    weights: torch.dtype
    autocast: torch.dtype | None
    tf32: bool
    device_type: str

    def record(self) -> dict:
        """What ``metrics.jsonl`` and ``summary.json`` record: ``{"precision": dtype, "tf32": bool}``."""
        return {"precision": self.dtype, "tf32": self.tf32}

    def autocast_context(self):
        """The context the forward pass and the loss run in (autocast, or nothing)."""
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast)

    def outputs(self, pred: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model outputs in the weights' dtype (float32 after a bfloat16 autocast forward)."""
        if self.autocast is None:
            return pred
        return {k: v.to(self.weights) if v.is_floating_point() else v for k, v in pred.items()}

    @contextmanager
    def matmul_settings(self) -> Iterator[None]:
        """Set CUDA's float32 matmul / cuDNN convolution precision for the block (``tf32`` or ``ieee``),
        then restore the process's previous settings. Does nothing off CUDA."""
        if self.device_type != "cuda":
            yield
            return
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        before = (matmul.fp32_precision, conv.fp32_precision)
        mode = "tf32" if self.tf32 else "ieee"
        try:
            matmul.fp32_precision = mode
            conv.fp32_precision = mode
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before


def resolve_precision(dtype: str, tf32: bool, device: torch.device) -> Precision:
    """The :class:`Precision` of a run with config ``dtype`` / ``tf32`` on ``device``."""
    weights = torch.float64 if dtype == "float64" else torch.float32
    autocast = torch.bfloat16 if dtype == "bfloat16" else None
    return Precision(dtype=dtype, weights=weights, autocast=autocast,
                     tf32=bool(tf32) and device.type == "cuda" and dtype != "float64", device_type=device.type)
