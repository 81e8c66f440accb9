"""A non-finite validation loss ends the run as `diverged` (library and `symscale train`), never a crash."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
import yaml

from symscale.cli import main
from symscale.train.run import run

run_module = importlib.import_module("symscale.train.run")  # `symscale.train.run` itself is the function


def config(dataset):
    return {"data": {"path": str(dataset), "val_size": 16}, "batch_size": 8, "tokens": 400,
            "model": {"family": "mpnn", "width": 8, "options": {"num_layers": 1}},
            "evaluation": {"points": 4, "first_tokens": 8}, "name": "nanval"}


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def nan_from_second_evaluation(monkeypatch):
    """The validation metrics turn NaN from the second evaluation on (the training loss stays finite)."""
    real = run_module.evaluate
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        return {k: float("nan") for k in out} if calls["n"] >= 2 else out

    monkeypatch.setattr(run_module, "evaluate", poisoned)
    return calls


def test_nonfinite_validation_loss_ends_run_as_diverged(emt_dataset, tmp_path, nan_from_second_evaluation):
    run_dir = run(config(emt_dataset), out=tmp_path / "r")
    summary = json.loads((run_dir / "summary.json").read_text())
    m = rows(run_dir)
    assert len(m) == 2 and math.isfinite(m[0]["loss"]) and m[1]["loss"] == "nan"
    assert summary["status"] == "diverged"
    assert summary["reason"] == f"non-finite validation loss at step {m[1]['step']}"
    # "final" is the last finite evaluation: the one whose weights checkpoint.pt holds
    assert summary["final"]["step"] == m[0]["step"] and summary["final"]["loss"] == m[0]["loss"]
    from symscale.train.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir)["counters"]["step"] == m[0]["step"]


def test_train_command_reports_diverged_run(emt_dataset, tmp_path, capsys, nan_from_second_evaluation):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(config(emt_dataset)))
    assert main(["train", str(p), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    line = capsys.readouterr().out
    assert "nanval: diverged" in line and "non-finite validation loss at step" in line


def test_nan_weights_at_an_evaluation_end_run_as_diverged(emt_dataset, tmp_path, monkeypatch):
    """A real NaN: the weights are poisoned right after the step that triggers the first evaluation."""
    state = {"poisoned_at": None}
    net_holder = {}
    real_prepare = run_module.prepare

    def prepare(*args, **kwargs):
        setup = real_prepare(*args, **kwargs)
        net_holder["model"] = setup.model
        return setup

    def callback(info):
        if state["poisoned_at"] is None:
            with torch.no_grad():
                for p in net_holder["model"].parameters():
                    p.fill_(float("nan"))
            state["poisoned_at"] = info["step"]

    monkeypatch.setattr(run_module, "prepare", prepare)
    run_dir = run(config(emt_dataset), out=tmp_path / "w", callback=callback)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["reason"] == f"non-finite validation loss at step {state['poisoned_at']}"
    assert "final" not in summary  # no finite evaluation to report
    assert not (run_dir / "checkpoint.pt").exists()
