"""Run schema errors, μP learning-rate groups, schedule-free eval weights, schedules and loss formulas."""

from __future__ import annotations


import pytest
import torch

from symscale.errors import ConfigError
from symscale.train.config import load_config, parse_config


@pytest.mark.parametrize("data, field", [
    ({"model": {"family": "mpnn", "widht": 8}}, "model.widht: Extra inputs are not permitted"),
    ({"optimizer": {"lr": -1}}, "optimizer.lr: Input should be greater than 0"),
    ({"tokens": 10, "epochs": 1}, "give either tokens or epochs"),
    ({"loss": {"energy": "huber"}}, "loss.energy: Input should be 'mae' or 'mse'"),
    ({"symmetry": {"loss": {"rotations": 0}}}, "symmetry.loss.rotations"),
    ({"device": "tpu"}, "device:"),
    ({"optimizer": {"betas": [0.9, 1.5]}}, "betas must lie in [0, 1)"),
    ({"batchsize": 3}, "batchsize: Extra inputs"),
    ({"data": {"subset": 1.5}}, "data.subset: must be a count >= 1 or a fraction in (0, 1]"),
])
def test_config_errors_are_one_line_and_name_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="run.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("run.yaml: ")
    assert field in msg


def test_load_config_yaml(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("model: {family: mpnn, width: 32}\ntokens: 1000\nmup: {base_width: 16}\n")
    cfg = load_config(p)
    assert cfg.model.width == 32 and cfg.tokens == 1000 and cfg.mup.base_width == 16
    assert cfg.batch_size == 64 and cfg.optimizer.name == "schedulefree" and cfg.evaluation.points == 20
    assert load_config(p).run_id() == cfg.run_id() and cfg.run_id().startswith("mpnn-w32-")
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run.yaml: line \d+ invalid YAML"):
        load_config(p)
    p.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_config_error(tmp_path, capsys):
    from symscale.cli import main

    p = tmp_path / "run.yaml"
    p.write_text("model: {family: mpnn, width: 8, depth: 3}\n")
    assert main(["train", str(p), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("symscale: error: ") and "model.depth" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_mup_hidden_parameters_and_lr_groups():
    from symscale.models import build
    from symscale.train.optim import hidden_parameters, parameter_groups

    width, base = 32, 8
    model = build("mpnn", width, num_layers=2)
    hidden = hidden_parameters(model, lambda w: build("mpnn", w, num_layers=2), width)
    # width x width matrices of the message-passing layers and heads are hidden ...
    assert "layers.0.src.weight" in hidden and "layers.1.update.0.weight" in hidden
    assert "energy_head.0.weight" in hidden
    # ... the element embedding, biases, the raw-edge input matrix and the 1- / 3-wide read-outs are not
    for name in ("embedding.weight", "layers.0.src.bias", "layers.0.edge.weight", "energy_head.2.weight",
                 "force_head.2.weight"):
        assert name not in hidden, name
    groups = parameter_groups(model, 1e-3, hidden, base_width=base, width=width)
    by = {g["name"]: g for g in groups}
    assert by["hidden"]["lr"] == pytest.approx(1e-3 * base / width)
    assert by["other"]["lr"] == pytest.approx(1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in by["hidden"]["params"]} == hidden
    assert len(by["hidden"]["params"]) + len(by["other"]["params"]) == len(list(model.parameters()))


def test_mup_keeps_egnn_radial_input_map_at_the_base_lr():
    """egnn's radial map (B Bessel features -> width) is an input map and keeps ``lr``; the map of the vector
    invariants (3C -> width, C grows with width) is hidden. As one matrix both were hidden, and wide models
    sat on the zero-force plateau for longer the wider they were (docs/models.md)."""
    from symscale.models import build
    from symscale.train.optim import hidden_parameters

    hidden = hidden_parameters(build("egnn", 64), lambda w: build("egnn", w), 64)
    assert "layers.1.inv.weight" in hidden and "layers.1.msg.weight" in hidden
    assert not any("radial" in n for n in hidden)


def test_schedulefree_eval_mode_swaps_in_the_averaged_weights():
    from symscale.train.optim import build_optimizer, eval_mode, parameter_groups, train_mode
    from symscale.train.config import OptimizerConfig

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2)
    opt = build_optimizer(parameter_groups(lin, 1e-2), OptimizerConfig(warmup_steps=2))
    for _ in range(5):
        opt.zero_grad()
        lin(torch.randn(8, 4)).square().mean().backward()
        opt.step()
    beta1 = opt.param_groups[0]["betas"][0]
    y = [p.detach().clone() for p in lin.parameters()]
    z = [opt.state[p]["z"].clone() for p in lin.parameters()]
    eval_mode(opt)
    for p, yy, zz in zip(lin.parameters(), y, z):  # y = (1 - beta1) z + beta1 x  =>  x = (y - (1-beta1) z) / beta1
        assert torch.allclose(p, (yy - (1 - beta1) * zz) / beta1, atol=1e-6)
        assert not torch.allclose(p, yy)
    train_mode(opt)
    for p, yy in zip(lin.parameters(), y):
        assert torch.allclose(p, yy, atol=1e-6)


def test_cosine_factor_warmup_and_decay():
    from symscale.train.optim import cosine_factor

    assert cosine_factor(0, 0.0, 4, 0.0) == pytest.approx(0.25)
    assert cosine_factor(3, 0.0, 4, 0.0) == pytest.approx(1.0)
    assert cosine_factor(10, 0.5, 4, 0.0) == pytest.approx(0.5)
    assert cosine_factor(10, 1.0, 4, 0.1) == pytest.approx(0.1)


def test_loss_formulas_on_a_hand_made_batch():
    from symscale.data import Batch, Structure
    from symscale.train.loss import ErrorSums, LossFunction

    s1 = Structure([1, 1], [[0, 0, 0], [0.7, 0, 0]], energy=-1.0, forces=[[1, 0, 0], [-1, 0, 0]])
    s2 = Structure([8], [[0, 0, 0]], energy=-2.0, forces=[[0, 0, 0]])
    b = Batch.from_structures([s1, s2], cutoff=3.0, dtype=torch.float64)
    pred = {"energy": torch.tensor([-0.6, -2.3], dtype=torch.float64),
            "forces": torch.tensor([[1.0, 0.3, 0.4], [-1, 0, 0], [0, 0, 0.6]], dtype=torch.float64)}
    lf = LossFunction(energy_scale=0.5, force_scale=2.0)
    e_term, f_term = lf.terms(pred, b)
    assert float(e_term) == pytest.approx(((0.4 / 2) / 0.5 + 0.3 / 0.5) / 2)  # per-atom energy MAE / scale
    assert float(f_term) == pytest.approx((0.5 + 0 + 0.6) / 3 / 2.0)          # mean ||dF|| / scale
    sums = ErrorSums(lf)
    sums.add(pred, b)
    r = sums.result()
    assert r["energy_mae_per_atom"] == pytest.approx((0.2 + 0.3) / 2)
    assert r["force_l2"] == pytest.approx(1.1 / 3)
    assert r["force_mae"] == pytest.approx((0.3 + 0.4 + 0.6) / 9)
    assert r["loss"] == pytest.approx(float(lf(pred, b)))
    mse = LossFunction(0.5, 2.0, energy="mse", forces="mse")
    e2, f2 = mse.terms(pred, b)
    assert float(f2) == pytest.approx((0.15**2 + 0.2**2 + 0.3**2) / 9)
    sums = ErrorSums(mse)
    sums.add(pred, b)
    assert sums.result()["loss"] == pytest.approx(float(e2 + f2))


def test_evaluation_points_are_log_spaced_and_end_at_budget():
    from symscale.train.metrics import EvalSchedule, evaluation_points

    pts = evaluation_points(10**6, 20, 10**3)
    assert pts[0] == 1000 and pts[-1] == 10**6 and len(pts) == 20
    ratios = [b / a for a, b in zip(pts, pts[1:])]
    assert max(ratios) / min(ratios) < 1.01
    assert evaluation_points(50, 20, 10) == sorted(set(evaluation_points(50, 20, 10)))
    sched = EvalSchedule([10, 20, 30])
    assert not sched.due(9) and sched.due(25)
    sched.consume(25)
    assert sched.points == [30]


def test_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "run.yaml")
    assert cfg.data.path is None and cfg.optimizer.name == "schedulefree" and cfg.mup.base_width == 64


def test_device_resolution():
    from symscale.train.run import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device: 'cuda' requested"):
            resolve_device("cuda")


def test_example_runs_on_the_embedded_dataset(tmp_path):
    """examples/run.yaml as shipped, with a small token budget, on the embedded default data."""
    import json
    from pathlib import Path

    from symscale.data.prepared import default_dataset_path
    from symscale.train.run import run

    if not (default_dataset_path() / "metadata.json").is_file():
        pytest.skip("embedded default dataset not built in this checkout")
    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "run.yaml")
    cfg = cfg.model_copy(update={"epochs": None, "tokens": 1000, "batch_size": 16,
                                 "evaluation": cfg.evaluation.model_copy(update={"points": 3})})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_size": 32})})
    run_dir = run(cfg, out=tmp_path / "example")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["run_id"] == "example-mpnn-w64"
    assert summary["tokens"] >= 1000


def test_package_exports_the_run_function():
    import symscale.train.run  # noqa: F401  (importing the submodule must not shadow the function)
    import symscale.train as train

    assert callable(train.run) and train.run.__name__ == "run"
    assert callable(train.load_config) and callable(train.load_model)
