"""A stand-in worker target for the local executor: records the environment it was started with.

Standard library only, so a spawned worker importing it starts in a fraction of a second.
"""

import json
import os
from pathlib import Path


def record_env(job: dict) -> None:
    """Write ``CUDA_VISIBLE_DEVICES`` and the pid into ``<run_dir>/env.json`` and a completed outcome."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "env.json").write_text(json.dumps({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                  "pid": os.getpid()}))
    (run_dir / "outcome.json").write_text(json.dumps({"run_id": job["run_id"], "status": "completed",
                                                      "reason": None, "summary": None}))
