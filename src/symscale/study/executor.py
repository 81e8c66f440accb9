"""Executors run a study's jobs; the driver listens to them through :class:`Events`.

An executor calls the :class:`Events` methods from the driver's own thread only, so the driver, which alone
writes the store, needs no locking. The driver calls :meth:`Executor.probe` and :meth:`Executor.connect`
before it creates anything in the study directory, so a cluster that does not answer, or runs that could never
train there, fail the study at once and leave nothing behind, and :meth:`Executor.close` on every way out.
Two executors exist: :class:`LocalExecutor` (worker processes on this machine, the default) and
:class:`symscale.study.ray_backend.RayExecutor`.

A job is ``PlannedRun.job()``; an outcome is what :func:`symscale.study.worker.execute` returns.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Callable, Protocol

from ..errors import ConfigError
from .devices import ENV, GpuPool, child_env
from .worker import OUTCOME_NAME, read_json, read_rows

POLL_S = 0.5


class Events(Protocol):
    def started(self, job: dict) -> None:
        """The job was handed to a worker (again, after a retry)."""

    def poll(self, job: dict) -> None:
        """Called about every :data:`POLL_S` seconds per running job (the driver reads its run directory)."""

    def retrying(self, job: dict, reason: str) -> None:
        """The job's worker died; the job will be started again and resume from its last checkpoint."""

    def finished(self, job: dict, outcome: dict) -> None:
        """The job ended (``outcome["status"]`` is completed, diverged or failed)."""


class Executor(Protocol):
    def probe(self) -> None:
        """Quick checks that start nothing (a cluster address answers); one-line ConfigError otherwise."""

    def connect(self, jobs: list[dict]) -> None:
        """Get ready to run ``jobs`` (start or join a cluster); one-line ConfigError when they never could."""

    def run(self, jobs: list[dict], events: Events) -> None:
        """Run every job, at most the executor's parallelism at a time, reporting through ``events``."""

    def close(self) -> None:
        """Release what :meth:`connect` started; safe to call at any time, more than once."""


def check_devices(jobs: list[dict], *, gpu: bool, where: str) -> None:
    """ConfigError when a job could never train ``where``: ``device: cuda`` and no GPU (``gpu`` false).
    (``dtype: bfloat16`` autocasts on the CPU as well as on CUDA, so it needs no check.)"""
    for job in jobs:
        if job["config"].get("device") == "cuda" and not gpu:
            raise ConfigError(f"device: 'cuda' runs need a GPU but {where} has none")


def died_outcome(job: dict, reason: str, wall_s: float) -> dict:
    """The outcome of a job whose worker kept dying: ``failed``, with what its directory holds."""
    run_dir = Path(job["run_dir"])
    return {"run_id": job["run_id"], "status": "failed", "reason": reason,
            "summary": read_json(run_dir / "summary.json"), "rows": read_rows(run_dir / "metrics.jsonl"),
            "wall_s": wall_s}


class LocalExecutor:
    """``workers`` processes on this machine, one torch thread each, one run per process.

    ``gpus``: the ``CUDA_VISIBLE_DEVICES`` entries of the GPUs to train on (see
    :mod:`symscale.study.devices`); each worker process is started with ``CUDA_VISIBLE_DEVICES`` set to the
    one GPU :class:`~symscale.study.devices.GpuPool` gives it (the least loaded), so its run trains on
    ``cuda:0``. ``None`` (CPU runs) sets nothing. ``target``: the function a worker process runs with the
    job (default :func:`symscale.study.worker.process_main`); it must be importable by name in a fresh
    interpreter (workers are spawned).

    A fresh process per run isolates crashes (a segfault or an out-of-memory kill fails one attempt, not
    the pool). A worker that dies without an outcome (killed by a signal) is restarted up to
    ``max_retries`` times; the run resumes from its last checkpoint. Workers die with the driver (Linux
    ``PR_SET_PDEATHSIG``), so a killed driver leaves no orphan training behind.
    """

    def __init__(self, workers: int = 1, max_retries: int = 2, gpus: tuple[str, ...] | list[str] | None = None,
                 target: Callable[[dict], None] | None = None):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = int(workers)
        self.max_retries = int(max_retries)
        self.gpus = tuple(gpus) if gpus else None
        self.target = target

    def probe(self) -> None:
        """Nothing to probe: the workers are processes on this machine."""

    def connect(self, jobs: list[dict]) -> None:
        """Nothing to start; ConfigError when this machine could never train one of ``jobs``."""
        if self.gpus:
            gpu = True
        elif any(j["config"].get("device") == "cuda" for j in jobs):
            import torch

            gpu = torch.cuda.is_available()
        else:
            gpu = False
        check_devices(jobs, gpu=gpu, where="this machine")

    def close(self) -> None:
        """Nothing to release: each :meth:`run` ends its worker processes itself."""

    def run(self, jobs: list[dict], events: Events) -> None:
        from .worker import process_main

        ctx = mp.get_context("spawn")
        target = self.target or process_main
        pool = GpuPool(self.gpus) if self.gpus else None
        queue = list(jobs)
        attempts: dict[str, int] = {}
        spent: dict[str, float] = {}  # wall time of a job's earlier attempts that died
        running: dict[str, tuple] = {}  # run_id -> (process, job, start time, GPU or None)
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    job = queue.pop(0)
                    attempts[job["run_id"]] = attempts.get(job["run_id"], 0) + 1
                    proc = ctx.Process(target=target, args=(job,), name=f"symscale-{job['run_id']}")
                    gpu = pool.acquire() if pool is not None else None
                    with child_env({ENV: gpu} if gpu is not None else {}):
                        proc.start()
                    running[job["run_id"]] = (proc, job, time.perf_counter(), gpu)
                    events.started(job)
                time.sleep(POLL_S)
                for run_id, (proc, job, t0, gpu) in list(running.items()):
                    events.poll(job)
                    if proc.is_alive():
                        continue
                    proc.join()
                    del running[run_id]
                    if gpu is not None:
                        pool.release(gpu)
                    wall = time.perf_counter() - t0 + spent.get(run_id, 0.0)
                    outcome = read_json(Path(job["run_dir"]) / OUTCOME_NAME)
                    if outcome is not None and proc.exitcode == 0:
                        outcome["rows"] = read_rows(Path(job["run_dir"]) / "metrics.jsonl")
                        outcome["wall_s"] = wall
                        events.finished(job, outcome)
                        continue
                    why = (f"worker killed by signal {-proc.exitcode}" if (proc.exitcode or 0) < 0
                           else f"worker exited with code {proc.exitcode} without an outcome")
                    if attempts[run_id] <= self.max_retries:
                        spent[run_id] = wall
                        events.retrying(job, why)
                        queue.insert(0, job)
                    else:
                        events.finished(job, died_outcome(job, f"{why} (after {attempts[run_id]} attempts)", wall))
        finally:
            for proc, *_ in running.values():
                if proc.is_alive():
                    proc.kill()
                proc.join()
