"""``symscale plan budget``: the compute-optimal path of the fitted law, its intervals, its inputs and errors."""

import json
import os

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from symscale import laws
from symscale.errors import ConfigError
from symscale.laws.throughput import atoms_per_s, fit_throughput
from symscale.plan import GroupLaw, group_laws, load_fit, parse_budget, plan_compute, plan_target
from synth import make_group

PARAMS = ("L_inf", "A", "B", "alpha", "beta")


def law(name="g", reps=None, identified=None, throughput=None, kappa=3.0, **p) -> GroupLaw:
    """A GroupLaw of known parameters (defaults: the synthetic truth of tests/laws/synth.py)."""
    vals = {"L_inf": 0.02, "A": 40.0, "B": 300.0, "alpha": 0.45, "beta": 0.40, **p}
    return GroupLaw(name=name, kappa=kappa, replicates=reps, identified=identified or {k: True for k in PARAMS},
                    throughput=throughput, **vals)


def rows(base: GroupLaw, n: int, **columns) -> np.ndarray:
    """(n, 5) replicates equal to ``base`` except the given columns (arrays of length n)."""
    out = np.tile(base.params(), (n, 1))
    for k, v in columns.items():
        out[:, PARAMS.index(k)] = v
    return out


def test_target_point_values_satisfy_the_fitted_law(fit_doc):
    laws_ = group_laws(fit_doc)
    for target in (0.2, 0.08, 0.04, 0.025):
        doc = plan_target(laws_, target)
        for name, g in doc["groups"].items():
            lw = laws_[name]
            N, D, C = g["N"]["value"], g["D"]["value"], g["C"]["value"]
            assert g["reachable"] and g["identified"]
            assert lw.loss(N, D) == pytest.approx(target, rel=1e-9)
            assert C == pytest.approx(3 * lw.kappa * N * D, rel=1e-12)
            for key in ("N", "D", "C", "hours"):
                assert 0 < g[key]["ci_low"] < g[key]["ci_high"], (name, key, g[key])
            assert g["n_replicates"] == 200 and g["unreachable_share"] == 0.0
            # hours = D / the fitted atoms per second at N
            assert g["hours"]["value"] == pytest.approx(D / atoms_per_s(lw.throughput, N) / 3600, rel=1e-6)


def test_path_is_the_constrained_optimum_and_monotone():
    lw = law()
    prev = None
    for target in (0.3, 0.1, 0.05, 0.03, 0.021):
        g = plan_target({"g": lw}, target)["groups"]["g"]
        N, C = g["N"]["value"], g["C"]["value"]
        # brute force: the N minimising L(N, C/(3 kappa N)) at this C is the planned one, at the target loss
        grid = N * np.exp(np.linspace(-0.05, 0.05, 2001))
        losses = lw.loss(grid, C / (3 * lw.kappa * grid))
        assert grid[np.argmin(losses)] == pytest.approx(N, rel=1e-4)
        assert losses.min() == pytest.approx(target, rel=1e-9)
        if prev is not None:     # a lower target costs more of everything
            assert all(g[k]["value"] > prev[k]["value"] for k in ("N", "D", "C"))
        prev = g
    at = [plan_compute({"g": lw}, c)["groups"]["g"] for c in (1e15, 1e17, 1e19)]
    assert at[0]["loss"]["value"] > at[1]["loss"]["value"] > at[2]["loss"]["value"] > lw.L_inf
    for c, g in zip((1e15, 1e17, 1e19), at):
        N, D = g["N"]["value"], g["D"]["value"]
        assert 3 * lw.kappa * N * D == pytest.approx(c, rel=1e-12)
        assert lw.loss(N, D) == pytest.approx(g["loss"]["value"], rel=1e-12)


def test_unreachable_target_and_unbounded_interval(capsys, tmp_path):
    base = law()
    # 10 of 100 replicates have L_inf above the target 0.03: 10 % cannot reach it -> no upper bound
    l_inf = np.where(np.arange(100) < 10, 0.031, 0.02)
    g = plan_target({"g": law(reps=rows(base, 100, L_inf=l_inf))}, 0.03)["groups"]["g"]
    assert g["reachable"] and g["unreachable_share"] == pytest.approx(0.1)
    assert g["C"]["ci_low"] is not None and g["C"]["ci_high"] is None and g["hours"] is None
    # 1 of 100: the percentile interval stays bounded
    l_inf = np.where(np.arange(100) < 1, 0.031, 0.02)
    g = plan_target({"g": law(reps=rows(base, 100, L_inf=l_inf))}, 0.03)["groups"]["g"]
    assert g["unreachable_share"] == pytest.approx(0.01) and g["C"]["ci_high"] is not None
    # the point fit itself cannot reach a target at or below L_inf
    g = plan_target({"g": base}, 0.02)["groups"]["g"]
    assert not g["reachable"] and "L_inf" in g["reason"] and g["N"] is None and g["C"] is None
    # and the command says so
    doc = {"groups": {"g": {**{k: {"value": getattr(base, k), "identified": True} for k in PARAMS},
                            "kappa": 3.0, "replicates": None, "throughput": None}}}
    src = tmp_path / "fit.json"
    src.write_text(json.dumps(doc))
    code, out, _ = run_cli(["plan", "budget", src, "--target-loss", "0.01"], capsys)
    assert code == 0 and "g: unreachable: target 0.01 is at or below the fitted L_inf = 0.02" in out


def test_compute_best_group_and_share():
    good, other = law("good", B=200.0), law("other")
    # replicate i of "good" loses to "other" for i < 30 (its L_inf is raised by 0.1)
    l_inf = np.where(np.arange(100) < 30, 0.12, 0.02)
    laws_ = {"good": law("good", B=200.0, reps=rows(good, 100, L_inf=l_inf)),
             "other": law("other", reps=rows(other, 120))}
    doc = plan_compute(laws_, 1e17)
    assert doc["best_group"] == "good" and doc["n_paired_replicates"] == 100
    assert doc["best_share"] == {"good": pytest.approx(0.7), "other": pytest.approx(0.3)}
    assert doc["groups"]["good"]["loss"]["value"] < doc["groups"]["other"]["loss"]["value"]
    # a group without replicates: no share
    laws_["other"] = other
    assert plan_compute(laws_, 1e17)["best_share"] is None


def test_cli_budget_from_fit_json_and_plots_dir(fit_file, fit_doc, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, text, _ = run_cli(["plan", "budget", fit_file, "--target-loss", "0.05", "--json", out], capsys)
    assert code == 0 and "target loss 0.05" in text and text.count("\n") >= 3
    doc = json.loads(out.read_text())
    assert doc["written_by"]["kind"] == "plan-budget" and set(doc["groups"]) == {"a", "b"}
    for name, g in doc["groups"].items():
        assert set(g["N"]) == {"value", "ci_low", "ci_high", "identified"}
        assert group_laws(fit_doc)[name].loss(g["N"]["value"], g["D"]["value"]) == pytest.approx(0.05, rel=1e-9)
    # a `fit --plots` directory (recognised by its fit.json); --group restricts; --json is replaced
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "fit.json").write_text(fit_file.read_text())
    code, text, _ = run_cli(["plan", "budget", plots, "--compute", "1e18", "--group", "b", "--json", out], capsys)
    doc = json.loads(out.read_text())
    assert code == 0 and set(doc["groups"]) == {"b"} and doc["best_group"] == "b" and "best: b" in text
    code, text, _ = run_cli(["plan", "budget", plots, "--compute", "1e18"], capsys)
    assert code == 0 and "best: b (lowest loss in" in text      # b's larger alpha wins at large compute


def test_not_identified_is_marked_and_warned(fit_file, tmp_path, capsys):
    doc = json.loads(fit_file.read_text())
    doc["groups"]["a"]["beta"]["identified"] = False
    src = tmp_path / "fit2.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "plan.json"
    code, text, _ = run_cli(["plan", "budget", src, "--target-loss", "0.05", "--json", out], capsys)
    res = json.loads(out.read_text())["groups"]
    assert code == 0 and "warning: a: beta not identified" in text and "not identified (" in text
    assert all(res["a"][k]["identified"] is False for k in ("N", "D", "C", "hours"))
    assert all(res["b"][k]["identified"] is True for k in ("N", "D", "C", "hours"))


def test_study_directory_input(tmp_path, capsys, synth_groups, fake_study):
    study = fake_study(tmp_path / "study", synth_groups, bootstrap=30)
    fitted = load_fit(study)                                   # no laws.json: fitted from the store
    assert fitted["settings"]["bootstrap"] == 30 and set(fitted["groups"]) == {"a", "b"}
    assert len(fitted["groups"]["a"]["replicates"]["alpha"]) == 30
    # a laws.json of the store's runs, with the planner's keys, is used as it is
    marked = json.loads(json.dumps(fitted))
    marked["groups"]["a"]["L_inf"]["value"] = 0.0123
    (study / "laws.json").write_text(json.dumps(marked))
    assert load_fit(study)["groups"]["a"]["L_inf"]["value"] == 0.0123
    code, text, _ = run_cli(["plan", "budget", study, "--target-loss", "0.05"], capsys)
    assert code == 0 and "a " in text and "b " in text
    # even when older than the store (a copied study directory does not keep modification times in order)
    old = (study / "study.db").stat().st_mtime - 100
    os.utime(study / "laws.json", (old, old))
    assert load_fit(study)["groups"]["a"]["L_inf"]["value"] == 0.0123

    def refitted(change):
        doc = json.loads(json.dumps(marked))
        change(doc)
        (study / "laws.json").write_text(json.dumps(doc))
        return load_fit(study)["groups"]["a"]["L_inf"]["value"] != 0.0123

    # a document of other runs, or of the same runs fitted otherwise, or from before the planner keys: fitted again
    assert refitted(lambda d: d["groups"]["a"]["runs"].pop())                      # a run fewer
    assert refitted(lambda d: d["groups"]["a"]["runs"][0].update(D_max=1.0))       # a run trained longer since
    assert refitted(lambda d: d["groups"]["a"]["runs"][0].update(best_loss=9.0))   # a run trained again
    assert refitted(lambda d: d["groups"].pop("b"))                                # a group fewer
    assert refitted(lambda d: d["settings"].update(bootstrap=31))
    assert refitted(lambda d: d["groups"]["a"].pop("throughput"))
    assert not refitted(lambda d: None)


def test_bad_inputs_are_one_line_errors_and_write_nothing(fit_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    notjson = tmp_path / "x.json"
    notjson.write_text("{not json")
    nogroups = tmp_path / "y.json"
    nogroups.write_text(json.dumps({"settings": {}}))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    doc = json.loads(fit_file.read_text())
    for k in PARAMS:
        doc["groups"]["a"][k]["value"] = None                   # group a: sum law not fitted
    unfit = tmp_path / "unfit.json"
    unfit.write_text(json.dumps(doc))
    cases = [
        ([tmp_path / "missing", "--target-loss", "0.05"], "no such file or directory"),
        ([notjson, "--target-loss", "0.05"], "invalid JSON"),
        ([nogroups, "--target-loss", "0.05"], "no 'groups'"),
        ([empty_dir, "--target-loss", "0.05"], "not a study directory"),
        ([fit_file, "--target-loss", "0.05", "--group", "zz"], "no group 'zz'"),
        ([unfit, "--target-loss", "0.05", "--group", "a"], "group 'a' has no fitted sum law"),
        ([fit_file, "--target-loss", "-1"], "--target-loss must be a finite number > 0"),
        ([fit_file, "--compute", "nan"], "--compute must be a finite number > 0"),
    ]
    for argv, needle in cases:
        code, _, err = run_cli(["plan", "budget", *argv, "--json", out], capsys)
        assert_one_line_error(code, err, needle)
        assert not out.exists(), argv
    # a group without a fitted law is left out with a warning when no --group is asked for
    code, text, _ = run_cli(["plan", "budget", unfit, "--target-loss", "0.05"], capsys)
    assert code == 0 and "warning: a: no fitted sum law" in text
    # an existing file symscale did not write is not replaced
    out.write_text("mine")
    code, _, err = run_cli(["plan", "budget", fit_file, "--target-loss", "0.05", "--json", out], capsys)
    assert_one_line_error(code, err, "--json")
    assert out.read_text() == "mine"


def test_parse_budget():
    assert parse_budget("2h") == ("hours", 2.0)
    assert parse_budget("90m") == ("hours", 1.5)
    assert parse_budget("45 s") == ("hours", pytest.approx(0.0125))
    assert parse_budget("1.5d") == ("hours", 36.0)
    assert parse_budget("3e15") == ("flops", 3e15)
    assert parse_budget("3e15flops") == ("flops", 3e15)
    for bad in ("", "2x", "h", "-2h", "0", "1e999", "2h30m"):
        with pytest.raises(ConfigError, match="--budget") as exc:
            parse_budget(bad)
        assert "\n" not in str(exc.value)


def test_fit_document_carries_replicates_and_throughput(fit_doc):
    g = fit_doc["groups"]["a"]
    assert set(g["replicates"]) == set(PARAMS) and all(len(v) == 200 for v in g["replicates"].values())
    assert all(float(f"{v:.6g}") == v for v in g["replicates"]["alpha"])        # 6 significant digits
    tp = g["throughput"]
    assert len(tp["runs"]) == 5 and tp["seconds_per_atom"]["n_runs"] == 5
    # synth: seconds per atom ∝ N^0.8 over N 1e4..1e6, fitted by overhead + per_param·N: both >= 0, the
    # measured runs within a factor of 2
    p = tp["seconds_per_atom"]
    assert p["overhead"] >= 0 and p["per_param"] > 0
    for r in tp["runs"]:
        assert 0.5 < atoms_per_s(tp, r["N"]) / r["atoms_per_s"] < 2.0
    # at most 1000 replicates kept; none without bootstrap
    one = {"s": make_group("s", n_runs=3, n_ckpt=6, seed=3)}
    doc = laws.to_json(laws.analyse(one, n_boot=1003, seed=0))["groups"]["s"]
    assert len(doc["replicates"]["beta"]) == 1000
    assert laws.to_json(laws.analyse(one, n_boot=0))["groups"]["s"]["replicates"] is None
    # one run size: the mean cost per atom, split between overhead and per-parameter cost
    g1 = make_group("t", n_runs=2, n_ckpt=5, n_range=(1e6, 1e6))
    tp1 = fit_throughput(g1)
    assert atoms_per_s(tp1, 1e6) == pytest.approx(tp1["runs"][0]["atoms_per_s"], rel=1e-6)
    no_time = laws.io.GroupData(**{**g1.__dict__, "H": None})
    assert fit_throughput(no_time) is None


def test_throughput_fit_recovers_overhead_and_per_parameter_cost():
    """Runs timed as H = D (t0 + s N): the fit returns t0 and s, and extrapolates linearly in N (a power law
    fitted to the overhead-bound small runs would predict the 16x wider model several times too fast)."""
    g = make_group("t", n_runs=4, n_ckpt=5, n_range=(1e4, 1e5))
    t0, s = 4e-4, 2e-9
    g = laws.io.GroupData(**{**g.__dict__, "H": g.D * (t0 + s * g.N)})
    tp = fit_throughput(g)
    assert tp["seconds_per_atom"]["overhead"] == pytest.approx(t0, rel=1e-6)
    assert tp["seconds_per_atom"]["per_param"] == pytest.approx(s, rel=1e-6)
    assert tp["seconds_per_atom"]["rms_log_residual"] < 1e-9
    assert atoms_per_s(tp, 1.6e6) == pytest.approx(1 / (t0 + s * 1.6e6), rel=1e-6)


def test_group_laws_read_the_interval_widths_the_planner_calibrates_on(fit_doc):
    doc = json.loads(json.dumps(fit_doc))
    name = next(n for n in doc["groups"] if group_laws(doc).get(n) is not None)
    g = doc["groups"][name]
    g["beta"]["identified"] = False
    widths = group_laws(doc)[name].ci_widths
    assert widths[0] == pytest.approx(g["alpha"]["ci_high"] - g["alpha"]["ci_low"])
    assert np.isnan(widths[1])                                             # not identified: not calibrated on
    assert widths[2] == pytest.approx(g["a"]["ci_high"] - g["a"]["ci_low"])
