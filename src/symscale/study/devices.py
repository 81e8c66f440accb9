"""Which GPU each local study worker trains on (``symscale study --gpus ... --runs-per-gpu ...``).

The local executor pins every worker process to one GPU by starting it with ``CUDA_VISIBLE_DEVICES`` set to
that GPU alone, so the run inside sees a single device and trains on ``cuda:0`` (its config keeps
``device: cuda`` or ``auto``; the run id does not depend on the GPU).

* :func:`visible_gpus` -- the GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: the driver's
  own ``CUDA_VISIBLE_DEVICES`` list when it has one (indices or ``GPU-``/``MIG-`` UUIDs, cut to the devices
  CUDA reports), else ``0 .. G-1`` for the ``G`` devices of ``torch.cuda.device_count()``;
* :func:`select_gpus` -- ``--gpus N`` (the first ``N`` of them) or ``--gpus i,j`` (those, by index into the
  visible list, e.g. ``--gpus 1,3`` under ``CUDA_VISIBLE_DEVICES=4,5,6,7`` trains on GPUs 5 and 7);
* :func:`plan_gpus` -- the study's GPU plan, ``None`` for CPU runs (which keep their behaviour: no
  variable is set and ``--workers`` defaults to the CPU cores); one-line :class:`ConfigError` for a bad
  option;
* :class:`GpuPool` -- hands each starting run the GPU with the fewest runs on it;
* :func:`child_env` -- the environment a worker process is started with.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

from ..errors import ConfigError

ENV = "CUDA_VISIBLE_DEVICES"


def cuda_device_count() -> int:
    """CUDA devices this process can see (0 without CUDA); does not initialise a CUDA context."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def visible_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may use, each as the ``CUDA_VISIBLE_DEVICES`` entry that selects it.

    Args:
        environ: the environment to read (default ``os.environ``).
        count: devices CUDA reports under that environment (default :func:`cuda_device_count`); a listed
            entry beyond it (CUDA ignores entries after an invalid one) is dropped.
    """
    environ = os.environ if environ is None else environ
    count = cuda_device_count() if count is None else int(count)
    listed = environ.get(ENV)
    if listed is None:
        return [str(i) for i in range(count)]
    ids: list[str] = []
    for entry in listed.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):  # "" or "-1": no device from here on
            break
        ids.append(entry)
    return ids[:count]


def select_gpus(spec: str | None, visible: list[str]) -> list[str]:
    """The GPUs ``--gpus spec`` names among ``visible`` (all of them for ``None``).

    ``spec`` is a count (``"2"``: the first two) or a comma-separated list of indices into ``visible``
    (``"0,2"``, or ``"1,"`` for GPU 1 alone).

    Raises:
        ConfigError: a count or an index outside what ``visible`` holds, 0 or a negative number, a repeated
            index, or text that is neither.
    """
    if spec is None:
        return list(visible)
    text = str(spec).strip()
    have = f"this machine has {len(visible)} GPU{'' if len(visible) == 1 else 's'}"
    if "," not in text:
        try:
            n = int(text)
        except ValueError:
            raise ConfigError(f"--gpus: {spec!r} is neither a count nor a comma-separated list of GPU "
                              f"indices") from None
        if n < 1:
            raise ConfigError(f"--gpus: must be at least 1 (got {n}); CPU runs need no --gpus")
        if n > len(visible):
            raise ConfigError(f"--gpus: {n} GPUs requested but {have}")
        return list(visible[:n])
    chosen: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part and text.endswith(","):
            continue
        try:
            k = int(part)
        except ValueError:
            raise ConfigError(f"--gpus: {spec!r} is neither a count nor a comma-separated list of GPU "
                              f"indices") from None
        if k < 0:
            raise ConfigError(f"--gpus: GPU index {k} is negative")
        if k >= len(visible):
            raise ConfigError(f"--gpus: GPU {k} requested but {have}"
                              + (f" (0..{len(visible) - 1})" if visible else ""))
        if visible[k] in chosen:
            raise ConfigError(f"--gpus: GPU {k} is listed twice")
        chosen.append(visible[k])
    if not chosen:
        raise ConfigError(f"--gpus: {spec!r} names no GPU")
    return chosen


@dataclass(frozen=True)
class GpuPlan:
    """The GPUs a local study trains on (``CUDA_VISIBLE_DEVICES`` entries) and the runs each holds at once."""

    gpus: tuple[str, ...]
    runs_per_gpu: int = 1

    @property
    def slots(self) -> int:
        """Runs in flight by default: GPUs × runs per GPU."""
        return len(self.gpus) * self.runs_per_gpu


def plan_gpus(device: str, gpus: str | None = None, runs_per_gpu: int | None = None,
              environ: Mapping[str, str] | None = None, count: int | None = None) -> GpuPlan | None:
    """The GPU plan of a local study whose runs have ``device`` (``cpu``, ``cuda`` or ``auto``).

    ``None`` when the runs train on the CPU: ``device: cpu``, or ``auto`` on a machine without a GPU (a
    ``cuda`` study there is refused by the executor's device check). ``environ`` and ``count`` as in
    :func:`visible_gpus`.

    Raises:
        ConfigError: ``--gpus`` or ``--runs-per-gpu`` with ``device: cpu`` or on a machine without a GPU,
            ``--runs-per-gpu`` below 1, or a bad ``--gpus`` (see :func:`select_gpus`).
    """
    if runs_per_gpu is not None and runs_per_gpu < 1:
        raise ConfigError(f"--runs-per-gpu: must be at least 1 (got {runs_per_gpu})")
    given = "--gpus" if gpus is not None else "--runs-per-gpu" if runs_per_gpu is not None else None
    if device == "cpu":
        if given:
            raise ConfigError(f"{given}: the study's runs have device: cpu; set device: cuda or auto to train "
                              f"on GPUs")
        return None
    visible = visible_gpus(environ, count)
    if not visible:
        if given:
            raise ConfigError(f"{given}: GPUs requested but this machine has none")
        return None
    return GpuPlan(tuple(select_gpus(gpus, visible)), int(runs_per_gpu or 1))


class GpuPool:
    """Assigns GPUs to starting runs: :meth:`acquire` gives the GPU with the fewest runs on it (the first
    such in plan order), :meth:`release` frees it when the run's process ends. With more workers than
    ``len(gpus) × runs_per_gpu`` (an explicit ``--workers``) runs share GPUs as evenly as they can."""

    def __init__(self, gpus: tuple[str, ...] | list[str]):
        if not gpus:
            raise ValueError("GpuPool needs at least one GPU")
        self.load = {g: 0 for g in gpus}

    def acquire(self) -> str:
        gpu = min(self.load, key=self.load.__getitem__)
        self.load[gpu] += 1
        return gpu

    def release(self, gpu: str) -> None:
        if self.load.get(gpu, 0) < 1:
            raise ValueError(f"GPU {gpu} holds no run")
        self.load[gpu] -= 1


@contextmanager
def child_env(updates: Mapping[str, str]) -> Iterator[None]:
    """Set ``updates`` in ``os.environ`` for the duration of the block, then restore it exactly.

    A process started inside the block (``multiprocessing`` ``spawn`` executes a fresh interpreter with
    this environment) has them from its first instruction, before torch could initialise CUDA.
    """
    before = {k: os.environ.get(k) for k in updates}
    try:
        os.environ.update(updates)
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
