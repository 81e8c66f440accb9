"""The study driver: ``symscale study STUDY.yaml`` from the YAML file to the report.

1. check everything that can be checked before anything is created: the study file, the data (opened as the
   runs will open it; a raw source or a selection is prepared, beside the study directory: :mod:`.datasets`),
   every architecture's model options (each model built once), the run configurations, and the executor
   (a Ray cluster is connected to, a private instance started). A failure here is one line and leaves the
   study directory as it was: no study directory, lock, store or ``study.yaml`` appears, and an existing
   study directory is not touched;
2. create the study directory, take the driver lock, generate the data into ``<study>/data`` if asked (or
   move the prepared data into ``<study>/prepared/<key>``), and register the runs (stable ids) in the store
   (``<study>/study.db``);
3. run every run that is not finished on the chosen executor, recording evaluation points as they appear
   and each outcome when it ends (the driver is the store's only writer); with ``tune:``, the learning-rate
   sweep runs first, and the study's runs train at the learning rates it chose (:mod:`.tune`);
4. fit the laws on the study's runs and write ``<study>/laws.json`` and ``<study>/report/report.html``.

Running the same command again skips finished runs and resumes interrupted ones from their checkpoints;
runs that failed or diverged are kept as they are unless ``retry_failed``. One driver at a time may work on
a study directory (an exclusive lock on ``<study>/.driver.lock``; a study that another driver is running is
refused before step 1 does anything costly).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_text
from ..errors import ConfigError, SymscaleError
from ..locks import try_lock, write_pid
from ..outputs import check_output_dir, mark_dir
from .datasets import check_data, resolve_data, stage_data
from .schema import StudyConfig, expand, load_study_config
from .store import Store
from .tune import TUNE_NAME, run_tuning
from .worker import PROGRESS_NAME, read_json, read_rows


@dataclass
class StudyResult:
    """What a study invocation did. ``exit_code`` is 0 when every run completed, 1 otherwise."""

    study_dir: Path
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    report_error: str | None = None

    @property
    def exit_code(self) -> int:
        bad = self.counts.get("failed", 0) + self.counts.get("diverged", 0) + self.counts.get("pending", 0)
        return 1 if bad or self.report_error else 0


_STAND_IN = "0" * 64  # a well-formed content fingerprint for checking run configs before the data exist


def check_models(cfg: StudyConfig, source: str = "study") -> None:
    """Build each architecture's model as its runs will (options plus the data's cutoff): an unknown option or
    a value the family rejects is a one-line ConfigError naming the entry. Every width is built on the meta
    device (shapes only); a family that needs real tensors to construct is built at its smallest width."""
    import torch

    from ..models import build

    for i, arch in enumerate(cfg.architectures):
        options = {"cutoff": cfg.data.cutoff, **arch.options}
        try:
            for width in arch.widths:
                try:
                    with torch.device("meta"):
                        build(arch.family, width, **options)
                except SymscaleError:
                    raise
                except Exception:  # noqa: BLE001 - e.g. e3nn's rotation checks call .item(): build for real
                    build(arch.family, arch.widths[0], **options)
                    break
        except SymscaleError as exc:
            raise ConfigError(f"{source}: architectures.{i}.options: {exc}") from None
        except (TypeError, ValueError) as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(f"{source}: architectures.{i}.options: model {arch.family!r}: {why}") from None


def _report_data_change(store: Store, fingerprint: str, ids: list[str]) -> None:
    """Say so when the study's data changed content since its last invocation: run ids follow the content,
    so the runs trained on the old data are not reused (they stay in the store, outside this study's plan)."""
    before = (store.meta("study") or {}).get("data_fingerprint")
    if before is None or before == fingerprint:
        return
    stale = [r for r in store.runs() if r["id"] not in set(ids)]
    print(f"warning: data: content changed since the last invocation of this study (fingerprint "
              f"{before[:12]} -> {fingerprint[:12]}); {len(stale)} run(s) trained on the old data are kept in "
              f"the store but left out of this study and its fits; their settings train again on the new data",
              file=sys.stderr, flush=True)


class _DriverLock:
    """Exclusive ``flock`` on ``<study>/.driver.lock``, which then holds the driver's pid.

    ``acquire(create=False)`` takes the lock only when the file exists, changing nothing (a study that another
    driver runs is refused before anything costly); ``acquire()`` creates the file if needed and writes the pid.
    """

    def __init__(self, study_dir: Path):
        self.path = study_dir / ".driver.lock"
        self.fh = None

    def acquire(self, create: bool = True) -> None:
        if self.fh is None:
            try:
                fh = open(self.path, "a+" if create else "r+")
            except OSError as exc:
                if not create:
                    return  # no lock file yet (or no directory): nothing to wait for
                raise ConfigError(f"{self.path}: cannot create the driver lock ({exc.strerror or exc})") from None
            pid = try_lock(fh)
            if pid is not None:
                raise ConfigError(f"{self.path.parent}: another symscale study process (pid {pid}) is running "
                                  f"this study")
            self.fh = fh
        if create:
            write_pid(self.fh)

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class _Recorder:
    """The driver's :class:`~symscale.study.executor.Events`: writes the store, feeds the display."""

    def __init__(self, store: Store, display):
        self.store = store
        self.display = display
        self.seen: dict[str, tuple] = {}
        self.budget: dict[str, int | None] = {}

    def started(self, job: dict) -> None:
        self.store.mark_started(job["run_id"])
        self.display.started(job)

    def poll(self, job: dict) -> None:
        run_dir = Path(job["run_dir"])
        metrics = run_dir / "metrics.jsonl"
        try:
            st = metrics.stat()
            key = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key is not None and self.seen.get(job["run_id"]) != key:
            self.seen[job["run_id"]] = key
            self.store.sync_evals(job["run_id"], read_rows(metrics))
        prog = read_json(run_dir / PROGRESS_NAME)
        if prog:
            if job["run_id"] not in self.budget:
                self.budget[job["run_id"]] = (read_json(run_dir / "summary.json") or {}).get("budget_tokens")
            self.display.progress(job, int(prog.get("tokens", 0)), self.budget[job["run_id"]])

    def retrying(self, job: dict, reason: str) -> None:
        self.store.set_status(job["run_id"], "pending", reason)
        self.display.note(f"{job['run_id']}: {reason}; restarting from its last checkpoint")

    def finished(self, job: dict, outcome: dict) -> None:
        self.store.finish(job["run_id"], outcome)
        self.display.finished(job, outcome)


def make_executor(backend: str, workers: int | None, address: str | None, max_retries: int, *,
                  device: str = "cpu", gpus: str | None = None, runs_per_gpu: int | None = None,
                  gpus_per_run: float | None = None):
    """``workers=None``: the number of CPU cores here (local; GPUs × ``runs_per_gpu`` when the runs train on
    GPUs, see :func:`~symscale.study.devices.plan_gpus`) or the Ray cluster's CPUs (ray). ``device``: the
    study's device; ``gpus`` / ``runs_per_gpu`` are local options, ``gpus_per_run`` a Ray one."""
    if backend == "local":
        if address:
            raise ConfigError("--address: only meaningful with --backend ray")
        if gpus_per_run is not None:
            raise ConfigError("--gpus-per-run: only meaningful with --backend ray (use --runs-per-gpu locally)")
        from .devices import plan_gpus
        from .executor import LocalExecutor

        plan = plan_gpus(device, gpus, runs_per_gpu)
        default = plan.slots if plan is not None else os.cpu_count() or 1
        return LocalExecutor(workers=workers or default, max_retries=max_retries,
                             gpus=plan.gpus if plan is not None else None)
    if backend == "ray":
        for flag, value in (("--gpus", gpus), ("--runs-per-gpu", runs_per_gpu)):
            if value is not None:
                raise ConfigError(f"{flag}: only meaningful with --backend local (Ray places runs on GPUs; "
                                  f"use --gpus-per-run)")
        try:
            from .ray_backend import RayExecutor
        except ImportError as exc:
            raise ConfigError(f"--backend ray: Ray is not installed ({exc}); pip install 'symscale[ray]'") from None
        return RayExecutor(address=address, workers=workers, max_retries=max_retries, gpus_per_run=gpus_per_run)
    raise ConfigError(f"--backend: unknown backend {backend!r} (choose local or ray)")


def run_study(study_file: str | os.PathLike, *, backend: str = "local", workers: int | None = None,
              address: str | None = None, out: str | os.PathLike | None = None, retry_failed: bool = False,
              quiet: bool = False, report: bool = True, gpus: str | None = None, runs_per_gpu: int | None = None,
              gpus_per_run: float | None = None) -> StudyResult:
    """Run the study described by ``study_file``; see the module docstring.

    Args:
        backend: ``local`` (worker processes here) or ``ray``.
        workers: parallel runs (default: the number of CPU cores, GPUs × ``runs_per_gpu`` for local GPU runs,
            or the Ray cluster's CPUs).
        address: a Ray cluster address (``auto``, ``host:port``); ``None`` starts a private one.
        out: study directory (overrides the file's ``out``).
        retry_failed: run failed and diverged runs again.
        quiet: no progress display (one line per run start/end is still printed unless quiet).
        report: fit the laws and write the report at the end.
        gpus, runs_per_gpu: local GPU runs: which GPUs (a count or indices, default all) and how many runs each
            trains at once (default 1); see :mod:`symscale.study.devices`.
        gpus_per_run: Ray: GPUs each ``cuda`` / ``auto`` run requests, in (0, 1].
    """
    from .display import Display

    cfg = load_study_config(study_file)
    source = str(study_file)
    study_dir = Path(out) if out is not None else cfg.study_dir()
    if workers is not None and workers < 1:
        raise ConfigError("--workers: must be at least 1")
    executor = make_executor(backend, workers, address, cfg.max_retries, device=cfg.device, gpus=gpus,
                             runs_per_gpu=runs_per_gpu, gpus_per_run=gpus_per_run)
    lock = _DriverLock(study_dir)
    try:
        # 1. checks: nothing is created (and an existing study directory is not touched) until they pass
        lock.acquire(create=False)
        check_output_dir(study_dir, "study", flag="out")  # a new, empty or symscale study directory only
        executor.probe()  # a Ray address that does not answer, within seconds and before the slower checks
        data, fingerprint = check_data(cfg, study_dir, source)
        check_models(cfg, source)
        # data still to be generated: the run configs are checked with a stand-in fingerprint, the ids come later
        plan = expand(cfg, data, study_dir, source=source, fingerprint=fingerprint or _STAND_IN)
        if fingerprint is None and cfg.data.generate is None:  # a raw source or a selection, prepared beside
            fingerprint = stage_data(cfg, study_dir, quiet)   # the study directory: bad rows leave it untouched
            plan = expand(cfg, data, study_dir, source=source, fingerprint=fingerprint)
        executor.connect([p.job() for p in plan])
        # 2. the study directory, its lock, the data, the store
        try:
            study_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"out: cannot create the study directory {study_dir} ({exc.strerror or exc})") from None
        mark_dir(study_dir, "study")
        lock.acquire()
        resolve_data(cfg, study_dir, quiet)  # generated data made, or prepared data moved into the study
        if fingerprint is None:
            plan = expand(cfg, data, study_dir, source=source)
        ids = [p.id for p in plan]
        with Store(study_dir) as store:
            _report_data_change(store, plan[0].config.data.fingerprint, ids)

            def train(runs: list, todo: list) -> None:  # the executor trains `todo` (of `runs`); the store
                display = Display(runs, quiet=quiet)
                display.start(len(todo), backend)
                try:
                    executor.run([p.job() for p in todo], _Recorder(store, display))
                except KeyboardInterrupt:
                    display.stop()
                    print(f"interrupted: rerun `symscale study {study_file}` to resume", file=sys.stderr)
                    raise
                display.stop()

            tune_ids: list[str] = []
            if cfg.tune is not None:  # 3a. the learning-rate sweep (.tune); the runs then train at its choices
                plan, tune_ids = run_tuning(cfg, plan, study_dir, store, train, retry_failed=retry_failed,
                                            quiet=quiet, source=source)
                ids = [p.id for p in plan]
            store.add_runs(plan)
            store.reset_interrupted()
            if retry_failed:
                store.reset_failed(ids)
            store.set_meta("study", {"file": str(Path(study_file).resolve()), "name": cfg.name,
                                     "config": cfg.model_dump(mode="json"), "run_ids": ids,
                                     "tune_run_ids": tune_ids,
                                     "data_fingerprint": plan[0].config.data.fingerprint})
            write_text(study_dir / "study.yaml", Path(study_file).read_text())
            status = {r["id"]: r["status"] for r in store.runs(ids)}
            todo = [p for p in plan if status[p.id] == "pending"]
            # 3. the runs
            t0 = time.perf_counter()
            train(plan, todo)
            counts: dict[str, int] = {}
            for r in store.runs(ids):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
                if r["status"] in ("failed", "diverged") and not quiet:
                    print(f"  {r['status']}: {r['id']}: {r['error']}", file=sys.stderr)
            store.set_meta("last_invocation", {"backend": backend, "ran": len(todo),
                                                "seconds": time.perf_counter() - t0, "counts": counts})
    finally:
        executor.close()  # a private Ray instance is shut down on every way out, errors included
        lock.release()
    # 4. the laws and the report
    result = StudyResult(study_dir, len(plan), counts)
    if report:
        try:
            result.report = write_study_report(study_dir, ids, cfg, quiet=quiet)
        except SymscaleError as exc:
            result.report_error = str(exc)
            print(f"report not written: {exc}", file=sys.stderr)
    if not quiet:
        done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        print(f"study {cfg.name}: {len(plan)} runs ({done}) -> {study_dir}", flush=True)
    return result


def write_study_report(study_dir: Path, run_ids: list[str], cfg: StudyConfig, quiet: bool = False) -> Path:
    """Fit the laws on the study's runs (from the store) and write ``laws.json`` and ``report/``."""
    from ..laws import analyse, to_json
    from ..laws.cli import table
    from ..laws.plots import write_all
    from ..laws.report import write_report
    from .store import load_groups
    from .tune_report import read_tune, tune_section

    r = cfg.report
    groups = r.drop_warmup(load_groups(study_dir, run_ids))
    results = analyse(groups, n_boot=r.bootstrap, seed=r.seed, holdout=r.holdout)
    doc = to_json(results, {"input": str(study_dir / "study.db"), "loss": "loss", "study": cfg.name,
                            **r.model_dump(mode="json")})
    out = study_dir / "report"
    write_all(results, out)
    write_text(out / "fit.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    write_text(study_dir / "laws.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    tune = study_dir / TUNE_NAME
    html, _ = write_report(doc, out, extra=[tune_section(read_tune(tune))] if cfg.tune and tune.is_file() else [])
    if not quiet:
        print(table(doc))
        print(f"report: {html}")
    return Path(html)
