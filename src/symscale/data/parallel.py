"""Running shard conversions in parallel: local worker processes (default) or Ray tasks.

:func:`run_shards` runs :func:`~symscale.data.convert.convert_shard` for every task and calls back, from the
calling thread only, with the rows each running task has read (``on_rows``) and with each finished task's
summary (``on_done``, in order of completion). The first error stops everything: the other workers are
terminated (their unfinished parts have no ``done.json`` and are redone by the next run) and the error
propagates; a :class:`~symscale.errors.SymscaleError` raised in a worker arrives as itself, one line naming
the shard and the row.

* ``local``: with one worker, or one task, the conversions run in this process. Otherwise a pool of
  ``workers`` processes (``spawn``: each a fresh interpreter; one thread each; killed with their parent
  on Linux) takes the tasks largest first. Workers report progress through a file in their part.
* ``ray``: one Ray task per shard, following ``symscale study --backend ray``: the address is probed within
  seconds before anything starts (``--address``; none starts a private instance, shut down at the end and on
  every error), tasks request one CPU each. A task writes its part in place when the part's directory is
  visible on its node (a shared filesystem, or one machine); otherwise (or with ``SYMSCALE_RAY_NODE_LOCAL=1``)
  it converts into a node-local temporary directory and returns the files, which are written here, the
  ``done.json`` last. The shards must be readable at the same path on every node.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from ..atomic import write_text
from ..errors import ConfigError, DataError, SymscaleError
from .parts import DONE

# This module is what a worker process imports first (its initializer): it must not import the readers
# (vesin, and through it torch) before :func:`_init_worker` has run, so :mod:`.convert` is imported late.

POLL_S = 0.5
OnRows = Callable[[dict, int], None]
OnDone = Callable[[dict, dict], None]


def check_backend(backend: str, workers: int | None, address: str | None) -> None:
    """One-line ConfigError for impossible settings, and (Ray with ``address``) unless a Ray cluster answers
    there within seconds; starts nothing. :func:`run_shards` checks the same."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be at least 1 (got {workers})")
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend: unknown backend {backend!r} (choose local or ray)")
    if address and backend != "ray":
        raise ConfigError("--address: only meaningful with --backend ray")
    if backend == "ray":
        from ..study.ray_backend import RayExecutor

        RayExecutor(address=address, workers=workers).probe()


def run_shards(tasks: list[dict], *, workers: int | None, on_rows: OnRows, on_done: OnDone,
               backend: str = "local", address: str | None = None) -> None:
    """Convert every task's shard (see the module docstring); ``workers`` conversions at a time (``None``:
    this machine's CPU count, capped by the number of tasks; with Ray, the cluster's CPUs)."""
    check_backend(backend, workers, address)
    if backend == "ray":
        return _run_ray(tasks, workers, address, on_rows, on_done)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(tasks) <= 1:
        from .convert import convert_shard

        for task in tasks:
            on_done(task, convert_shard(task, report=lambda rows, t=task: on_rows(t, rows)))
        return None
    return _run_pool(tasks, workers, on_rows, on_done)


def _largest_first(tasks: list[dict]) -> list[dict]:
    return sorted(tasks, key=lambda t: -(t["rows"] if t["rows"] is not None else t["stamp"][1]))


# ---------------------------------------------------------------------------------------------- local
def _init_worker() -> None:
    """A worker: one thread, no torch, Ctrl-C left to the parent (which terminates it), dies with its parent.

    vesin (the neighbour list of validation) imports torch when it can, for tensor inputs a worker never
    passes; blocking the import saves each worker seconds of start-up and a few hundred MB.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type] - makes `import torch` raise ImportError
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # Linux: SIGKILL when the preparing process dies (as symscale.study's local workers)
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _convert(task: dict) -> dict:
    from .convert import convert_shard

    return convert_shard(task)


def _progress(task: dict) -> int:
    from .convert import read_progress

    return read_progress(Path(task["dir"]))


def _run_pool(tasks: list[dict], workers: int, on_rows: OnRows, on_done: OnDone) -> None:
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                               initializer=_init_worker)
    try:
        pending = {pool.submit(_convert, task): task for task in _largest_first(tasks)}
        while pending:
            finished, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                try:
                    summary = future.result()
                except BrokenProcessPool:
                    raise DataError(f"{task['path']}: a worker process preparing the shards died (killed by the "
                                    f"system: out of memory?); run again to continue") from None
                on_rows(task, summary["rows"])
                on_done(task, summary)
            for future, task in pending.items():
                if future.running():
                    on_rows(task, _progress(task))
    finally:
        _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers now (not after their current shard)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=10)


# ---------------------------------------------------------------------------------------------- ray
def ray_convert(task: dict, node_local: bool) -> dict:
    """Body of one Ray task: convert the shard in place, or node-locally and return the part's files."""
    from .convert import convert_shard

    part = Path(task["dir"])
    if not node_local and part.parent.is_dir():
        return convert_shard(task)
    with tempfile.TemporaryDirectory(prefix="symscale-shard-") as tmp:
        local = Path(tmp) / part.name
        summary = convert_shard({**task, "dir": str(local)})
        summary["files"] = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}
    return summary


def _write_part(task: dict, files: dict[str, bytes]) -> None:
    part = Path(task["dir"])
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    for name, data in files.items():
        if name != DONE:
            (part / name).write_bytes(data)
    write_text(part / DONE, files[DONE].decode("utf-8"))


def _run_ray(tasks: list[dict], workers: int | None, address: str | None, on_rows: OnRows, on_done: OnDone) -> None:
    from ..study.ray_backend import NODE_LOCAL_ENV, RayExecutor

    node_local = os.environ.get(NODE_LOCAL_ENV, "").strip().lower() in ("1", "true", "yes")
    executor = RayExecutor(address=address, workers=workers)
    inflight: dict = {}
    try:
        executor.connect([])
        ray = executor.ray
        limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(ray_convert).options(
            num_cpus=1, max_retries=2, retry_exceptions=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}})
        queue = _largest_first(tasks)
        while queue or inflight:
            while queue and len(inflight) < limit:
                task = queue.pop(0)
                inflight[remote.remote(task, node_local)] = task
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=POLL_S)
            for ref in ready:
                task = inflight.pop(ref)
                summary = _ray_result(ray, ref, task)
                files = summary.pop("files", None)
                if files is not None:
                    _write_part(task, files)
                on_rows(task, summary["rows"])
                on_done(task, summary)
            for task in inflight.values():
                on_rows(task, _progress(task))
    except BaseException:
        for ref in inflight:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished already, or the cluster is gone
                pass
        raise
    finally:
        executor.close()


def _ray_result(ray, ref, task: dict) -> dict:
    """The summary of a finished task; its own error (a DataError naming shard and row) as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SymscaleError):
            raise cause from None
        first = (str(cause or exc).strip().splitlines() or [""])[0]
        raise DataError(f"{task['path']}: Ray task failed ({type(cause or exc).__name__}: {first[:200]})") from None
    except ray.exceptions.RayError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{task['path']}: Ray task failed ({type(exc).__name__}: {first[:200]})") from None
