"""GPU placement of local study workers (`--gpus`, `--runs-per-gpu`) and Ray's `gpus_per_run`, without a GPU:
device counts and environments are faked, and a spawned worker reports the CUDA_VISIBLE_DEVICES it got."""

from __future__ import annotations

import json
import os

import pytest

from symscale.errors import ConfigError
from symscale.study import devices
from symscale.study.devices import GpuPlan, GpuPool, child_env, plan_gpus, select_gpus, visible_gpus
from symscale.study.driver import make_executor
from symscale.study.executor import LocalExecutor

from cli_helpers import assert_one_line_error, run_cli
from study_files import write_study


def test_visible_gpus_follow_the_device_count_and_the_driver_environment():
    assert visible_gpus({}, count=0) == []
    assert visible_gpus({}, count=3) == ["0", "1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4,5, 7"}, count=3) == ["4", "5", "7"]
    uuids = "GPU-1a2b,MIG-3c4d"
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": uuids}, count=2) == ["GPU-1a2b", "MIG-3c4d"]
    # CUDA stops at an empty or negative entry, and reports no more devices than exist
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,-1,3"}, count=1) == ["2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=0) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, count=2) == ["0", "1"]


def test_select_gpus_by_count_or_index():
    visible = ["4", "5", "6", "7"]
    assert select_gpus(None, visible) == visible
    assert select_gpus("2", visible) == ["4", "5"]
    assert select_gpus("1,3", visible) == ["5", "7"]
    assert select_gpus("2,", visible) == ["6"]
    for spec, message in [("5", "--gpus: 5 GPUs requested but this machine has 4 GPUs"),
                          ("0", "--gpus: must be at least 1 (got 0)"),
                          ("-2", "--gpus: must be at least 1 (got -2)"),
                          ("0,4", "--gpus: GPU 4 requested but this machine has 4 GPUs (0..3)"),
                          ("1,-1", "--gpus: GPU index -1 is negative"),
                          ("1,1", "--gpus: GPU 1 is listed twice"),
                          ("two", "--gpus: 'two' is neither a count nor a comma-separated list"),
                          (",", "--gpus: ',' names no GPU")]:
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            select_gpus(spec, visible)


def test_plan_gpus():
    env = {"CUDA_VISIBLE_DEVICES": "2,3,5"}
    assert plan_gpus("cpu", environ=env, count=3) is None  # CPU runs: nothing changes
    assert plan_gpus("auto", environ={}, count=0) is None  # auto on a machine without a GPU
    assert plan_gpus("cuda", environ={}, count=0) is None  # (the executor's device check refuses it)
    plan = plan_gpus("auto", environ=env, count=3)
    assert plan == GpuPlan(("2", "3", "5"), 1) and plan.slots == 3
    plan = plan_gpus("cuda", gpus="0,2", runs_per_gpu=3, environ=env, count=3)
    assert plan == GpuPlan(("2", "5"), 3) and plan.slots == 6
    with pytest.raises(ConfigError, match="^--gpus: the study's runs have device: cpu; set device: cuda or auto"):
        plan_gpus("cpu", gpus="1", environ=env, count=3)
    with pytest.raises(ConfigError, match="^--runs-per-gpu: the study's runs have device: cpu"):
        plan_gpus("cpu", runs_per_gpu=2, environ=env, count=3)
    with pytest.raises(ConfigError, match="^--gpus: GPUs requested but this machine has none$"):
        plan_gpus("auto", gpus="1", environ={}, count=0)
    with pytest.raises(ConfigError, match="^--runs-per-gpu: must be at least 1 \\(got 0\\)$"):
        plan_gpus("cuda", runs_per_gpu=0, environ=env, count=3)
    with pytest.raises(ConfigError, match="^--gpus: 4 GPUs requested but this machine has 3 GPUs$"):
        plan_gpus("cuda", gpus="4", environ=env, count=3)


def test_pool_gives_the_least_loaded_gpu():
    pool = GpuPool(("a", "b"))
    assert [pool.acquire() for _ in range(5)] == ["a", "b", "a", "b", "a"]
    pool.release("b")
    pool.release("b")
    assert pool.acquire() == "b"
    with pytest.raises(ValueError, match="holds no run"):
        GpuPool(("a",)).release("a")


def test_make_executor_defaults_to_one_worker_per_gpu_slot(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ex = make_executor("local", None, None, 2, device="auto")
    assert (ex.workers, ex.gpus) == (2, ("0", "1"))
    ex = make_executor("local", None, None, 2, device="cuda", runs_per_gpu=3)
    assert (ex.workers, ex.gpus) == (6, ("0", "1"))
    ex = make_executor("local", 5, None, 2, device="cuda", gpus="1,")
    assert (ex.workers, ex.gpus) == (5, ("1",))  # --workers wins; the runs share GPU 1
    ex = make_executor("local", None, None, 2, device="cpu")
    assert (ex.workers, ex.gpus) == (os.cpu_count() or 1, None)  # CPU runs as before
    with pytest.raises(ConfigError, match="^--gpus-per-run: only meaningful with --backend ray"):
        make_executor("local", None, None, 2, device="cuda", gpus_per_run=0.5)
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="^--runs-per-gpu: only meaningful with --backend local"):
        make_executor("ray", None, None, 2, device="cuda", runs_per_gpu=2)
    assert make_executor("ray", None, None, 2, device="auto", gpus_per_run=0.25).gpus_per_run == 0.25


def test_cli_gpu_options_are_checked_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    path = write_study(tmp_path / "s.yaml", tmp_path / "study")  # device: cpu
    assert_one_line_error(*run_cli(["study", path, "--gpus", "1"], capsys)[::2],
                          "--gpus: the study's runs have device: cpu")
    path = write_study(tmp_path / "s.yaml", tmp_path / "study", device="auto")
    assert_one_line_error(*run_cli(["study", path, "--gpus", "2"], capsys)[::2],
                          "--gpus: GPUs requested but this machine has none")
    assert_one_line_error(*run_cli(["study", path, "--runs-per-gpu", "0"], capsys)[::2],
                          "--runs-per-gpu: must be at least 1 (got 0)")
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert_one_line_error(*run_cli(["study", path, "--gpus", "3"], capsys)[::2],
                          "--gpus: 3 GPUs requested but this machine has 2 GPUs")
    assert_one_line_error(*run_cli(["study", path, "--gpus", "0"], capsys)[::2], "--gpus: must be at least 1")
    assert not (tmp_path / "study").exists()


class Recorder:
    def __init__(self):
        self.outcomes: dict[str, dict] = {}

    def started(self, job):
        pass

    def poll(self, job):
        pass

    def retrying(self, job, reason):
        raise AssertionError(reason)

    def finished(self, job, outcome):
        self.outcomes[job["run_id"]] = outcome


def test_spawned_workers_see_their_own_gpu(tmp_path, monkeypatch):
    from env_probe import record_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "driver-value")
    jobs = [{"run_id": f"r{k}", "config": {"device": "cuda"}, "run_dir": str(tmp_path / f"r{k}")}
            for k in range(3)]
    events = Recorder()
    LocalExecutor(workers=2, gpus=("3", "5"), target=record_env).run(jobs, events)
    assert {k: v["status"] for k, v in events.outcomes.items()} == {"r0": "completed", "r1": "completed",
                                                                    "r2": "completed"}
    seen = {j["run_id"]: json.loads((tmp_path / j["run_id"] / "env.json").read_text()) for j in jobs}
    assert seen["r0"]["CUDA_VISIBLE_DEVICES"] == "3" and seen["r1"]["CUDA_VISIBLE_DEVICES"] == "5"
    assert seen["r2"]["CUDA_VISIBLE_DEVICES"] in ("3", "5")
    assert len({s["pid"] for s in seen.values()}) == 3 and os.getpid() not in {s["pid"] for s in seen.values()}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "driver-value"  # the driver's own environment is restored
    # CPU runs: no GPU pinning, the worker inherits the driver's environment unchanged
    LocalExecutor(workers=1, target=record_env).run(
        [{"run_id": "c", "config": {"device": "cpu"}, "run_dir": str(tmp_path / "c")}], Recorder())
    assert json.loads((tmp_path / "c" / "env.json").read_text())["CUDA_VISIBLE_DEVICES"] == "driver-value"


def test_child_env_restores_unset_variables(monkeypatch):
    monkeypatch.delenv("SYMSCALE_TEST_VAR", raising=False)
    with child_env({"SYMSCALE_TEST_VAR": "1"}):
        assert os.environ["SYMSCALE_TEST_VAR"] == "1"
    assert "SYMSCALE_TEST_VAR" not in os.environ


def test_ray_task_options_request_gpus_per_run():
    from symscale.study.ray_backend import check_gpus_per_run, task_options

    def opts(device, gpus_per_run):
        return task_options({"run_id": "r", "config": {"device": device}}, cpus_per_run=2,
                            gpus_per_run=gpus_per_run, max_retries=1)

    # without gpus_per_run: one GPU for cuda runs only, and no visible GPU for the others
    assert opts("cuda", None)["num_gpus"] == 1
    assert "CUDA_VISIBLE_DEVICES" not in opts("cuda", None)["runtime_env"]["env_vars"]
    assert opts("auto", None)["num_gpus"] == 0
    assert opts("auto", None)["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == ""
    # with it: cuda and auto runs share GPUs, cpu runs take none
    assert opts("cuda", 0.25)["num_gpus"] == 0.25 and opts("auto", 0.5)["num_gpus"] == 0.5
    assert opts("cpu", 0.5)["num_gpus"] == 0
    full = opts("auto", 1.0)
    assert full == {"num_cpus": 2, "num_gpus": 1.0, "max_retries": 1, "retry_exceptions": False,
                    "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}},
                    "name": "symscale-r"}
    assert check_gpus_per_run(None) is None and check_gpus_per_run(1) == 1.0
    for bad in (0, -0.5, 1.5, 2, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"^gpus_per_run: must be in \(0, 1\]"):
            check_gpus_per_run(bad)
