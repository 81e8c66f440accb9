"""symscale.train.compile: the CPU allocator setting and the per-run torch.compile decision."""

from __future__ import annotations

import subprocess
import sys

import pytest

import torch

from symscale.train.compile import CompileGate, compile_decision

_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "1":
    from symscale.train.compile import configure_cpu_allocator
    assert configure_cpu_allocator() and configure_cpu_allocator()  # idempotent
def step():  # a training step's pattern: activations of a few MB, alive together, then all freed
    xs = [torch.ones(1_000_000) * k for k in range(10)]
    return float(sum(x[0] for x in xs))
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_step(configured: bool) -> float:
    out = subprocess.run([sys.executable, "-c", _FAULTS, "1" if configured else "0"], capture_output=True,
                         text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting (Linux only)")
def test_allocator_setting_removes_page_faults_of_repeated_activations():
    """With the thresholds raised, freed activations are reused instead of returned to the system: the
    40 MB a step allocates (10,000 pages; glibc's defaults fault ~1,400 of them again every step here) no
    longer fault after the first steps. Both counts vary with the host's page handling (measured on one
    machine: default 241-2,183, configured 0-146 per step; huge pages fault far fewer times), so the test
    compares them, and skips where the defaults fault too little for a comparison to mean anything."""
    plain, configured = _faults_per_step(False), _faults_per_step(True)
    print(f"minor page faults per step: default {plain:.0f}, configured {configured:.0f}")
    if plain < 100:
        pytest.skip(f"glibc's defaults fault only {plain:.0f} pages per step on this host: nothing to remove")
    assert configured < 0.25 * plain


def test_conservative_models_are_never_compiled():
    d = compile_decision(True, "conservative", steps=10**6, eager_step_s=1.0)
    assert not d.compile and "double backward" in d.reason


def test_explicit_setting_wins_for_direct_models():
    assert compile_decision(True, "direct", steps=1, eager_step_s=0.001).compile
    assert not compile_decision(False, "direct", steps=10**7, eager_step_s=1.0).compile


def test_auto_compiles_only_when_the_projected_saving_pays_back():
    # saving = steps * step * (1 - 1/1.15); needed = 2 * 120 s: break-even at ~1,840 s of eager training
    short = compile_decision("auto", "direct", steps=600, eager_step_s=0.3)  # a paper_mini run: 23 s saved
    long = compile_decision("auto", "direct", steps=100_000, eager_step_s=0.3)  # 3,900 s saved
    assert not short.compile and "is below" in short.reason
    assert long.compile and "exceeds" in long.reason
    assert not compile_decision("auto", "direct", steps=10**9, eager_step_s=1.0, speedup=1.0).compile


def test_bad_setting_is_an_error():
    with pytest.raises(ValueError, match="auto"):
        compile_decision("sometimes", "direct", steps=10, eager_step_s=1.0)


class _Counting(torch.nn.Module):
    def forward(self, x):
        return x


def test_gate_auto_times_eager_steps_then_decides_in_place():
    gate = CompileGate("auto", "direct", _Counting(), warmup=1, timed=3)
    record = gate.record
    assert gate.pending and not record["compiled"]
    for _ in range(3):  # one warm-up step and two timed: still eager
        gate.observe(0.01, remaining_steps=500)
    assert gate.pending and gate.forward is not None
    gate.observe(0.01, remaining_steps=500)  # third timed step: 500 × 10 ms never pays back a compile
    assert not gate.pending and record is gate.record and not record["compiled"]
    assert "is below" in record["reason"]
    long = CompileGate("auto", "direct", _Counting(), warmup=0, timed=1)
    long.observe(0.5, remaining_steps=10**6)
    assert long.record["compiled"] and long._fwd is not long.net  # the compiled wrapper (compiles lazily)


def test_gate_settings_decided_at_once_and_short_runs_not_left_pending():
    assert not CompileGate(False, "direct", _Counting()).pending
    assert CompileGate(True, "direct", _Counting()).record["compiled"]
    with pytest.warns(UserWarning, match="double backward"):
        gate = CompileGate(True, "conservative", _Counting())
    assert not gate.record["compiled"]
    short = CompileGate("auto", "direct", _Counting())
    short.observe(0.1, remaining_steps=0)
    assert not short.pending and "before 6 were timed" in short.record["reason"]


def test_run_records_the_compile_decision(emt_dataset, tmp_path):
    """``compile: auto`` on a run of a few dozen steps: timed, not compiled, and the reason in summary.json;
    the run id does not depend on the setting."""
    import json

    from symscale.train.config import parse_config
    from symscale.train.run import run

    cfg = {"data": {"path": str(emt_dataset), "val_size": 24}, "batch_size": 8, "evaluation": {"points": 3},
           "model": {"family": "mpnn", "width": 8, "options": {"num_layers": 1}}, "compile": "auto"}
    run_dir = run(cfg, out=tmp_path / "r")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["compile"]["setting"] == "auto" and summary["compile"]["compiled"] is False
    assert not summary["compile"]["reason"].startswith("pending")
    assert parse_config(cfg).run_id() == parse_config({**cfg, "compile": False}).run_id()


@pytest.mark.slow
def test_compiled_run_trains_like_the_eager_one(emt_dataset, tmp_path):
    """``compile: true`` really compiles the training forward (tens of seconds on 2 cores) and trains the
    same model: the validation losses of the compiled and eager runs agree to float tolerance."""
    import json

    from symscale.train.run import run

    cfg = {"data": {"path": str(emt_dataset), "val_size": 24}, "batch_size": 8, "evaluation": {"points": 3},
           "model": {"family": "mpnn", "width": 8, "options": {"num_layers": 1}}, "tokens": 400}
    losses = {}
    for setting in (False, True):
        run_dir = run({**cfg, "compile": setting}, out=tmp_path / str(setting))
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["compile"]["compiled"] is setting
        losses[setting] = [json.loads(r)["loss"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
