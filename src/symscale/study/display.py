"""Live progress of a study: runs done/total, tokens of the running runs, ETA (rich, on a terminal).

Off a terminal (CI logs, files) or with ``quiet`` there is no live bar; one line per run start and end is
printed instead (nothing at all when ``quiet``).
"""

from __future__ import annotations

import sys
import time


class Display:
    def __init__(self, plan, quiet: bool = False):
        self.quiet = quiet
        self.live = not quiet and sys.stdout.isatty()
        self.budget = {p.id: p.config.tokens for p in plan}  # None for an epoch budget: read later
        self.bar = None
        self.t0 = time.perf_counter()

    def start(self, n_todo: int, backend: str) -> None:
        self.n_todo = n_todo
        self.n_done = 0
        if not self.quiet:
            print(f"== {n_todo} runs to train ({backend} executor)", flush=True)
        if self.live and n_todo:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn())
            self.runs_task = self.bar.add_task("runs", total=n_todo)
            self.run_tasks: dict[str, int] = {}
            self.bar.start()

    def started(self, job: dict) -> None:
        if self.bar is not None:
            if job["run_id"] not in self.run_tasks:
                self.run_tasks[job["run_id"]] = self.bar.add_task(
                    f"  {job['run_id']}", total=self.budget.get(job["run_id"]) or None)
        elif not self.quiet:
            print(f"  start  {job['run_id']}", flush=True)

    def progress(self, job: dict, tokens: int, budget: int | None = None) -> None:
        if self.bar is not None and job["run_id"] in self.run_tasks:
            self.bar.update(self.run_tasks[job["run_id"]], completed=tokens, total=budget or None)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif not self.quiet:
            print(f"  {text}", flush=True)

    def finished(self, job: dict, outcome: dict) -> None:
        self.n_done += 1
        status, reason = outcome["status"], outcome.get("reason")
        final = (outcome.get("summary") or {}).get("final") or {}
        loss = f"val loss {final['loss']:.4g}" if isinstance(final.get("loss"), (int, float)) else ""
        line = (f"  {status:<9} {job['run_id']}  {loss}  {outcome.get('wall_s', 0):.0f} s  "
                f"[{self.n_done}/{self.n_todo}]" + (f"  ({reason})" if reason and status != "completed" else ""))
        if self.bar is not None:
            self.bar.update(self.runs_task, advance=1)
            task = self.run_tasks.pop(job["run_id"], None)
            if task is not None:
                self.bar.remove_task(task)
            self.bar.console.print(line)
        elif not self.quiet:
            print(line, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

