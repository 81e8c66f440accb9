"""Training time per atom of candidate widths, for a budget in hours: a timed probe, calibrated on the runs.

A throughput law fitted to a study's runs (:mod:`symscale.laws.throughput`) only interpolates: small models
are bound by per-op overhead, so their atoms/s barely move with N, and any smooth law in N extrapolated
from them to 16–64× wider models misses by several-fold (paper_mini2's pilot: gemnet's throughput was
flat from 14k to 79k parameters, then 2.3× lower at 965k). The planner therefore times what it proposes:

1. every width of the option grid and of the finished runs trains :data:`PROBE_STEPS` steps (forward, the
   default loss, backward; after a warm-up step) on the fixed reference batch
   (:func:`symscale.models.flops.reference_batch`): ``probe(N)`` seconds per atom;
2. calibration: the median over the group's finished runs of measured seconds per atom (``train_time_s``
   / tokens at their last checkpoint) over ``probe(N)`` at their N -- it carries what the probe leaves
   out (the optimiser step, batch building, the real data's neighbour counts, the machine's load);
3. a run's worker time beyond its training time (``wall_s - train_time_s``: starting the run, reading the
   data, its evaluations) is a fixed **overhead** per run, the median over the group's finished runs: 3-6 s
   per run on paper_mini2, where runs took 1.12-1.26x their training time (median per family), which a cost
   of training time alone left out;
4. the cost of ``T`` atoms at a probed width is ``copies × (T × calibration × probe(N) + overhead)``.

Probing a width takes a few of its training steps (seconds for the widest).
"""

from __future__ import annotations

import time

import numpy as np

#: timed training steps per probed width (after one warm-up step)
PROBE_STEPS = 3


def probe(model, batch, steps: int = PROBE_STEPS) -> float:
    """Seconds per atom of training steps (forward, the default loss, backward) of ``model`` on ``batch``."""
    from ..models.flops import default_loss

    b = batch.replace(pos=batch.pos * 1.0)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        default_loss(model(b), b).backward()
        if i:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return float(np.median(times)) / batch.tokens


def probe_widths(family: str, widths: list[int], options: dict, batch) -> dict[int, tuple[int, float]]:
    """{width: (N, seconds per atom)} of the widths ``family`` builds with ``options`` (others left out)."""
    from ..errors import SymscaleError
    from ..models import build
    from ..models.registry import count_parameters

    out = {}
    for w in widths:
        try:
            model = build(family, w, **options)
        except (SymscaleError, TypeError, ValueError, RuntimeError):
            continue
        out[w] = (count_parameters(model), probe(model, batch))
    return out


class ProbedCost:
    """``cost(N, T)`` in hours from probed widths calibrated on the measured runs (module docstring).

    Args:
        probed: {width: (N, probe seconds per atom)}, every width an option or a finished run uses.
        runs: the group's ``throughput["runs"]`` entries (``N``, ``D``, ``seconds``).
        copies: runs per width (seeds).
        overhead: worker seconds per run beyond its training (:func:`run_overhead`).
    """

    def __init__(self, probed: dict[int, tuple[int, float]], runs: list[dict], copies: int, overhead: float = 0.0):
        pts = sorted({(float(n), s) for n, s in probed.values()})
        self.logN = np.log([p[0] for p in pts])
        self.logs = np.log([p[1] for p in pts])
        ratios = [r["seconds"] / r["D"] / self.per_atom(r["N"]) for r in runs if r["D"] > 0 and r["seconds"] > 0]
        if not ratios:
            raise ValueError("no finished run with training time to calibrate the probe on")
        self.calibration = float(np.median(ratios))
        self.copies = copies
        self.overhead = float(overhead)

    def per_atom(self, N: float) -> float:
        """Probe seconds per atom at ``N`` (log-log interpolation between probed sizes, constant beyond)."""
        return float(np.exp(np.interp(np.log(N), self.logN, self.logs)))

    def __call__(self, N: float, T: float) -> float:
        return self.copies * (T * self.calibration * self.per_atom(N) + self.overhead) / 3600.0


def run_overhead(runs: list[dict]) -> float:
    """Median worker seconds per run beyond training (``wall_s - train_time_s``, at least 0) of store rows
    ``runs`` that have both; 0 without any."""
    extra = [max(float(r["wall_s"]) - float(r["train_time_s"]), 0.0) for r in runs
             if r.get("wall_s") and r.get("train_time_s")]
    return float(np.median(extra)) if extra else 0.0
