"""Studies end to end with the local executor: report, status, resume after SIGKILL of the driver or of a
worker (same evaluation points as an uninterrupted study, none lost, none duplicated), failures recorded."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from symscale.cli import main
from symscale.study import run_study
from symscale.study.store import Store
from symscale.study.worker import read_rows

from study_files import write_study


def snapshot(study_dir: Path) -> dict[str, list[tuple]]:
    """{run id: [(step, tokens, loss), ...]} from the store."""
    with Store(study_dir, create=False) as store:
        return {r["id"]: [(e["step"], e["tokens"], e["loss"]) for e in store.evals(r["id"])]
                for r in store.runs()}


def assert_same_points(got: dict, ref: dict) -> None:
    assert set(got) <= set(ref)
    for run_id, pts in got.items():
        assert [p[:2] for p in pts] == [p[:2] for p in ref[run_id]], run_id
        for (_, _, a), (_, _, b) in zip(pts, ref[run_id]):
            assert a == pytest.approx(b, rel=1e-5), run_id


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study run once without interruption."""
    tmp = tmp_path_factory.mktemp("reference")
    path = write_study(tmp / "study.yaml", tmp / "study")
    result = run_study(path, workers=2, quiet=True)
    return path, result, snapshot(tmp / "study")


def test_study_end_to_end(reference, capsys):
    path, result, ref = reference
    assert result.exit_code == 0 and result.counts == {"completed": 4}
    study_dir = result.study_dir
    assert (study_dir / "report" / "report.html").is_file() and (study_dir / "laws.json").is_file()
    assert (study_dir / "report" / "frontiers.png").is_file()
    with Store(study_dir, create=False) as store:
        runs = store.runs()
        assert {r["grp"] for r in runs} == {"mpnn", "egnn"}
        for r in runs:
            rows = read_rows(Path(r["run_dir"]) / "metrics.jsonl")
            evals = store.evals(r["id"])
            assert [e["step"] for e in evals] == [row["step"] for row in rows] and len(evals) >= 3
            assert r["status"] == "completed" and r["params"] > 0 and r["kappa"] > 0 and r["wall_s"] > 0
            assert r["best_loss"] == pytest.approx(min(e["loss"] for e in evals))
            assert r["tokens"] == r["budget_tokens"] or r["tokens"] >= 2500
    # status prints the table
    assert main(["status", str(study_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 completed" in out and "mpnn" in out and "egnn" in out
    # running again trains nothing and changes nothing
    again = run_study(path, workers=2, quiet=True, report=False)
    assert again.counts == {"completed": 4}
    assert snapshot(study_dir) == ref


def test_edit_adds_only_new_runs(reference, tmp_path):
    path, result, ref = reference
    edited = write_study(tmp_path / "edited.yaml", result.study_dir,
                         architectures=[{"family": "mpnn", "widths": [4, 8, 16]}])
    before = {r["id"]: r["finished_at"] for r in Store(result.study_dir).runs()}
    res = run_study(edited, workers=1, quiet=True, report=False)
    assert res.total == 3 and res.counts == {"completed": 3}
    with Store(result.study_dir) as store:
        after = {r["id"]: r["finished_at"] for r in store.runs()}
    new = set(after) - set(before)
    assert len(new) == 1 and all(after[i] == before[i] for i in before)  # old runs untouched


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _count_evals(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM evals").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_driver_then_resume(reference, tmp_path):
    _, _, ref = reference
    path = write_study(tmp_path / "study.yaml", tmp_path / "study")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "symscale.cli", "study", str(path), "--workers", "2",
                             "--no-report"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "study" / "study.db"
    try:
        assert _wait_for(lambda: _count_evals(db) >= 3), proc.stderr.read() if proc.poll() is not None else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = snapshot(tmp_path / "study")
    assert 3 <= sum(map(len, partial.values())) < sum(map(len, ref.values()))
    # the workers died with the driver: every run lock is free again within a few seconds
    import fcntl

    def locks_free():
        for lock in (tmp_path / "study" / "runs").glob("*/.lock"):
            with open(lock) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
        return True

    assert _wait_for(locks_free, 20)
    result = run_study(path, workers=2, quiet=True, report=False)
    assert result.counts == {"completed": 4}
    final = snapshot(tmp_path / "study")
    assert_same_points(final, ref)
    assert set(final) == set(ref)
    for run_id, pts in partial.items():  # nothing reported before the kill was lost
        assert set(p[:2] for p in pts) <= set(p[:2] for p in final[run_id])


def test_worker_sigkill_is_retried(reference, tmp_path):
    _, _, ref = reference
    path = write_study(tmp_path / "study.yaml", tmp_path / "study",
                       architectures=[{"family": "mpnn", "widths": [4, 8]}])
    victim = {}

    def killer():
        def first_checkpointed():
            for run_dir in (tmp_path / "study" / "runs").glob("*"):
                if (run_dir / "checkpoint.pt").is_file() and (run_dir / ".lock").is_file():
                    pid = (run_dir / ".lock").read_text().strip()
                    if pid:
                        victim.update(run=run_dir.name, pid=int(pid))
                        return True
            return False

        if _wait_for(first_checkpointed, 120):
            os.kill(victim["pid"], signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    result = run_study(path, workers=2, quiet=True, report=False)
    t.join()
    assert victim, "no worker was killed"
    assert result.counts == {"completed": 2}
    with Store(tmp_path / "study") as store:
        attempts = {r["id"]: r["attempts"] for r in store.runs()}
    assert attempts[victim["run"]] == 2
    assert_same_points(snapshot(tmp_path / "study"), ref)


def test_failed_and_diverged_runs_are_recorded(tmp_path, capsys):
    path = write_study(tmp_path / "study.yaml", tmp_path / "study", architectures=[
        {"family": "mpnn", "widths": [4, 8]},
        {"family": "egnn", "widths": [4], "optimizer": {"diverge_grad_norm": 1e-9}},
        {"family": "esen", "widths": [4], "tokens": 10**9},  # more atoms than the data holds: the run fails
    ])
    assert main(["study", str(path), "--workers", "2"]) == 1
    captured = capsys.readouterr()
    with Store(tmp_path / "study") as store:
        runs = {r["grp"]: r for r in store.runs()}
    assert runs["egnn"]["status"] == "diverged" and "gradient norm" in runs["egnn"]["error"]
    assert runs["esen"]["status"] == "failed" and "tokens: 1000000000 exceeds" in runs["esen"]["error"]
    assert "\n" not in runs["esen"]["error"]
    assert "2 completed, 1 diverged, 1 failed" in captured.out
    assert (tmp_path / "study" / "report" / "report.html").is_file()  # the mpnn group is still reported
