"""Training one study run inside an executor's worker (a local process or a Ray task).

:func:`execute` is the only entry point: it takes a job (``PlannedRun.job()``), trains or resumes it in its
run directory and returns an *outcome*, a plain dict that the driver records::

    {"run_id", "status": "completed" | "diverged" | "failed", "reason": str | None,
     "summary": dict | None, "rows": [evaluation records], "wall_s": float}

Workers never touch the study store; the driver alone writes it. A worker holds an exclusive ``flock`` on
``<run_dir>/.lock`` while it trains, so two processes can never train one run directory at once (e.g. a
worker orphaned by a killed driver, although local workers are also asked to die with their parent).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..atomic import write_text
from ..outputs import mark_dir

PROGRESS_NAME = "progress.json"
OUTCOME_NAME = "outcome.json"
FINAL = ("completed", "diverged")


def read_rows(path: Path) -> list[dict]:
    """The evaluation records of ``metrics.jsonl``; a torn last line (a writer killed mid-line) is ignored."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def run_lock(run_dir: Path, timeout: float = 120.0) -> Iterator[None]:
    """Exclusive lock on ``run_dir/.lock`` (which then holds this process id); waits up to ``timeout`` s
    (a dying holder releases it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    mark_dir(run_dir, "run")
    fh = open(run_dir / ".lock", "a")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fh.truncate(0)
                fh.write(f"{os.getpid()}\n")  # who trains this run (for `kill`, and for the tests)
                fh.flush()
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{run_dir}: another process is training this run") from None
                time.sleep(0.2)
        yield
    finally:
        fh.close()


def _clear_unstarted(run_dir: Path) -> None:
    """A run killed before its first checkpoint left files but nothing to resume: start it afresh."""
    for name in ("metrics.jsonl", "summary.json", "config.yaml", PROGRESS_NAME):
        (run_dir / name).unlink(missing_ok=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def execute(job: dict, threads: int = 1) -> dict:
    """Train (or resume, or just report) the run described by ``job``; never raises for a run's own failure.

    A run already ``completed`` or ``diverged`` in its directory is not trained again. Configuration and
    data errors and crashes become ``status: failed`` with a one-line reason (the traceback goes to
    ``<run_dir>/error.log``). KeyboardInterrupt propagates.
    """
    import torch

    from ..errors import SymscaleError
    from ..train.checkpoint import CHECKPOINT_NAME
    from ..train.run import run

    torch.set_num_threads(max(1, int(threads)))
    run_dir = Path(job["run_dir"])
    t0 = time.perf_counter()
    with run_lock(run_dir):
        (run_dir / OUTCOME_NAME).unlink(missing_ok=True)
        summary = read_json(run_dir / "summary.json")
        if summary is None or summary.get("status") not in FINAL:
            resume = (run_dir / CHECKPOINT_NAME).is_file()
            if not resume:
                _clear_unstarted(run_dir)
            last = [0.0]

            def progress(info: dict) -> None:
                now = time.monotonic()
                if now - last[0] >= 1.0:
                    last[0] = now
                    write_text(run_dir / PROGRESS_NAME, json.dumps(
                        {"tokens": info["tokens"], "step": info["step"], "loss": info["loss"]}))

            try:
                run(job["config"], out=run_dir, resume=resume, quiet=True, callback=progress)
            except SymscaleError as exc:
                return _finish(run_dir, job, "failed", _one_line(exc), t0)
            except Exception as exc:  # a crash inside training: record it, keep the study going
                write_text(run_dir / "error.log", traceback.format_exc())
                return _finish(run_dir, job, "failed", f"{type(exc).__name__}: {_one_line(exc)}", t0)
        summary = read_json(run_dir / "summary.json") or {}
        return _finish(run_dir, job, str(summary.get("status", "failed")), summary.get("reason"), t0)


def _finish(run_dir: Path, job: dict, status: str, reason: str | None, t0: float) -> dict:
    outcome = {"run_id": job["run_id"], "status": status, "reason": reason,
               "summary": read_json(run_dir / "summary.json"), "rows": read_rows(run_dir / "metrics.jsonl"),
               "wall_s": time.perf_counter() - t0}
    write_text(run_dir / OUTCOME_NAME, json.dumps({k: v for k, v in outcome.items() if k != "rows"}))
    return outcome


def process_main(job: dict) -> None:
    """Entry point of a local worker process: one thread, die with the parent, write ``outcome.json``."""
    os.environ["OMP_NUM_THREADS"] = "1"
    _die_with_parent()
    try:
        execute(job, threads=1)
    except KeyboardInterrupt:
        pass


def _die_with_parent() -> None:
    """Linux: deliver SIGKILL to this process when the driver that started it dies (prctl PDEATHSIG)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent already died before the call
            os._exit(1)
    except (OSError, AttributeError):
        pass
