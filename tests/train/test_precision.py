"""Precision options: bfloat16 autocast with float32 weights (CPU and CUDA), TF32 matmuls, what metrics.jsonl
records, and run ids that the new options leave unchanged at their defaults."""

from __future__ import annotations

import json

import pytest
import torch

from symscale.errors import ConfigError
from symscale.train.config import RunConfig, parse_config
from symscale.train.precision import Precision, resolve_precision

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(emt_dataset, **changes) -> dict:
    return {"data": {"path": str(emt_dataset), "val_size": 16}, "batch_size": 8, "tokens": 300,
            "model": {"family": "mpnn", "width": 8, "options": {"num_layers": 1}}, "evaluation": {"points": 3},
            "device": "cpu", **changes}


def test_bfloat16_autocast_on_cpu_trains_and_records_its_precision(emt_dataset, tmp_path):
    from symscale.train.checkpoint import load_checkpoint
    from symscale.train.run import run

    out = run(tiny(emt_dataset, dtype="bfloat16"), out=tmp_path / "bf16")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and len(rows) >= 2
    assert all(r["precision"] == "bfloat16" and r["tf32"] is False for r in rows)
    assert (summary["precision"], summary["tf32"], summary["dtype"]) == ("bfloat16", False, "bfloat16")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    # float32 master weights: the checkpoint holds float32 tensors
    state = load_checkpoint(out / "checkpoint.pt", map_location="cpu", resume=True)["model_state"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    # FLOP accounting does not depend on precision; the losses do (bf16 rounding), a little
    ref = run(tiny(emt_dataset), out=tmp_path / "fp32")
    ref_rows = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in ref_rows] == ["float32"] * len(ref_rows)
    assert [(r["tokens"], r["compute"], r["flops_measured"]) for r in rows] == \
        [(r["tokens"], r["compute"], r["flops_measured"]) for r in ref_rows]
    assert rows[-1]["loss"] != ref_rows[-1]["loss"]
    assert rows[-1]["loss"] == pytest.approx(ref_rows[-1]["loss"], rel=0.1)


def test_autocast_runs_the_model_in_bfloat16_and_returns_float32():
    from symscale.data.loader import StreamingLoader
    from symscale.models import build

    batch = next(iter(StreamingLoader(None, "train", batch_size=2, cutoff=5.0)))
    model = build("mpnn", 8, cutoff=5.0, num_layers=1)
    prec = resolve_precision("bfloat16", False, torch.device("cpu"))
    with prec.autocast_context():
        raw = model(batch)
        pred = prec.outputs(raw)
    assert raw["forces"].dtype == torch.bfloat16  # autocast is on: the forces come out of bf16 matmuls
    assert {k: v.dtype for k, v in pred.items()} == {k: torch.float32 for k in raw}
    plain = resolve_precision("float32", False, torch.device("cpu"))
    with plain.autocast_context():
        assert model(batch)["forces"].dtype == torch.float32
    ref = {k: v.detach() for k, v in model(batch).items()}
    pred = {k: v.detach() for k, v in pred.items()}
    for key in ("energy", "forces"):  # the same function, to bf16 rounding
        scale = float(ref[key].abs().max()) + 1e-3
        assert float((pred[key] - ref[key]).abs().max()) <= 0.05 * scale, key


def test_resolve_precision():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("float32", True, cpu) == Precision("float32", torch.float32, None, False, "cpu")
    assert resolve_precision("float32", True, gpu).tf32 is True  # TF32 only where it exists
    assert resolve_precision("bfloat16", False, gpu) == Precision("bfloat16", torch.float32, torch.bfloat16,
                                                                  False, "cuda")
    assert resolve_precision("float64", False, cpu).weights == torch.float64
    assert resolve_precision("bfloat16", True, cpu).record() == {"precision": "bfloat16", "tf32": False}


def test_tf32_settings_are_set_for_the_run_and_restored():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    for tf32, mode in ((True, "tf32"), (False, "ieee")):
        with Precision("float32", torch.float32, None, tf32, "cuda").matmul_settings():
            assert (matmul.fp32_precision, conv.fp32_precision) == (mode, mode)
        assert (matmul.fp32_precision, conv.fp32_precision) == before
    with Precision("float32", torch.float32, None, False, "cpu").matmul_settings():
        assert (matmul.fp32_precision, conv.fp32_precision) == before  # off CUDA nothing is touched


def test_tf32_config_checks():
    assert parse_config({"tf32": True}).tf32 is True  # device auto: in effect where CUDA is
    with pytest.raises(ConfigError, match="^run: tf32: TF32 matmuls are a CUDA float32 mode; they cannot "
                                          "apply with dtype: float64$"):
        parse_config({"tf32": True, "dtype": "float64"}, source="run")
    with pytest.raises(ConfigError, match="with device: cpu$"):
        parse_config({"tf32": True, "device": "cpu"}, source="run")
    with pytest.raises(ConfigError, match="^run: loader_workers: Input should be greater than or equal to 0"):
        parse_config({"loader_workers": -1}, source="run")


def test_new_options_keep_run_ids():
    """Ids from before tf32 and loader_workers existed stay the same at their defaults (recorded ids)."""
    from pathlib import Path

    from symscale.study.schema import expand, load_study_config, parse_study

    assert RunConfig().run_id() == "mpnn-w64-a26f7e12"
    assert RunConfig(dtype="bfloat16").run_id() == "mpnn-w64-b52b05b7"
    assert RunConfig(loader_workers=3).run_id() == "mpnn-w64-a26f7e12"  # the batches do not change
    assert RunConfig(tf32=True).run_id() != "mpnn-w64-a26f7e12"  # the numerics do
    quickstart = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
    ids = [p.id for p in expand(load_study_config(quickstart), None, fingerprint="0" * 64)]
    assert ids[:4] == ["mpnn-w16-s0-745c701cfa", "mpnn-w32-s0-dcfadfdf26", "mpnn-w64-s0-1751865ff9",
                       "mpnn-w128-s0-c9b95c641e"]
    assert ids[-1] == "esen-w16-s0-53d26507a0"
    study = {"name": "s", "data": "embedded", "architectures": [{"family": "mpnn", "widths": [4]}]}
    base = expand(parse_study(study), None, fingerprint="0" * 64)[0]
    workers = expand(parse_study({**study, "loader_workers": 2}), None, fingerprint="0" * 64)[0]
    tf32 = expand(parse_study({**study, "tf32": True, "device": "auto"}), None, fingerprint="0" * 64)[0]
    assert workers.id == base.id and workers.config.loader_workers == 2
    assert tf32.id != base.id and tf32.config.tf32 is True


@cuda
def test_bfloat16_and_tf32_on_cuda(emt_dataset, tmp_path):
    from symscale.train.run import run

    out = run(tiny(emt_dataset, dtype="bfloat16", tf32=True, device="cuda"), out=tmp_path / "r")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert all(r["precision"] == "bfloat16" and r["tf32"] is True for r in rows)
