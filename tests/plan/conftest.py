"""Fixtures of the planner tests: fit documents of synthetic groups, as files, fit directories and studies."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "laws"))   # synth.py

from synth import make_group  # noqa: E402

from symscale import laws  # noqa: E402
from symscale.outputs import stamp  # noqa: E402


def _groups() -> dict:
    """Two groups of 5 runs × 12 checkpoints with wall time: ``b`` has the larger α (better at large C)."""
    return {"a": make_group("a", n_runs=5, n_ckpt=12, seed=1),
            "b": make_group("b", n_runs=5, n_ckpt=12, seed=2, alpha=0.55, A=80.0)}


@pytest.fixture(scope="session")
def fit_doc() -> dict:
    """The fit document (as read back from JSON) of :func:`synth_groups` with 200 bootstrap replicates."""
    doc = laws.to_json(laws.analyse(_groups(), n_boot=200, seed=0), {"bootstrap": 200})
    return json.loads(json.dumps(doc, allow_nan=False))


@pytest.fixture
def fit_file(tmp_path, fit_doc) -> Path:
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(stamp(fit_doc, "fit")))
    return path


@pytest.fixture
def synth_groups() -> dict:
    return _groups()


@pytest.fixture
def fake_study():
    """``make(study_dir, groups, bootstrap)``: a study directory holding only a ``study.db`` store with the
    checkpoints of ``groups`` (no training) and report settings ``bootstrap``, seed 0."""
    return _fake_study


def _fake_study(study_dir: Path, groups: dict, bootstrap: int = 50) -> Path:
    from symscale.study.store import Store

    study_dir.mkdir(parents=True)
    ids = []
    with Store(study_dir) as store:
        for g in groups.values():
            for r, label in enumerate(g.run_names):
                idx = np.flatnonzero(g.run == r)
                config = SimpleNamespace(model_dump=lambda mode=None: {})
                store.add_runs([SimpleNamespace(id=label, group=g.name, family=g.name, width=r, seed=0,
                                                run_dir=study_dir / label, config=config)])
                rows = [{"step": k, "tokens": int(g.D[i]), "params": int(g.N[i]), "compute": float(g.C[i]),
                         "train_time_s": float(g.H[i]), "loss": float(g.loss[i]), "kappa": g.kappa}
                        for k, i in enumerate(idx)]
                store.finish(label, {"status": "completed", "rows": rows,
                                     "summary": {"params": int(g.N[idx[0]]), "kappa": g.kappa}})
                ids.append(label)
        store.set_meta("study", {"name": "fake", "run_ids": ids,
                                 "config": {"report": {"bootstrap": bootstrap, "seed": 0}}})
    return study_dir
