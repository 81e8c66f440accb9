"""``plan design --target-width``: widths already below the target gain nothing, so the budget goes elsewhere."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from symscale.plan import design, fisher, search
from synth import TRUTH

KAPPA = 30.0


def _checkpoints(T):
    return design.fitted_checkpoints(T, 20, None, 1, 0.05)


def _model(name, Ns, T, noise=0.01):
    return search.GroupModel(name=name, theta=fisher.theta_array(**TRUTH), noise=fisher.Noise(noise, noise),
                             N=np.array(Ns, float), D=search.padded([_checkpoints(T)] * len(Ns)), loss_scale=0.1)


def _options(name, price=1.0):
    return design.make_options(name, {w: 100.0 * w * w for w in (10, 18, 56, 178, 562)},
                               [10 ** 7, 10 ** 8, 10 ** 9], _checkpoints, lambda N, T: price * 3 * KAPPA * N * T)


def test_target_width_sends_the_budget_to_groups_above_it():
    wide = _model("wide", [1e5, 1e6, 1e7], 1e7)                           # 3 short runs: wide intervals
    narrow = _model("narrow", np.geomspace(1e4, 3e7, 12), 1e9, noise=0.002)  # 12 long runs: narrow intervals
    options = _options("wide") + _options("narrow")
    budget = 3e15
    plain = search.greedy([wide, narrow], options, budget)
    groups = lambda plan: {o.group for o in plan.chosen}  # noqa: E731
    assert groups(plain) == {"wide", "narrow"}                             # every shrinkage counts
    # all of narrow's widths far enough below the target that more runs cannot raise its chance of meeting it
    target = 2.5 * float(plain.before["narrow"].max())
    assert target < float(plain.before["wide"].min())
    aimed = search.greedy([wide, narrow], options, budget, target=target)
    assert groups(aimed) == {"wide"}                                       # nothing for widths already below
    assert aimed.after["wide"][0] <= plain.after["wide"][0]                # and wide's α narrows at least as much
    with pytest.raises(ValueError, match="target"):
        search.greedy([wide], options, budget, target=float("nan"))


def test_target_width_funds_a_group_that_can_reach_it_before_one_that_cannot():
    # "hopeless": noisy curves (σ = τ = 0.3), no run within the budget brings its widths near 0.3, but its runs
    # are cheap, so the plain criterion buys them (a large relative shrinkage per unit cost) and leaves too
    # little for the one run that brings "near" below the target
    hopeless = _model("hopeless", [1e5, 1e6, 1e7], 1e7, noise=0.3)
    near = _model("near", [1e5, 1e6, 1e7], 1e7)
    options = _options("hopeless", price=0.3) + _options("near")
    budget, target = 1e13, 0.3
    plain = search.greedy([hopeless, near], options, budget)
    assert {o.group for o in plain.chosen} == {"hopeless"}
    assert plain.after["near"][0] > target                                 # near's α stays above the target
    aimed = search.greedy([hopeless, near], options, budget, target=target)
    assert aimed.funded == ["near"] and aimed.reach["hopeless"] == float("inf")
    assert 0 < aimed.reach["near"] <= budget and aimed.spent <= budget
    assert np.all(aimed.after["near"] <= target)                           # near reaches it
    text = design.format_reach(aimed, lambda c: f"{c:.3g}")
    assert "funded first near (9e+12)" in text and "not reachable" in text and "hopeless" in text


def test_budget_left_after_reaching_the_target_buys_margin_not_a_hopeless_group():
    # funded to a median α width just below the target, "near" meets it about half the time; the budget left buys
    # it margin, where the sum of logs would buy "hopeless"'s cheap runs, which cannot bring it near the target
    fine = lambda name, price=1.0: design.make_options(  # noqa: E731
        name, {w: 100.0 * w * w for w in (10, 14, 18, 32, 56, 100, 178, 316, 562)},
        [10 ** 7, 2 * 10 ** 7, 5 * 10 ** 7, 10 ** 8, 2 * 10 ** 8, 5 * 10 ** 8, 10 ** 9], _checkpoints,
        lambda N, T: price * 3 * KAPPA * N * T)
    hopeless = _model("hopeless", [1e5, 1e6, 1e7], 1e7, noise=0.3)
    near = _model("near", [1e5, 1e6, 1e7], 1e7, noise=0.03)
    options = fine("hopeless", price=0.3) + fine("near")
    target = 0.3
    bare = search.greedy([hopeless, near], options, 1e16, target=target)
    reach = bare.reach["near"]
    assert 0 < reach < 1e16 and bare.reach["hopeless"] == float("inf")
    exact = search.greedy([hopeless, near], options, reach, target=target)
    assert 0.3 < exact.chance["near"][1] < 0.7                            # at the target: a coin toss
    plan = search.greedy([hopeless, near], options, 2.5 * reach, target=target)
    spent = lambda g: sum(o.cost for o in plan.chosen if o.group == g)  # noqa: E731
    assert plan.funded == ["near"] and spent("near") > 2 * reach          # past the bare reach, ...
    assert plan.chance["near"][1] > exact.chance["near"][1] + 0.2         # ... for a better chance
    assert spent("hopeless") < 0.5 * reach and plan.chance["hopeless"][1] < 0.01
    # the sum of logs alone would spend most of what is left on hopeless
    rest = search.greedy([hopeless], options, 1.5 * reach)
    assert sum(o.cost for o in rest.chosen) > 1.2 * reach
    text = design.format_chance(plan)
    assert text.startswith("hopeless 0.00 -> 0.00, near 0.00 -> 0.")


def test_target_width_zero_is_the_plain_criterion():
    m = _model("wide", [1e5, 1e6, 1e7], 1e7)
    a = search.greedy([m], _options("wide"), 1e15)
    b = search.greedy([m], _options("wide"), 1e15, target=0.0)
    assert [(o.width, o.tokens) for o in a.chosen] == [(o.width, o.tokens) for o in b.chosen]


@pytest.mark.parametrize("value", ["-0.1", "nan"])
def test_bad_target_width_is_a_one_line_error(tmp_path, capsys, value):
    (tmp_path / "s.yaml").write_text("name: s\n")
    code, _, err = run_cli(["plan", "design", tmp_path / "s.yaml", "--budget", "1e12", "--target-width", value,
                            "--out", tmp_path / "n.yaml"], capsys)
    assert_one_line_error(code, err, "--target-width")
    assert not (tmp_path / "n.yaml").exists()


def test_calibration_starts_the_plan_from_the_fits_widths():
    model = _model("g", [1e5, 1e6, 1e7], 1e7)
    options = _options("g")
    now = search.greedy([model], options, 1.0).before["g"]               # Fisher widths of the finished runs
    fitted = np.array([1.5, np.nan, 100.0]) * now                          # β not identified; a far off
    plan = search.greedy([replace(model, fitted=fitted)], options, 1.0)
    np.testing.assert_allclose(plan.calibration["g"], [1.5, 1.0, search.CALIBRATION_RANGE[1]], rtol=1e-9)
    np.testing.assert_allclose(plan.before["g"], now * plan.calibration["g"], rtol=1e-9)
    assert plan.before["g"][0] == pytest.approx(fitted[0])                 # α reads as the fit reads it
    # a fit narrower than the Fisher widths (a bootstrap over a few runs) does not narrow the plan's widths
    narrower = search.greedy([replace(model, fitted=np.array([0.25, 0.9, 1.2]) * now)], options, 1.0)
    np.testing.assert_allclose(narrower.calibration["g"], [1.0, 1.0, 1.2], rtol=1e-9)
    assert np.all(search.greedy([replace(model, fitted=np.full(3, np.nan))], options, 1.0).calibration["g"] == 1)


def test_calibrated_widths_make_reaching_the_target_cost_more():
    # the fit's intervals are 30 % wider than the Fisher widths of the same runs: reaching a target then needs
    # Fisher widths 30 % below it, so the group is funded with more (never fewer) runs, and its calibrated
    # widths (not the Fisher ones) are what the plan brings to the target
    model = _model("g", [1e5, 1e6, 1e7], 1e7)
    options = _options("g")
    now = search.greedy([model], options, 1.0).before["g"]
    wider = replace(model, fitted=1.3 * now)
    budget, dearer = 1e17, 0
    for target in np.geomspace(now.max() / 5, now.max() / 1.05, 12):
        plain = search.greedy([model], options, budget, target=target)
        aimed = search.greedy([wider], options, budget, target=target)
        assert aimed.reach["g"] >= plain.reach["g"]
        if np.isfinite(aimed.reach["g"]):
            assert aimed.funded == ["g"] and np.all(aimed.after["g"] <= target)
        dearer += aimed.reach["g"] > plain.reach["g"]
        if np.isfinite(plain.reach["g"]) and aimed.reach["g"] > plain.reach["g"]:
            # the uncalibrated plan's runs that reach the target fall short of it once calibrated
            bare = search.greedy([model], options, plain.reach["g"], target=target)
            assert np.max(bare.after["g"]) * 1.3 > target
    assert dearer >= 3


def test_widths_of_the_finished_runs_do_not_depend_on_the_options_offered():
    # the weak prior on log A, log B is not invariant to the centring of log N, log D: centring on finished and
    # offered runs made the same three short runs read differently under different option grids
    model = _model("g", [1e5, 1e6, 1e7], 1e7)
    now = search.greedy([model], [], 1.0).before["g"]
    for options in (_options("g"), _options("g")[:3], design.make_options(
            "g", {w: 100.0 * w * w for w in (1000, 3000)}, [10 ** 10], _checkpoints, lambda N, T: 1.0)):
        np.testing.assert_allclose(search.greedy([model], options, 1.0).before["g"], now, rtol=1e-9)
