"""Speed of the training step in this process: the C allocator on CPU, and ``torch.compile`` decided per run.

**Allocator** (:func:`configure_cpu_allocator`). glibc's ``malloc`` serves blocks above its mmap threshold
(128 KiB, raised adaptively) with fresh ``mmap`` pages and returns freed memory at the top of the heap to the
system (trim threshold): every step of a CPU training run then allocates and frees the same few-megabyte
activations and pays a page fault per 4 KiB page, in system time (measured: 2,600–6,600 minor faults and
3–19 ms of system time per step of a paper_mini model, 5–25 % of the step). Raising both thresholds keeps
freed memory in the process for reuse: same results, no faults after the first step (1.0–1.33× faster steps,
``docs/benchmarks.md``, "CPU speed-ups (issue 14)"). The process keeps its peak heap instead of returning it.

**torch.compile** (:func:`compile_decision`, :func:`compiled`). Fusing the remaining elementwise work of a
direct-force model saves up to a quarter of a CPU step (mpnn width 128: 17.6 → 13.3 ms, esen ℓ ≤ 4 width
16: 74.9 → 57.8 ms; gemnet width 96 none: 0.94×, graph breaks at its data-dependent term counts), but
compiling takes 23–63 s on the 2-core machine (5–7 s when Inductor's on-disk cache already holds the
graphs), once per process (dynamic shapes: batches of any size share one graph; evaluation in ``no_grad``
adds one more). It pays only when the run is long: compile when the projected saving exceeds
``payback × compile_s`` (a paper_mini run of ~600 steps saves 3–10 s: never). Conservative-force models are
never compiled (``-∇E`` needs a double backward, which ``torch.compile`` cannot compile).
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import warnings
from dataclasses import dataclass

import torch

#: glibc ``mallopt`` parameters and the values set: 32 MiB is glibc's largest mmap threshold on 64-bit
#: systems (larger blocks are still mmapped), 1 GiB of free heap top before memory is returned.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024

_configured: bool | None = None


def configure_cpu_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns True when both were set (Linux with glibc), False elsewhere (nothing changed). Idempotent.
    """
    global _configured
    if _configured is not None:
        return _configured
    _configured = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _configured = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                      TRIM_THRESHOLD))
    return _configured


@dataclass(frozen=True)
class CompileDecision:
    """Whether to compile, and why (recorded in the run's summary)."""

    compile: bool
    reason: str


def compile_decision(setting: bool | str, force_mode: str, steps: int, eager_step_s: float,
                     compile_s: float = 120.0, speedup: float = 1.15, payback: float = 2.0) -> CompileDecision:
    """Decide ``torch.compile`` for one run.

    Args:
        setting: ``True`` / ``False`` (the user decided) or ``"auto"``.
        force_mode: the model's ``"direct"`` or ``"conservative"``; conservative models are never compiled.
        steps: training steps the run will take (budget / atoms per batch).
        eager_step_s: measured seconds of one eager training step (after warm-up).
        compile_s: expected compile time (measured 23–63 s on the 2-core machine, up to 292 s earlier).
        speedup: expected eager / compiled step time (measured 0.94–1.32 on CPU after issue 14's speed-ups).
        payback: the saving must exceed ``payback ×`` the compile time (margin for the estimates).
    """
    if force_mode != "direct":
        return CompileDecision(False, "conservative forces need a double backward, which torch.compile cannot "
                                      "compile")
    if isinstance(setting, bool):
        return CompileDecision(setting, "set in the configuration")
    if setting != "auto":
        raise ValueError(f"compile setting must be true, false or 'auto', got {setting!r}")
    if speedup <= 1.0:
        return CompileDecision(False, f"expected speed-up {speedup:g} <= 1")
    saving = steps * eager_step_s * (1.0 - 1.0 / speedup)
    need = payback * compile_s
    verdict = "exceeds" if saving > need else "is below"
    return CompileDecision(saving > need, f"projected saving {saving:.0f} s ({steps} steps × {eager_step_s:.3g} s, "
                                          f"{speedup:g}× faster) {verdict} {payback:g} × the {compile_s:.0f} s "
                                          f"compile time")


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model, dynamic=True)``: one graph for every batch size, cached for the process (training
    and evaluation share it; evaluation under ``no_grad`` compiles once more)."""
    return torch.compile(model, dynamic=True)


class CompileGate:
    """The training forward of one run, eager or compiled as the ``compile`` setting decides.

    ``True`` / ``False`` decide at once; ``"auto"`` times ``timed`` eager steps after ``warmup`` and then
    applies :func:`compile_decision` to their median and the steps left. :attr:`record` (the run's
    ``summary.json`` ``"compile"``) holds the setting, whether the forward is compiled, and why; the same
    dict is updated in place when the decision is made. Evaluation keeps the eager module (same weights).
    """

    def __init__(self, setting: bool | str, force_mode: str, net: torch.nn.Module, warmup: int = 1,
                 timed: int = 5, **decision_kwargs):
        self.net, self.setting, self.force_mode = net, setting, force_mode
        self.warmup, self.timed, self.kwargs = warmup, timed, decision_kwargs
        self._times: list[float] = []
        self._seen = 0
        self._fwd = net
        self.record: dict = {"setting": setting, "compiled": False, "reason": "pending: timing eager steps"}
        if setting is False or setting is True or force_mode != "direct":
            self._decide(compile_decision(setting, force_mode, steps=0, eager_step_s=0.0))

    @property
    def pending(self) -> bool:
        return self.record["reason"].startswith("pending")

    def forward(self, batch):
        return self._fwd(batch)

    def observe(self, step_s: float, remaining_steps: float) -> None:
        """Feed the wall time of one finished training step and the number of steps still to run."""
        if not self.pending:
            return
        self._seen += 1
        if remaining_steps < 1:  # the run ends before the timing does: nothing left to speed up
            self._decide(CompileDecision(False, f"the run ended after {self._seen} step(s), before "
                                                f"{self.warmup + self.timed} were timed"))
            return
        if self._seen > self.warmup:
            self._times.append(step_s)
        if len(self._times) >= self.timed:
            self._decide(compile_decision(self.setting, self.force_mode, steps=int(remaining_steps),
                                          eager_step_s=statistics.median(self._times), **self.kwargs))

    def _decide(self, decision: CompileDecision) -> None:
        if decision.compile:
            self._fwd = compiled(self.net)
        elif self.setting is True:
            warnings.warn(f"compile: true not applied: {decision.reason}", stacklevel=3)
        self.record.update(compiled=decision.compile, reason=decision.reason)
