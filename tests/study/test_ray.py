"""RayExecutor against real local Ray instances: tiny mpnn runs on the embedded dataset.

One private instance is started and shut down by ``run_study(..., backend="ray")``; the other tests share
one instance that this module starts (two CPUs, small object store) and the executor connects to it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from symscale.errors import ConfigError  # noqa: E402
from symscale.study.ray_backend import NODE_LOCAL_ENV, RayExecutor  # noqa: E402
from symscale.study.schema import expand, parse_study  # noqa: E402
from symscale.study.worker import read_rows  # noqa: E402

TINY = {"name": "tiny", "data": "embedded", "architectures": [{"family": "mpnn", "widths": [4, 8]}],
        "tokens": 3000, "batch_size": 8, "evaluation": {"points": 3}, "report": {"bootstrap": 0}}


def make_jobs(study_dir: Path, fingerprint: str | None = None, **changes) -> list[dict]:
    study = parse_study({**TINY, **changes})
    data = None if study.data.embedded else study.data.path
    return [p.job() for p in expand(study, data, study_dir, fingerprint=fingerprint)]


class Recorder:
    """An ``Events`` that records every call, in order."""

    def __init__(self):
        self.calls: list[tuple[str, str, object]] = []
        self.outcomes: dict[str, dict] = {}

    def started(self, job):
        self.calls.append(("started", job["run_id"], None))

    def poll(self, job):
        self.calls.append(("poll", job["run_id"], None))

    def retrying(self, job, reason):
        self.calls.append(("retrying", job["run_id"], reason))

    def finished(self, job, outcome):
        self.calls.append(("finished", job["run_id"], outcome["status"]))
        self.outcomes[job["run_id"]] = outcome


def lock_holders(run_dir: Path) -> list[int]:
    """Pids of processes that have ``run_dir/.lock`` open (the worker training that run)."""
    target = str(run_dir / ".lock")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_run_study_on_a_private_instance(tmp_path):
    """End to end: the driver with ``backend="ray"`` starts its own instance, records every run, shuts it down."""
    from symscale.study import run_study
    from symscale.study.store import Store

    assert not ray.is_initialized()
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(TINY))
    result = run_study(study_file, backend="ray", workers=2, out=tmp_path / "study", quiet=True, report=False)
    assert not ray.is_initialized()  # the private instance is gone
    assert result.counts == {"completed": 2} and result.exit_code == 0
    with Store(tmp_path / "study", create=False) as store:
        runs = store.runs()
        assert [r["status"] for r in runs] == ["completed", "completed"]
        for r in runs:
            assert r["attempts"] == 1 and r["params"] > 0
            assert len(store.evals(r["id"])) == len(read_rows(Path(r["run_dir"]) / "metrics.jsonl")) >= 2


def test_an_error_after_the_private_instance_started_shuts_it_down(tmp_path, capfd, monkeypatch):
    """The store cannot be opened once Ray is up: one line, and Ray is down again."""
    import symscale.study.driver as driver
    from symscale.cli import main
    from symscale.errors import ConfigError

    def unusable_store(*args, **kwargs):
        assert ray.is_initialized()  # the failure comes after the private instance started
        raise ConfigError("study.db: the store cannot be opened")

    monkeypatch.setattr(driver, "Store", unusable_store)
    assert not ray.is_initialized()
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(TINY))
    capfd.readouterr()
    assert main(["study", str(study_file), "--backend", "ray", "--out", str(tmp_path / "study")]) == 2
    assert not ray.is_initialized()
    assert capfd.readouterr().err.splitlines() == ["symscale: error: study.db: the store cannot be opened"]


@pytest.fixture(scope="class")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notice about GPU env var overrides
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.usefixtures("cluster")
class TestSharedInstance:
    def test_runs_complete_failures_are_outcomes_and_inflight_is_bounded(self, tmp_path):
        jobs = make_jobs(tmp_path / "study")
        bad = make_jobs(tmp_path / "bad", "0" * 64, data=str(tmp_path / "missing.xyz"))[:1]
        events = Recorder()
        RayExecutor(workers=2).run(bad + jobs, events)
        assert ray.is_initialized()  # an instance it did not start is left running

        kinds = [c[0] for c in events.calls]
        assert kinds.count("started") == 3 and kinds.count("finished") == 3 and "poll" in kinds
        running = peak = 0
        for kind, _, _ in events.calls:
            running += {"started": 1, "finished": -1}.get(kind, 0)
            peak = max(peak, running)
        assert peak == 2  # three jobs, never more than ``workers`` in flight
        for run_id in events.outcomes:  # each job: started, polled, then finished once
            mine = [c[0] for c in events.calls if c[1] == run_id]
            assert mine[0] == "started" and mine[-1] == "finished" and mine.count("finished") == 1

        failed = events.outcomes[bad[0]["run_id"]]
        assert failed["status"] == "failed"
        assert "missing.xyz" in failed["reason"] and "\n" not in failed["reason"]
        for job in jobs:
            out = events.outcomes[job["run_id"]]
            run_dir = Path(job["run_dir"])
            assert out["status"] == "completed" and out["reason"] is None, out
            assert out["rows"] == read_rows(run_dir / "metrics.jsonl") and len(out["rows"]) >= 2
            assert out["rows"][-1]["tokens"] >= 3000 and out["rows"][-1]["params"] == out["summary"]["params"]
            assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
            assert "returned_files" not in out  # trained in place: the run directory was reachable
            assert out["wall_s"] > 0

    def test_node_local_runs_ship_their_files_back(self, tmp_path, monkeypatch):
        from symscale.train.checkpoint import load_model

        job = make_jobs(tmp_path / "study")[0]
        run_dir = Path(job["run_dir"])
        events = Recorder()
        RayExecutor(workers=1, node_local=True).run([job], events)
        out = events.outcomes[job["run_id"]]
        assert out["status"] == "completed", out
        assert {"checkpoint.pt", "config.yaml", "metrics.jsonl", "summary.json"} <= set(out["returned_files"])
        assert "files" not in out
        # written by the driver side: the run directory holds exactly the returned files (no lock, no temp)
        assert sorted(p.name for p in run_dir.iterdir()) == out["returned_files"]
        assert read_rows(run_dir / "metrics.jsonl") == out["rows"]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["out"] == str(run_dir)
        assert sum(p.numel() for p in load_model(run_dir).parameters()) > 0

        # again, switched on from the environment: the task gets the finished run's files and does not retrain
        monkeypatch.setenv(NODE_LOCAL_ENV, "1")
        before = (run_dir / "checkpoint.pt").read_bytes()
        again = Recorder()
        RayExecutor(workers=1).run([job], again)
        out2 = again.outcomes[job["run_id"]]
        assert out2["status"] == "completed" and out2["rows"] == out["rows"]
        assert (run_dir / "checkpoint.pt").read_bytes() == before

    def test_worker_killed_without_retries_is_a_failed_outcome(self, tmp_path):
        job = make_jobs(tmp_path / "study", tokens=200_000)[0]
        run_dir = Path(job["run_dir"])
        killed: list[int] = []

        class Killer(Recorder):
            def poll(self, j):
                super().poll(j)
                if not killed:
                    for pid in lock_holders(run_dir):
                        os.kill(pid, 9)
                        killed.append(pid)

        events = Killer()
        RayExecutor(workers=1, max_retries=0).run([job], events)
        assert killed
        out = events.outcomes[job["run_id"]]
        assert out["status"] == "failed"
        assert out["reason"] == "Ray worker died (WorkerCrashedError) after 1 attempt(s)"

    def test_interrupt_cancels_outstanding_tasks(self, tmp_path):
        job = make_jobs(tmp_path / "study", tokens=200_000)[0]
        run_dir = Path(job["run_dir"])

        class Interrupt(Recorder):
            def poll(self, j):
                if lock_holders(run_dir):  # training has begun
                    raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            RayExecutor(workers=1).run([job], Interrupt())
        deadline = time.monotonic() + 30
        while (lock_holders(run_dir) or ray.available_resources().get("CPU", 0) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not lock_holders(run_dir)  # the worker training the run was killed
        assert ray.available_resources().get("CPU", 0) == 2
        assert (json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists()
                else {"status": "running"})["status"] == "running"

    def test_connect_checks_the_cluster_and_leaves_a_foreign_connection_open(self, tmp_path):
        jobs = make_jobs(tmp_path / "study")
        with pytest.raises(ConfigError, match=r"^cpus_per_run: 4 CPUs per run but the Ray cluster has 2$"):
            RayExecutor(cpus_per_run=4).connect(jobs)
        with pytest.raises(ConfigError, match=r"^device: 'cuda' runs need a GPU but the Ray cluster has none$"):
            RayExecutor().connect(make_jobs(tmp_path / "study", device="cuda"))
        with pytest.raises(ConfigError, match=r"^gpus_per_run: 0.5 GPU per run but the Ray cluster has none$"):
            RayExecutor(gpus_per_run=0.5).connect(make_jobs(tmp_path / "study", device="auto"))
        executor = RayExecutor()
        executor.connect(jobs)
        executor.connect(jobs)  # connected already: nothing to do
        executor.close()
        executor.close()
        assert ray.is_initialized()  # the connection this process had before is left open

    @pytest.mark.slow  # ~18 s: two worker start-ups and a resumed run
    def test_worker_killed_after_a_checkpoint_is_retried_and_resumes(self, tmp_path):
        job = make_jobs(tmp_path / "study", tokens=6_000, evaluation={"points": 3})[0]
        run_dir = Path(job["run_dir"])
        before_kill: list[list[dict]] = []

        class Killer(Recorder):
            def poll(self, j):
                super().poll(j)
                if not before_kill and (run_dir / "checkpoint.pt").is_file():
                    pids = lock_holders(run_dir)
                    if pids:
                        before_kill.append(read_rows(run_dir / "metrics.jsonl"))
                        for pid in pids:
                            os.kill(pid, 9)

        events = Killer()
        RayExecutor(workers=1, max_retries=1).run([job], events)
        assert before_kill and before_kill[0]
        out = events.outcomes[job["run_id"]]
        assert out["status"] == "completed", out
        assert out["rows"][: len(before_kill[0])] == before_kill[0]  # resumed: earlier points kept as they were
        assert out["rows"][-1]["tokens"] >= 6_000 and len(out["rows"]) > len(before_kill[0])


HEAD = """
import logging, os, sys, warnings
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
import ray
warnings.simplefilter("ignore")
ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
               logging_level=logging.WARNING)
print(ctx.address_info["gcs_address"], flush=True)
sys.stdin.read()  # until the test closes our stdin
ray.shutdown()
"""


@pytest.mark.slow  # ~25 s: a second Ray instance in another process
def test_connects_to_an_existing_cluster_and_leaves_it_running(tmp_path, monkeypatch):
    import subprocess
    import sys

    from symscale.study.ray_probe import probe_address

    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # recent Ray starts a cluster with token authentication
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = head.stdout.readline().strip()
        assert address, "the head process did not start Ray"
        t0 = time.monotonic()
        probe_address(address)  # a real GCS passes the probe, in about a second
        assert time.monotonic() - t0 < 10
        job = make_jobs(tmp_path / "study")[0]
        events = Recorder()
        RayExecutor(address=address).run([job], events)
        assert events.outcomes[job["run_id"]]["status"] == "completed"
        assert not ray.is_initialized()  # disconnected ...
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        try:  # ... but the cluster is still there
            assert ray.cluster_resources().get("CPU") == 2
        finally:
            ray.shutdown()
        assert head.poll() is None
    finally:
        head.stdin.close()
        head.wait(timeout=60)
