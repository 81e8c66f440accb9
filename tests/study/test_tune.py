"""The learning-rate sweep of a study (``tune:``): schema errors, sweep runs, selection, end to end."""

import json

import pytest
import yaml

from symscale.cli import main
from symscale.errors import ConfigError
from symscale.study import run_study
from symscale.study.schema import expand, parse_study
from symscale.study.store import Store, load_groups
from symscale.study.tune import Sweep, Trial, choose, past_edge, plan_sweep, select, tune_document, with_lrs
from symscale.study.tune_report import tune_section
from symscale.study.worker import execute

from cli_helpers import assert_one_line_error, run_cli
from study_files import write_study

BASE = {"name": "s", "data": "embedded", "tokens": 1000,
        "architectures": [{"family": "mpnn", "widths": [8, 16, 32]}], "tune": {"lrs": [1e-3, 1e-2]}}


@pytest.mark.parametrize("tune, message", [
    ({"lrs": [1e-3]}, "tune.lrs: List should have at least 2 items"),
    ({"lrs": [1e-3, 0]}, "tune.lrs.1: Input should be greater than 0"),
    ({"lrs": [1e-3, ".inf"]}, "tune.lrs.1: Input should be a finite number"),
    ({"lrs": [1e-3, 1e-3]}, "tune: lrs: values must be distinct"),
    ({"lr_min": 1e-2, "lr_max": 1e-3}, "tune: lr_min (0.01) must be below lr_max (0.001)"),
    ({"lr_min": 1e-3}, "tune: lr_max: missing"),
    ({"lr_min": 1e-3, "lr_max": 1e-2, "points": 1}, "tune.points: Input should be greater than or equal to 2"),
    ({"lr_min": 1e-3, "lr_max": 1.001e-3, "points": 5}, "tune: points: 5 values between 0.001 and 0.001001"),
    ({"lrs": [1e-3, 1e-2], "points": 3}, "tune: points: only with lr_min and lr_max"),
    ({"lrs": [1e-3, 1e-2], "lr_min": 1e-4}, "tune: give either lrs or lr_min and lr_max"),
    ({}, "tune: give either lrs or lr_min and lr_max"),
    ({"lrs": [1e-3, 1e-2], "fractions": [0]}, "tune.fractions.0: Input should be greater than 0"),
    ({"lrs": [1e-3, 1e-2], "fractions": [1.5]}, "tune.fractions.0: Input should be less than or equal to 1"),
    ({"lrs": [1e-3, 1e-2], "fractions": [0.5, 0.5]}, "tune: fractions: values must be distinct"),
    ({"lrs": [1e-3, 1e-2], "grid": 3}, "tune.grid: Extra inputs are not permitted"),
])
def test_bad_tune_sections(tmp_path, capsys, tune, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tune": tune}).replace("'.inf'", ".inf"))
    code, _, err = run_cli(["study", path, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, f"{path}: {message}")
    assert not (tmp_path / "out").exists()


def test_explicit_lr_conflicts_with_tune():
    with pytest.raises(ConfigError, match=r"study: tune: optimizer.lr is set, but with tune the sweep chooses"):
        parse_study({**BASE, "optimizer": {"lr": 1e-3}})
    arch = [{"family": "mpnn", "widths": [8], "optimizer": {"lr": 1e-3}}]
    with pytest.raises(ConfigError, match=r"tune: architectures.0.optimizer.lr is set"):
        parse_study({**BASE, "architectures": arch})
    # other optimizer keys are fine, and without tune an explicit lr is too
    parse_study({**BASE, "optimizer": {"warmup_steps": 5}})
    parse_study({k: v for k, v in BASE.items() if k != "tune"} | {"optimizer": {"lr": 1e-3}})


def test_log_spaced_grid():
    cfg = parse_study({**BASE, "tune": {"lr_min": 1e-3, "lr_max": 1e-1, "points": 5}})
    assert cfg.tune.grid() == [1e-3, 0.00316, 1e-2, 0.0316, 0.1]
    assert parse_study({**BASE, "tune": {"lrs": [3e-2, 1e-3, 1e-2]}}).tune.grid() == [1e-3, 1e-2, 3e-2]


def test_sweep_runs(tmp_path):
    doc = {**BASE, "seeds": [3, 4], "tune": {"lrs": [1e-2, 1e-3], "fractions": [0.1, 0.25]},
           "architectures": [{"family": "mpnn", "widths": [8, 16, 32]},
                             {"family": "egnn", "widths": [4, 8], "base_width": 2, "epochs": 2}]}
    cfg = parse_study(doc)
    plan = expand(cfg, None, tmp_path)
    sweep = plan_sweep(cfg, plan, tmp_path)
    assert [(p.group, p.width, p.seed, p.config.optimizer.lr) for p in sweep] == [
        ("mpnn@tune", 8, 3, 1e-3), ("mpnn@tune", 8, 3, 1e-2), ("mpnn@tune", 32, 3, 1e-3), ("mpnn@tune", 32, 3, 1e-2),
        ("egnn@tune", 2, 3, 1e-3), ("egnn@tune", 2, 3, 1e-2), ("egnn@tune", 8, 3, 1e-3), ("egnn@tune", 8, 3, 1e-2)]
    for p in sweep:
        assert p.config.name == p.id and p.config.group == p.group and p.run_dir == tmp_path / "runs" / p.id
        assert p.id.startswith(f"{p.group[:-5]}-tune-w{p.width}-lr{p.config.optimizer.lr:g}-s3-")
        assert p.config.model.width == p.width
    mpnn, egnn = sweep[0].config, sweep[4].config
    assert mpnn.tokens == 250 and mpnn.epochs is None and mpnn.mup.base_width == 8  # 0.25 of the budget
    assert egnn.epochs == pytest.approx(0.5) and egnn.tokens is None and egnn.mup.base_width == 2
    assert sweep[2].config.mup.base_width == 8  # the widest width trains with μP from the base width
    # ids: distinct, stable, unchanged by edits outside the sweep (another seed, a new middle width)
    ids = [p.id for p in sweep]
    assert len(set(ids)) == len(ids) and ids == [p.id for p in plan_sweep(cfg, plan, tmp_path)]
    edited = parse_study({**doc, "seeds": [3, 5],
                          "architectures": [{"family": "mpnn", "widths": [8, 12, 16, 32]}, doc["architectures"][1]]})
    assert [p.id for p in plan_sweep(edited, expand(edited, None, tmp_path), tmp_path)] == ids
    # a longer budget or another grid changes them; no transfer check: base width only
    longer = parse_study({**doc, "tokens": 2000})
    assert not set(p.id for p in plan_sweep(longer, expand(longer, None, tmp_path), tmp_path)[:4]) & set(ids)
    base_only = parse_study({**doc, "tune": {"lrs": [1e-3, 1e-2], "check_transfer": False}})
    assert [(p.group, p.width) for p in plan_sweep(base_only, plan, tmp_path)] == [
        ("mpnn@tune", 8)] * 2 + [("egnn@tune", 2)] * 2
    # transfer_width: the check stays at a width already swept when wider widths are added (the planner's
    # extensions); the sweep's runs and ids are those of the narrower study
    wider = parse_study({**doc, "architectures": [{"family": "mpnn", "widths": [8, 16, 32, 64, 128],
                                                   "transfer_width": 32}, doc["architectures"][1]]})
    assert [p.id for p in plan_sweep(wider, expand(wider, None, tmp_path), tmp_path)] == ids
    with pytest.raises(ConfigError, match="transfer_width: 12 is not one of the widths"):
        parse_study({**doc, "architectures": [{"family": "mpnn", "widths": [8, 16], "transfer_width": 12}]})
    # the study's runs at the chosen rates
    tuned = expand(with_lrs(cfg, {"mpnn": 1e-2, "egnn": 1e-3}), None, tmp_path)
    assert [p.config.optimizer.lr for p in tuned] == [1e-2] * 6 + [1e-3] * 4
    assert {p.id for p in tuned}.isdisjoint({p.id for p in plan})  # the lr is part of a run's id


def _sweep(width, results):
    """A Sweep from ``[(lr, status, losses), ...]``."""
    return Sweep(width, [Trial(lr, f"r{lr:g}-w{width}", status, list(losses)) for lr, status, losses in results])


def test_selection():
    base = _sweep(8, [(1e-3, "completed", [2.4, 2.3]), (3e-3, "completed", [2.0, 1.9]),
                      (1e-2, "diverged", [1.2, None]), (3e-2, "failed", [None, None])])
    assert base.best().lr == 3e-3  # diverged and failed runs rank last, whatever their loss before
    assert [t.lr for t in base.ranking(0)] == [3e-3, 1e-3, 1e-2, 3e-2]
    # transfer: within one grid step holds, two steps fail (the base width's value is kept either way)
    near = _sweep(32, [(1e-3, "completed", [2.5, 2.2]), (3e-3, "completed", [2.1, 2.0]),
                       (1e-2, "completed", [1.9, 1.7]), (3e-2, "diverged", [None, None])])
    c = choose("mpnn", base, near)
    assert c.lr == 3e-3 and c.steps == 1 and c.transfers is True and not c.warnings
    assert "μP transfer holds" in c.notes[0]
    far = _sweep(32, [(1e-3, "completed", [2.5, 2.2]), (3e-3, "completed", [2.1, 2.0]),
                      (1e-2, "completed", [1.9, 1.8]), (3e-2, "completed", [1.5, 1.4])])
    c = choose("mpnn", base, far)
    assert c.lr == 3e-3 and c.steps == 2 and c.transfers is False and "μP transfer fails" in c.warnings[0]
    # nothing trained at the widest width: not confirmed; nothing at the base width: no lr
    dead = _sweep(32, [(1e-3, "failed", [None, None]), (3e-3, "diverged", [2.0, None])])
    c = choose("mpnn", base, dead)
    assert c.lr == 3e-3 and c.transfers is False and "not confirmed" in c.warnings[0]
    c = choose("mpnn", dead)
    assert c.lr is None and c.transfers is None and "no learning rate of the sweep trained at width 32" in c.warnings[0]
    # the best at the edge of the grid is flagged; ties go to the smaller lr
    edge = _sweep(8, [(1e-3, "completed", [2.0, 1.9]), (3e-3, "completed", [2.0, 1.9]), (1e-2, "completed", [3, 3])])
    c = choose("mpnn", edge)
    assert c.lr == 1e-3 and "low end of the grid" in c.warnings[0]


def test_document_and_section():
    cfg = parse_study({**BASE, "tune": {"lrs": [1e-3, 3e-3, 1e-2, 3e-2], "fractions": [0.1, 0.25]}})
    base = _sweep(8, [(1e-3, "completed", [2.4, 2.3]), (3e-3, "completed", [2.0, 1.9]),
                      (1e-2, "completed", [2.1, 1.8]), (3e-2, "diverged", [None, None])])
    wide = _sweep(32, [(1e-3, "completed", [2.5, 2.2]), (3e-3, "completed", [2.1, 2.0]),
                       (1e-2, "completed", [1.9, 1.9]), (3e-2, "completed", [1.5, 1.4])])
    choices = select(cfg, {"mpnn": {8: base, 32: wide}})
    doc = tune_document(cfg, choices)
    g = doc["groups"]["mpnn"]
    assert doc["grid"] == [1e-3, 3e-3, 1e-2, 3e-2] and doc["fractions"] == [0.1, 0.25]
    assert g["lr"] == 1e-2 and g["base_width"] == 8 and g["transfer"] == {"width": 32, "steps": 1,
                                                                         "within_one_step": True}
    assert g["sweeps"][0]["ranking"] == [[3e-3, 1e-2, 1e-3, 3e-2], [1e-2, 3e-3, 1e-3, 3e-2]]
    assert g["sweeps"][1]["best_lr"] == 3e-2
    json.dumps(doc, allow_nan=False)
    heading, lines, header, rows = tune_section(doc)
    assert heading == "Learning-rate tuning" and "mpnn: lr 0.01 (best at width 8)" in lines
    assert header == ["group", "width", "lr", "status", "loss @ 10 %", "loss @ 25 %", "rank @ 10 %", "rank @ 25 %"]
    assert rows[2] == ["mpnn", "8", "0.01", "completed", "2.1", "1.8", "2", "1"]
    assert rows[3] == ["mpnn", "8", "0.03", "diverged", "–", "–", "4", "4"]
    assert any("μP transfer holds" in ln for ln in lines) and len(rows) == 8


class InProcess:
    """An executor training each job in this process, one after another: the driver's stages without the
    seconds each worker process spends importing torch."""

    def probe(self):
        pass

    def connect(self, jobs):
        pass

    def close(self):
        pass

    def run(self, jobs, events):
        for job in jobs:
            events.started(job)
            events.finished(job, execute(job))


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr("symscale.study.driver.make_executor", lambda *args, **kwargs: InProcess())


def test_tuned_study_end_to_end(tmp_path, capsys, in_process):
    check_tuned_study(tmp_path, capsys)


@pytest.mark.slow  # ~80 s on two busy cores: six worker processes, each importing torch
def test_tuned_study_worker_processes(tmp_path, capsys):
    check_tuned_study(tmp_path, capsys)


def check_tuned_study(tmp_path, capsys):
    """A tiny study with a two-value sweep at two widths: the sweep runs first, its best lr is used by the
    study's runs, tune.json and the report show it, and a second invocation trains nothing."""
    path = write_study(tmp_path / "study.yaml", tmp_path / "study", tokens=1600,
                       architectures=[{"family": "mpnn", "widths": [4, 8]}],
                       tune={"lrs": [1e-3, 3e-2], "fractions": [0.25, 0.5]})
    result = run_study(path, workers=2, quiet=True)
    assert result.exit_code == 0 and result.counts == {"completed": 2} and result.total == 2
    study = tmp_path / "study"
    doc = json.loads((study / "tune.json").read_text())
    assert doc["written_by"]["kind"] == "tune" and doc["grid"] == [1e-3, 3e-2]
    g = doc["groups"]["mpnn"]
    with Store(study, create=False) as store:
        runs = store.runs()
        sweep = [r for r in runs if r["grp"] == "mpnn@tune"]
        main_runs = [r for r in runs if r["grp"] == "mpnn"]
        assert len(sweep) == 4 and len(main_runs) == 2 and len(runs) == 6
        assert {r["width"] for r in sweep} == {4, 8} and all(r["status"] == "completed" for r in sweep)
        assert all(r["budget_tokens"] == 800 for r in sweep)  # half of the study's budget
        # the chosen lr is the base width's lowest validation loss over the whole sweep run
        base = {json.loads(r["config"])["optimizer"]["lr"]: r for r in sweep if r["width"] == 4}
        assert g["lr"] == min(base, key=lambda lr: base[lr]["best_loss"])
        trials = {t["lr"]: t for t in g["sweeps"][0]["trials"]}
        for lr, r in base.items():
            assert trials[lr]["loss"][1] == pytest.approx(r["best_loss"])
            assert trials[lr]["loss"][0] is None or trials[lr]["loss"][0] >= r["best_loss"] - 1e-12
        for r in main_runs:
            cfg = json.loads(r["config"])
            assert cfg["optimizer"]["lr"] == g["lr"] and cfg["mup"]["base_width"] == 4 and cfg["tokens"] == 1600
        assert sorted(store.meta("study")["tune_run_ids"]) == sorted(r["id"] for r in sweep)
        finished = {r["id"]: r["finished_at"] for r in runs}
    assert g["transfer"]["width"] == 8 and g["transfer"]["within_one_step"] is (g["transfer"]["steps"] <= 1)
    # the report shows the sweep; the fits never see it
    md = (study / "report" / "report.md").read_text()
    assert "## Learning-rate tuning" in md and f"mpnn: lr {g['lr']:g} (best at width 4)" in md
    assert "Learning-rate tuning" in (study / "report" / "report.html").read_text()
    assert set(load_groups(study)) == {"mpnn"}
    assert "mpnn@tune" not in (study / "laws.json").read_text()
    # status lists the sweep runs as the study's own
    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "6 completed" in out and "no longer part" not in out
    # again: nothing trains, the same runs and the same choice
    again = run_study(path, workers=2, quiet=True, report=False)
    assert again.counts == {"completed": 2}
    with Store(study, create=False) as store:
        assert {r["id"]: r["finished_at"] for r in store.runs()} == finished
    assert json.loads((study / "tune.json").read_text())["groups"]["mpnn"]["lr"] == g["lr"]


def test_no_lr_trains_is_one_line_error(tmp_path, capsys, in_process):
    """Every sweep run diverges: the study stops with one line after recording the sweep."""
    path = write_study(tmp_path / "study.yaml", tmp_path / "study", tokens=400,
                       architectures=[{"family": "mpnn", "widths": [4]}],
                       optimizer={"diverge_grad_norm": 1e-9}, tune={"lrs": [1e-3, 1e-2], "fractions": [1.0]})
    code, _, err = run_cli(["study", path, "--workers", "2", "--quiet"], capsys)
    why = "tune: mpnn: no learning rate of the sweep trained at width 4 (0.001 diverged, 0.01 diverged)"
    assert f"warning: {why}" in err
    assert_one_line_error(code, "\n".join(ln for ln in err.splitlines() if not ln.startswith("warning: ")), why)
    doc = json.loads((tmp_path / "study" / "tune.json").read_text())
    assert doc["groups"]["mpnn"]["lr"] is None
    with Store(tmp_path / "study", create=False) as store:
        assert [r["grp"] for r in store.runs()] == ["mpnn@tune"] * 2
        assert not (tmp_path / "study" / "report").exists() and store.meta("study") is None


def test_extension_past_the_edge_of_the_grid(tmp_path):
    """``extend``: the value one grid ratio past the end where the best lies; swept at the base and the
    transfer width alike, with the grid's runs keeping their ids."""
    high = choose("mpnn", _sweep(8, [(1e-3, "completed", [2.4]), (3e-3, "completed", [2.0]), (1e-2, "completed", [1.5])]))
    low = choose("mpnn", _sweep(8, [(1e-3, "completed", [1.4]), (1e-2, "completed", [2.0])]))
    inside = choose("mpnn", _sweep(8, [(1e-3, "completed", [2.4]), (3e-3, "completed", [2.0]), (1e-2, "diverged", [1.0])]))
    assert past_edge(high) == pytest.approx(3.33e-2) and past_edge(low) == pytest.approx(1e-4)
    assert past_edge(inside) is None
    cfg = parse_study({**BASE, "tune": {"lrs": [1e-3, 1e-2], "extend": 2}})
    plan = expand(cfg, None, tmp_path)
    grid = plan_sweep(cfg, plan, tmp_path)
    more = plan_sweep(cfg, plan, tmp_path, extra={"mpnn": [1e-1]})
    assert [p.id for p in grid] == [p.id for p in more if p.config.optimizer.lr != 1e-1]
    assert sorted((p.width, p.config.optimizer.lr) for p in more if p.config.optimizer.lr == 1e-1) == [(8, 0.1), (32, 0.1)]
    with pytest.raises(ConfigError, match="tune.extend: Input should be less than or equal to 5"):
        parse_study({**BASE, "tune": {"lrs": [1e-3, 1e-2], "extend": 6}})


def test_tuned_study_extends_its_grid(tmp_path, in_process):
    """Two tiny learning rates: the best is the larger, so the sweep goes on past it (up to ``extend`` times,
    until the best is inside the grid); every swept value is trained at both widths, and the choice is the
    best of all of them."""
    path = write_study(tmp_path / "study.yaml", tmp_path / "study", tokens=1600,
                       architectures=[{"family": "mpnn", "widths": [4, 8]}],
                       tune={"lrs": [1e-5, 3e-5], "fractions": [0.5], "extend": 2})
    result = run_study(path, workers=1, quiet=True, report=False)
    assert result.exit_code == 0
    doc = json.loads((tmp_path / "study" / "tune.json").read_text())
    g = doc["groups"]["mpnn"]
    swept = [sorted(t["lr"] for t in s["trials"]) for s in g["sweeps"]]
    assert swept[0] == swept[1] and swept[0][:3] == pytest.approx([1e-5, 3e-5, 9e-5])
    assert len(swept[0]) in (3, 4)
    losses = {t["lr"]: t["loss"][-1] for t in g["sweeps"][0]["trials"]}
    assert g["lr"] == min(losses, key=losses.get) and g["lr"] > 3e-5
    assert any("grid extended past its end by 9e-05" in n for n in g["notes"])
    if len(swept[0]) == 3:      # stopped early: the best is inside the extended grid
        assert g["lr"] == pytest.approx(3e-5) or g["lr"] != max(swept[0])
