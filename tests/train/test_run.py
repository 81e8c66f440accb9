"""End-to-end training runs on a small real dataset (EMT-labelled g2 molecules)."""

from __future__ import annotations

import json

import pytest
import torch

from symscale.train import checkpoint as ckpt
from symscale.train.metrics import METRIC_KEYS, PRECISION_KEYS, SUMMARY_KEYS
from symscale.train.run import run

GEMNET = {"family": "gemnet", "width": 8, "options": {"num_layers": 2, "body_order": 3}}
MPNN = {"family": "mpnn", "width": 8, "options": {"num_layers": 1}}


def config(dataset, **over):
    cfg = {"data": {"path": str(dataset), "val_size": 24}, "model": MPNN, "batch_size": 8,
           "evaluation": {"points": 5}, "optimizer": {"lr": 1e-2, "warmup_steps": 10}}
    cfg.update(over)
    return cfg


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_learns_and_records_contract(emt_dataset, tmp_path):
    run_dir = run(config(emt_dataset, model=GEMNET, epochs=2, evaluation={"points": 4}), out=tmp_path / "r")
    m = rows(run_dir)
    assert [sorted(r) for r in m] == [sorted(METRIC_KEYS + PRECISION_KEYS)] * len(m)
    assert len(m) >= 3
    assert m[-1]["loss"] < 0.7 * m[0]["loss"], [r["loss"] for r in m]
    for a, b in zip(m, m[1:]):
        assert b["tokens"] > a["tokens"] and b["compute"] > a["compute"] and b["step"] > a["step"]
        assert b["flops_measured"] > a["flops_measured"] and b["train_time_s"] >= a["train_time_s"]
    r = m[-1]
    assert r["kappa"] > 0 and r["params"] > 0
    assert r["compute"] == pytest.approx(3 * r["kappa"] * r["params"] * r["tokens"])
    # measured step FLOPs: same order as 3 kappa N D (kappa comes from the drug-like reference batch,
    # whose atoms have more neighbours than these small molecules, so the ratio is below 1 here)
    assert 0.1 < r["flops_measured"] / r["compute"] < 10
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["model"] == "gemnet" and summary["tokens"] == r["tokens"] and summary["steps"] == r["step"]
    assert summary["tokens"] == summary["budget_tokens"]  # epochs: 2 -> exactly two passes
    # the resolved config round-trips and the checkpoint holds the evaluated (schedule-free x) weights
    from symscale.train import load_config
    from symscale.train.loss import LossFunction
    from symscale.train.metrics import evaluate
    from symscale.data.loader import StreamingLoader

    cfg = load_config(run_dir / "config.yaml")
    assert cfg.model.family == "gemnet" and cfg.epochs == 2
    model = ckpt.load_model(run_dir)
    assert not model.training
    ds_val = StreamingLoader(str(emt_dataset), "val", batch_size=8, cutoff=5.0, seed=0, subset=24, shuffle=False)
    norm = ds_val.dataset.normalization
    again = evaluate(model, list(ds_val), LossFunction(norm["energy_scale"], norm["force_scale"]))
    assert again["loss"] == pytest.approx(r["loss"], rel=1e-5)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("variant", [
    {"epochs": 1, "symmetry": {"augment": True}},
    {"tokens": 500, "optimizer": {"name": "adamw", "lr": 3e-3, "warmup_steps": 3},
     "symmetry": {"loss": {"rotations": 2}}, "mup": {"base_width": 4}},
])
def test_resume_reproduces_uninterrupted_run(emt_dataset, tmp_path, variant):
    cfg = config(emt_dataset, evaluation={"points": 6}, seed=3, **variant)
    full = rows(run(cfg, out=tmp_path / "full"))

    def stop_at(step):
        def cb(state):
            if state["step"] == step:
                raise KeyboardInterrupt
        return cb

    mid = full[len(full) // 2]["step"] + 2  # a few steps past a checkpoint, before the next one
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut", callback=stop_at(mid))
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "running" and "interrupted" in summary["reason"]
    assert len(rows(tmp_path / "cut")) < len(full)
    resumed = rows(run(cfg, out=tmp_path / "cut", resume=True))
    assert len(resumed) == len(full)
    for a, b in zip(full, resumed):
        for key in METRIC_KEYS:
            if key != "train_time_s":
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "completed"


def test_injected_nan_marks_run_diverged_and_keeps_points(emt_dataset, tmp_path, monkeypatch):
    from symscale.train import loss as loss_mod

    steps = {"done": 0}
    original = loss_mod.LossFunction.__call__

    def poisoned(self, pred, batch):  # NaN from the 6th training step on
        value = original(self, pred, batch)
        return value * float("nan") if steps["done"] >= 5 else value

    def count(state):
        steps["done"] = state["step"]

    monkeypatch.setattr(loss_mod.LossFunction, "__call__", poisoned)
    run_dir = run(config(emt_dataset, evaluation={"points": 8, "first_tokens": 8}), out=tmp_path / "nan",
                  callback=count)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "non-finite loss" in summary["reason"] and "step 6" in summary["reason"]
    m = rows(run_dir)
    assert m and all(r["step"] <= 5 for r in m)
    assert summary["steps"] == 5


def test_exploding_gradient_marks_run_diverged(emt_dataset, tmp_path):
    run_dir = run(config(emt_dataset, optimizer={"diverge_grad_norm": 1e-9}), out=tmp_path / "g")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "gradient norm" in summary["reason"]
    assert summary["steps"] == 0 and rows(run_dir) == []  # an empty metrics.jsonl: still a run directory


def test_symmetry_loss_and_frame_averaging_multiply_compute(emt_dataset, tmp_path):
    sym = run(config(emt_dataset, tokens=200, symmetry={"loss": {"rotations": 2, "weight": 1.0}}),
              out=tmp_path / "sym")
    plain = run(config(emt_dataset, tokens=200), out=tmp_path / "plain")
    fa = run(config(emt_dataset, tokens=200, symmetry={"frame_averaging": True}), out=tmp_path / "fa")
    s, p, f = rows(sym)[-1], rows(plain)[-1], rows(fa)[-1]
    assert s["compute"] == pytest.approx(3 * s["kappa"] * s["params"] * s["tokens"] * 3)
    assert f["compute"] == pytest.approx(3 * f["kappa"] * f["params"] * f["tokens"] * 8)
    assert s["tokens"] == p["tokens"]
    # measured FLOPs see the extra passes too
    assert s["flops_measured"] > 2.5 * p["flops_measured"]
    assert f["flops_measured"] > 6 * p["flops_measured"]
    assert json.loads((sym / "summary.json").read_text())["variant"] == "symloss2"
    from symscale.train.symmetry import FrameAveraging

    assert isinstance(ckpt.load_model(fa), FrameAveraging)
    assert not isinstance(ckpt.load_model(fa, frame_averaging=False), FrameAveraging)


def test_adamw_cosine_run_completes(emt_dataset, tmp_path):
    run_dir = run(config(emt_dataset, tokens=300, optimizer={"name": "adamw", "lr": 3e-3, "warmup_steps": 2}),
                  out=tmp_path / "adamw")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    state = ckpt.load_checkpoint(run_dir)
    assert "exp_avg" in next(iter(state["optimizer"]["state"].values()))
    # the cosine schedule is token based: at the end the learning rate is near min_lr_ratio * lr = 0
    assert state["optimizer"]["param_groups"][0]["lr"] < 3e-3 * 0.2


def test_existing_run_requires_resume_and_same_config(emt_dataset, tmp_path):
    from symscale.errors import ConfigError

    cfg = config(emt_dataset, tokens=100)
    run(cfg, out=tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume"):
        run(cfg, out=tmp_path / "r")
    with pytest.raises(ConfigError, match="^seed: differs"):
        run(dict(cfg, seed=5), out=tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="^tokens: .* exceeds"):
        run(config(emt_dataset, tokens=10**9), out=tmp_path / "big")
    assert not (tmp_path / "big").exists()
    with pytest.raises(ConfigError, match="^data.subset: 100000 structures requested"):
        run(config(emt_dataset, data={"path": str(emt_dataset), "subset": 100000}), out=tmp_path / "sub")
    with pytest.raises(ConfigError, match="unknown option 'depth'"):
        run(config(emt_dataset, model={"family": "mpnn", "width": 8, "options": {"depth": 2}}), out=tmp_path / "m")
    from symscale.errors import DataError

    with pytest.raises(DataError, match="no such file"):
        run(config(tmp_path / "missing"), out=tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in ("sub", "m", "d"))


def test_multi_epoch_over_a_fixed_subset(emt_dataset, tmp_path):
    from symscale.data.loader import StreamingLoader

    run_dir = run(config(emt_dataset, data={"path": str(emt_dataset), "val_size": 8, "subset": 16},
                         epochs=2.5, evaluation={"points": 3}), out=tmp_path / "sub")
    summary = json.loads((run_dir / "summary.json").read_text())
    per_epoch = StreamingLoader(str(emt_dataset), "train", subset=16, seed=0).tokens_per_epoch
    assert summary["budget_tokens"] == round(2.5 * per_epoch)
    assert summary["budget_tokens"] <= summary["tokens"] < summary["budget_tokens"] + per_epoch
    # 16 structures / batch 8 = 2 steps per epoch; 2.5 epochs of atoms are reached in the 5th or 6th step
    # (the 5th batch holds about, not exactly, half of the subset's atoms)
    assert summary["steps"] in (5, 6)
    assert summary["variant"] == "subset16x2.5" and summary["status"] == "completed"


def test_run_stopped_before_first_evaluation_can_start_again(emt_dataset, tmp_path):
    def stop(state):
        raise KeyboardInterrupt

    cfg = config(emt_dataset, tokens=100)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "r", callback=stop)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    run(cfg, out=tmp_path / "r")  # nothing to keep: starts fresh without --resume
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "completed"


def test_float64_run_and_model(emt_dataset, tmp_path):
    run_dir = run(config(emt_dataset, tokens=100, dtype="float64", mup={"base_width": 4, "lr": 0.01}),
                  out=tmp_path / "f64")
    groups = json.loads((run_dir / "summary.json").read_text())["lr_groups"]
    assert groups["hidden"]["lr"] == pytest.approx(0.01 * 4 / 8) and groups["other"]["lr"] == 0.01
    model = ckpt.load_model(run_dir)
    assert next(model.parameters()).dtype == torch.float64
    saved = ckpt.load_checkpoint(run_dir)["model_state"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # bit-exact, not rounded through float32
    assert json.loads((run_dir / "summary.json").read_text())["dtype"] == "float64"
