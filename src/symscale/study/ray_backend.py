"""Running a study's jobs as Ray tasks: :class:`RayExecutor` (``symscale study --backend ray``).

Each job becomes one Ray task that calls :func:`symscale.study.worker.execute` in a fresh worker process
(``max_calls=1``) and returns its outcome. The executor has the shape of
:class:`~symscale.study.executor.LocalExecutor`: :meth:`RayExecutor.run` reports through
:class:`~symscale.study.executor.Events` from the calling (driver) thread only, so the driver alone writes
the study store.

Shared filesystem. A task trains in the job's run directory when that directory's parent exists on the
task's node (a shared filesystem, or one machine). Otherwise, or when forced (``node_local=True`` or the
environment variable ``SYMSCALE_RAY_NODE_LOCAL=1`` on the driver), it trains in a node-local temporary
directory and returns the run's files as bytes in ``outcome["files"]``; :meth:`RayExecutor.run` writes them
into the run directory atomically before it reports the job finished. A run that already has files in its
run directory on the driver (an interrupted study being resumed) sends them with the task, so a node-local
run resumes from its checkpoint too.

Connecting. :meth:`RayExecutor.probe` checks within seconds, starting nothing, that a Ray cluster answers at
``address`` (:mod:`symscale.study.ray_probe`); :meth:`RayExecutor.connect` joins it (or starts the private
instance) and checks that its resources can run the jobs; :meth:`RayExecutor.close` disconnects (or shuts the
private instance down). The driver does all three around the study, so a cluster that is not there fails the
study before anything is created, and :meth:`RayExecutor.run` alone also connects and closes by itself.

Ray is an optional dependency (``pip install 'symscale[ray]'``); it is imported only when an executor is used.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import yaml

from ..atomic import atomic_path
from ..errors import ConfigError
from .executor import POLL_S, Events, check_devices, died_outcome
from .ray_probe import probe_address

#: The files of a run directory that travel back from a node-local run (the summary is written last).
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "config.yaml", "error.log", "summary.json")
#: Driver-side environment switch: ``1`` forces node-local training on every node.
NODE_LOCAL_ENV = "SYMSCALE_RAY_NODE_LOCAL"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def train_task(job: dict, threads: int, node_local: bool, seed: list) -> dict:
    """Body of one Ray task: train ``job`` and return its outcome.

    ``seed`` is empty or holds one ``ObjectRef`` of ``{file name: bytes}`` (the run's files as the driver
    has them); it is wrapped in a list so Ray fetches it only when the run trains node-locally.
    """
    from .worker import execute

    run_dir = Path(job["run_dir"])
    if not node_local and run_dir.parent.is_dir():
        return execute(job, threads=threads)
    import ray

    with tempfile.TemporaryDirectory(prefix="symscale-ray-") as tmp:
        local = Path(tmp) / run_dir.name
        local.mkdir()
        for name, data in (ray.get(seed[0]) if seed else {}).items():
            (local / name).write_bytes(data)
        outcome = execute({**job, "run_dir": str(local), "config": {**job["config"], "out": str(local)}},
                          threads=threads)
        outcome["files"] = {name: (local / name).read_bytes() for name in RUN_FILES if (local / name).is_file()}
    return outcome


def check_gpus_per_run(gpus: float | None) -> float | None:
    """``gpus_per_run`` validated: a fraction of one GPU in ``(0, 1]`` (``0.25``: four runs share a GPU), or
    ``None``; a run trains on one device, so it never asks for more than one GPU."""
    if gpus is None:
        return None
    gpus = float(gpus)
    if not (math.isfinite(gpus) and 0 < gpus <= 1):
        raise ConfigError(f"gpus_per_run: must be in (0, 1] (a run trains on one GPU; 0.5 = two runs per GPU), "
                          f"got {gpus:g}")
    return gpus


def task_options(job: dict, *, cpus_per_run: int, gpus_per_run: float | None, max_retries: int) -> dict:
    """The Ray options of ``job``'s task (``remote.options(**task_options(...))``).

    GPUs: without ``gpus_per_run`` a ``device: cuda`` run requests one GPU and any other none (``auto`` then
    trains on the CPU); with it, ``cuda`` and ``auto`` runs request ``gpus_per_run`` (Ray shares a GPU
    among ``1 / gpus_per_run`` such tasks and sets ``CUDA_VISIBLE_DEVICES`` to it) and ``cpu`` runs none. A
    task without a GPU gets ``CUDA_VISIBLE_DEVICES=""``. ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are
    ``cpus_per_run``.
    """
    device = job["config"].get("device")
    if gpus_per_run is None:
        gpus: float = 1 if device == "cuda" else 0
    else:
        gpus = gpus_per_run if device in ("cuda", "auto") else 0
    env = {"OMP_NUM_THREADS": str(cpus_per_run), "MKL_NUM_THREADS": str(cpus_per_run)}
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return {"num_cpus": cpus_per_run, "num_gpus": gpus, "max_retries": max_retries, "retry_exceptions": False,
            "runtime_env": {"env_vars": env}, "name": f"symscale-{job['run_id']}"}


def _failure_reason(exc: BaseException, attempts: int) -> str:
    """One line saying why a task failed for good (Ray's own exceptions carry multi-line tracebacks)."""
    from ray import exceptions as rex

    if isinstance(exc, rex.TaskCancelledError):
        return "Ray task cancelled"
    if isinstance(exc, rex.OutOfMemoryError):
        return f"Ray worker killed by the memory monitor (OutOfMemoryError) after {attempts} attempt(s)"
    if isinstance(exc, rex.WorkerCrashedError):
        return f"Ray worker died (WorkerCrashedError) after {attempts} attempt(s)"
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None and not isinstance(cause, rex.RayTaskError):
            return _one_line(f"Ray task raised {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
        return _one_line(f"Ray task raised: {str(exc).splitlines()[0]}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _one_line(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def _write_back(job: dict, files: dict[str, bytes]) -> None:
    """Write a node-local run's files into the job's run directory, each atomically, the summary last."""
    run_dir = Path(job["run_dir"])
    for name in RUN_FILES:
        if name not in files:
            continue
        data = files[name]
        if name == "config.yaml":  # the resolved config names the node-local directory as ``out``
            cfg = yaml.safe_load(data.decode())
            if isinstance(cfg, dict) and "out" in cfg:
                cfg["out"] = str(run_dir)
                data = yaml.safe_dump(cfg, sort_keys=False).encode()
        with atomic_path(run_dir / name) as tmp:
            tmp.write_bytes(data)


def _seed_files(job: dict) -> dict[str, bytes]:
    """The run's files already in its run directory on the driver (a resumed study), else nothing."""
    run_dir = Path(job["run_dir"])
    if not ((run_dir / "checkpoint.pt").is_file() or (run_dir / "summary.json").is_file()):
        return {}
    return {name: (run_dir / name).read_bytes() for name in RUN_FILES if (run_dir / name).is_file()}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("backend: ray is not installed (pip install 'symscale[ray]')") from None
    return ray


class RayExecutor:
    """Run each job as a Ray task, at most ``workers`` (default: the cluster's CPUs // ``cpus_per_run``) at once.

    Args:
        address: ``None`` starts a private local Ray instance (``workers * cpus_per_run`` CPUs, or all of
            this machine's; no dashboard) and shuts it down at the end. ``"auto"``, ``"host:port"`` or
            ``"ray://host:port"`` connects to an existing cluster and only disconnects at the end. When Ray
            is already initialised in this process that connection is used and left open.
        workers: runs in flight at once.
        max_retries: Ray re-runs a task whose worker process died (crash, node loss, memory monitor) up to
            this many times; the retry resumes from the run's checkpoint. A run's own failure (bad config,
            data error, exception in training) is an outcome, never retried.
        cpus_per_run: CPUs each task requests; it trains with that many torch threads.
        gpus_per_run: GPUs each ``cuda`` or ``auto`` run requests, in ``(0, 1]`` (``--gpus-per-run``; see
            :func:`task_options`); ``None``: one GPU for ``cuda`` runs, none for ``auto``.
        node_local: ``True`` always trains node-locally and ships the files back; ``None`` (default) reads
            ``SYMSCALE_RAY_NODE_LOCAL`` and otherwise decides per task (run directory's parent missing).
        object_store_memory: bytes for a private instance's object store (Ray's default when ``None``).

    Without ``gpus_per_run`` a job whose config device is ``cuda`` requests one GPU; every other job requests
    none and sees no GPU (``auto`` resolves to CPU under Ray).
    """

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 2,
                 cpus_per_run: int = 1, *, gpus_per_run: float | None = None, node_local: bool | None = None,
                 object_store_memory: int | None = None):
        if workers is not None and workers < 1:
            raise ConfigError(f"workers: must be >= 1 (got {workers})")
        if cpus_per_run < 1:
            raise ConfigError(f"cpus_per_run: must be >= 1 (got {cpus_per_run})")
        if max_retries < 0:
            raise ConfigError(f"max_retries: must be >= 0 (got {max_retries})")
        self.address = address or None
        self.workers = None if workers is None else int(workers)
        self.max_retries = int(max_retries)
        self.cpus_per_run = int(cpus_per_run)
        self.gpus_per_run = check_gpus_per_run(gpus_per_run)
        if node_local is None:
            node_local = os.environ.get(NODE_LOCAL_ENV, "").strip().lower() in ("1", "true", "yes")
        self.node_local = bool(node_local)
        self.object_store_memory = object_store_memory
        self._ray = None  # the ray module while connected (see connect / close)
        self._owned = False  # whether connect initialised Ray (and close shuts it down)
        self._probed = False

    # ------------------------------------------------------------------ connection
    @property
    def ray(self):
        """The ``ray`` module while connected (after :meth:`connect`, until :meth:`close`), else ``None``;
        ``symscale data prepare --backend ray`` submits its own tasks through it."""
        return self._ray

    def probe(self) -> None:
        """Within seconds, a one-line ConfigError unless a Ray cluster answers at ``address`` (see
        :func:`~symscale.study.ray_probe.probe_address`); starts nothing. :meth:`connect` probes as well."""
        if self.address is not None and not self._probed:
            _import_ray()
            probe_address(self.address)
            self._probed = True

    def connect(self, jobs: list[dict] = ()) -> None:
        """Join the cluster at ``address`` (or start the private instance) and check that it can run ``jobs``.

        Does nothing when already connected. On any failure (no Ray cluster at the address, too few CPUs,
        ``cuda`` runs and no GPU) whatever this call started is shut down again before the one-line
        ConfigError propagates. :meth:`close` undoes a successful call.
        """
        if self._ray is not None:
            return
        ray, owned = self._init()
        try:
            self._limit(ray, list(jobs))
        except BaseException:
            if owned:
                ray.shutdown()
            raise
        self._ray, self._owned = ray, owned

    def close(self) -> None:
        """Shut the private instance down, or disconnect from the cluster :meth:`connect` joined (never stopping
        it); a Ray connection that existed before :meth:`connect` is left open. Safe to call at any time."""
        ray, self._ray = self._ray, None
        if ray is not None and self._owned:
            ray.shutdown()

    def _init(self):
        """Initialise Ray; return ``(ray module, whether this call initialised it)``."""
        ray = _import_ray()
        if ray.is_initialized():
            return ray, False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        opts: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address is None:
            cpus = self.workers * self.cpus_per_run if self.workers else (os.cpu_count() or 1)
            opts.update(num_cpus=max(cpus, self.cpus_per_run), include_dashboard=False)
            if self.object_store_memory:
                opts["object_store_memory"] = int(self.object_store_memory)
            # a private instance lives and dies with this study: Ray's notice that it enabled token
            # authentication (and how to opt out) would be the one line on stderr of every such study
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        else:
            self.probe()
            opts["address"] = self.address
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # Ray's notice about GPU env var overrides
                ray.init(**opts)
        except BaseException as exc:  # Ctrl-C included: nothing half started is left behind
            if ray.is_initialized():
                ray.shutdown()
            if not isinstance(exc, Exception):
                raise
            where = f"address: cannot connect to the Ray cluster at {self.address}" if self.address else \
                "backend: cannot start a local Ray instance"
            raise ConfigError(f"{where} ({_one_line(exc, 200)})") from None
        return ray, True

    def _limit(self, ray, jobs: list[dict]) -> int:
        """Tasks in flight at once; ConfigError when no node could ever run a task."""
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 0))
        if cpus < self.cpus_per_run:
            raise ConfigError(f"cpus_per_run: {self.cpus_per_run} CPUs per run but the Ray cluster has {cpus}")
        gpus = float(res.get("GPU", 0))
        asked = [task_options(j, cpus_per_run=self.cpus_per_run, gpus_per_run=self.gpus_per_run,
                              max_retries=0)["num_gpus"] for j in jobs]
        need = max(asked, default=0)
        if self.gpus_per_run is not None and need and gpus < need:
            raise ConfigError(f"gpus_per_run: {self.gpus_per_run:g} GPU per run but the Ray cluster has "
                              f"{'none' if gpus == 0 else f'{gpus:g}'}")
        # without gpus_per_run a run without ``device: cuda`` requests no GPU: ``auto`` trains on the CPU
        check_devices(jobs, gpu=gpus >= 1 or (need > 0 and gpus >= need), where="the Ray cluster")
        limit = max(1, cpus // self.cpus_per_run)
        if need:  # GPU runs: no more in flight than the cluster's GPUs can hold at once
            limit = min(limit, max(1, math.floor(gpus / need + 1e-9)))
        return self.workers or limit

    # ------------------------------------------------------------------ running
    def run(self, jobs: list[dict], events: Events) -> None:
        """Run every job, at most the executor's parallelism at a time, reporting through ``events``.

        Connects first unless :meth:`connect` was called, and then closes at the end. Ctrl-C or any exception
        (an ``events`` callback included) cancels the outstanding tasks (their worker processes are killed;
        re-running the study resumes from the checkpoints) and propagates.
        """
        if not jobs:
            return
        here = self._ray is None
        self.connect(jobs)
        ray = self._ray
        inflight: dict = {}  # ObjectRef -> (job, submit time, seed ObjectRef | None)
        try:
            limit = self._limit(ray, jobs)
            remote = ray.remote(max_calls=1)(train_task)  # a fresh process per run, as LocalExecutor
            queue = list(jobs)
            while queue or inflight:
                while queue and len(inflight) < limit:
                    job = queue.pop(0)
                    ref, seed_ref = self._submit(ray, remote, job)
                    inflight[ref] = (job, time.perf_counter(), seed_ref)
                    events.started(job)
                ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=POLL_S)
                for job, _, _ in inflight.values():
                    events.poll(job)
                for ref in ready:
                    job, t0, _ = inflight.pop(ref)
                    events.finished(job, self._collect(ray, ref, job, t0))
        except BaseException:
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or the cluster is gone: nothing left to stop
                    pass
            raise
        finally:
            inflight.clear()
            if here:
                self.close()

    def _submit(self, ray, remote, job: dict):
        parent = Path(job["run_dir"]).parent
        try:  # a task then finds the parent on a shared filesystem and trains in place
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"out: cannot create the runs directory {parent} ({exc.strerror or exc})") from None
        files = _seed_files(job)
        seed_ref = ray.put(files) if files else None
        ref = remote.options(**task_options(
            job, cpus_per_run=self.cpus_per_run, gpus_per_run=self.gpus_per_run, max_retries=self.max_retries,
        )).remote(job, self.cpus_per_run, self.node_local, [seed_ref] if seed_ref is not None else [])
        return ref, seed_ref

    def _collect(self, ray, ref, job: dict, t0: float) -> dict:
        """The outcome of a finished task; files of a node-local run are written into the run directory."""
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            return died_outcome(job, _failure_reason(exc, self.max_retries + 1), time.perf_counter() - t0)
        files = outcome.pop("files", None)
        if files is not None:
            try:
                _write_back(job, files)
            except OSError as exc:
                return {**died_outcome(job, _one_line(
                    f"cannot write the run's returned files into {job['run_dir']} ({exc.strerror or exc})"),
                    time.perf_counter() - t0), "summary": outcome.get("summary"), "rows": outcome.get("rows")}
            outcome["returned_files"] = sorted(files)
        outcome["wall_s"] = time.perf_counter() - t0  # submission to result, as LocalExecutor counts it
        return outcome
