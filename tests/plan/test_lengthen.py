"""Finished widths trained longer: the planner's option, the study file that raises a width's budget, and the
fits that keep only the longer of two runs sharing a trajectory (docs/laws.md, "Planning a study")."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from symscale.errors import ConfigError
from symscale.plan import design, extend, fisher, search
from symscale.study.store import Store, load_groups, superseded
from synth import TRUTH
from test_design import _real_ids, checkpoints, fake_study, flops, size


def _row(rid, budget, seen, status="completed", width=8, seed=0, grp="g", lr=1e-2):
    cfg = {"group": grp, "tokens": budget, "evaluation": {"points": 8}, "name": rid, "out": f"/x/{rid}",
           "optimizer": {"lr": lr}, "seed": seed}
    return {"id": rid, "grp": grp, "width": width, "seed": seed, "status": status, "tokens": seen,
            "budget_tokens": budget if status == "completed" else None, "config": json.dumps(cfg)}


def test_superseded_needs_the_same_settings_and_a_longer_run_that_got_further():
    rows = [_row("short", 1000, 1000), _row("long", 8000, 8000), _row("mid", 4000, 4000),
            _row("other-lr", 1000, 1000, lr=3e-2), _row("other-seed", 1000, 1000, seed=1),
            _row("other-width", 1000, 1000, width=16)]
    assert superseded(rows) == {"short": "long", "mid": "long"}
    # a longer run still short of the finished one's tokens does not replace it yet; a failed one never
    assert superseded([_row("short", 1000, 1000), _row("long", 8000, 600, status="running")]) == {}
    assert superseded([_row("short", 1000, 1000), _row("long", 8000, 1500, status="running")]) == {"short": "long"}
    assert superseded([_row("short", 1000, 1000), _row("long", 8000, 8000, status="failed")]) == {}


def test_fits_keep_only_the_longer_run(tmp_path):
    """load_groups leaves the short run out, with a note naming both, and keeps every point of the long one."""
    d = tmp_path / "s"
    d.mkdir()
    with Store(d) as store:
        for rid, w, budget in (("w8-short", 8, 2000), ("w8-long", 8, 8000), ("w16", 16, 2000)):
            cfg = {"tokens": budget, "evaluation": {"points": 4}, "name": rid, "model": {"width": w}}
            store.add_runs([SimpleNamespace(id=rid, group="g", family="mpnn", width=w, seed=0, run_dir=d / rid,
                                            config=SimpleNamespace(model_dump=lambda mode=None, c=cfg: c))])
            D = np.geomspace(budget / 8, budget, 4)
            rows = [{"step": k, "tokens": int(x), "params": 100 * w, "compute": 600.0 * w * x,
                     "train_time_s": x / 1000, "loss": 1.0 + 1.0 / np.sqrt(x)} for k, x in enumerate(D)]
            store.finish(rid, {"status": "completed", "rows": rows,
                               "summary": {"params": 100 * w, "kappa": 2.0, "budget_tokens": budget}})
    g = load_groups(d)["g"]
    assert sorted(g.run_names) == ["w16", "w8-long"] and g.N.size == 8
    assert any("w8-short left out" in n and "w8-long" in n for n in g.notes)


def _model():
    return search.GroupModel(name="g", theta=fisher.theta_array(**TRUTH), noise=fisher.Noise(0.01, 0.01),
                             N=np.array([size(10), size(56), size(316)]),
                             D=search.padded([checkpoints(1e6)] * 3), loss_scale=0.1)


def test_a_replacing_option_removes_the_finished_run_it_replaces():
    """Taking an option that replaces finished run 0 leaves exactly the information of runs 1, 2 and the
    option; raising it further keeps the finished run removed once."""
    m = _model()
    opts = [search.Option("g", 10, size(10), T, flops(size(10), T), checkpoints(T), (0,)) for T in (10 ** 8, 10 ** 9)]
    st = search._GroupState(m, opts)
    st.take(0)
    st.take(1)
    H, M = fisher.run_matrices(m.theta, np.array([m.N[1], m.N[2], size(10)]),
                               search.padded([checkpoints(1e6)] * 2 + [checkpoints(1e9)]), m.noise, st.N0, st.D0)
    assert np.allclose(st.H, H.sum(1), rtol=1e-10, atol=1e-12 * np.abs(H).max())
    assert np.allclose(st.M, M.sum(1), rtol=1e-10, atol=1e-12 * np.abs(M).max())


def test_greedy_trains_a_small_finished_width_longer_when_that_is_what_alpha_needs():
    """Finished runs all at 10⁶ tokens are data-limited everywhere: the N term is only seen once a small model
    runs long. Offered both, the plan trains the smallest finished width longer."""
    m = _model()
    new = design.make_options("g", {w: size(w) for w in (18, 32, 100, 178)}, [10 ** 7, 10 ** 8, 10 ** 9],
                              checkpoints, flops)
    longer = [search.Option("g", w, size(w), T, flops(size(w), T), checkpoints(T), (k,))
              for k, w in enumerate((10, 56, 316)) for T in (10 ** 8, 10 ** 9)]
    budget = 3 * flops(size(10), 10 ** 9)
    with_longer = search.greedy([m], new + longer, budget)
    only_new = search.greedy([m], new, budget)
    assert any(o.replaces == (0,) for o in with_longer.chosen)
    assert with_longer.after["g"][0] < only_new.after["g"][0]            # a narrower alpha interval


def test_extension_raises_the_budget_of_a_finished_width(tmp_path):
    study = extend.read_study(fake_study(tmp_path))
    raw = extend.extended(study, {"mpnn": {4: 1000}}, {"mpnn": {8: 40000}})
    entry = raw["architectures"][0]
    assert entry["widths"] == [4, 8, 16, 32] and entry["tokens"] == {4: 1000, 8: 40000}
    extend.check_extension(study, raw, 2, "x.yaml", n_replaced=1)
    with pytest.raises(ConfigError, match="1 run id.s. changed for 0 replaced"):
        extend.check_extension(study, raw, 2, "x.yaml")
    with pytest.raises(ConfigError, match="width 12 is not in the study: nothing to train longer"):
        extend.extended(study, {}, {"mpnn": {12: 40000}})
    before, path = _real_ids(tmp_path / "study" / "study.yaml", study.dir), tmp_path / "n.yaml"
    plan = search.Plan(chosen=[search.Option("mpnn", 8, 1e3, 40000, 1.0, (1.0,), (0,))], spent=1.0,
                       before={"mpnn": np.ones(3)}, after={"mpnn": np.ones(3)})
    extend.write_extension(study, plan, path, header="test")
    text = path.read_text()
    assert "#   longer mpnn 8 1000 40000 1" in text
    after = _real_ids(path, study.dir)
    assert len(before - after) == 1 and len(after - before) == 1


def test_longer_options_skip_tuned_widths_and_unfinished_runs(tmp_path):
    study = extend.read_study(fake_study(tmp_path))
    g = load_groups(study.dir)["mpnn"]
    with Store(study.dir, create=False) as store:
        runs = {r["id"]: r for r in store.runs()}
    sizes = design.parameter_counts("mpnn", [8, 16, 32], {"num_layers": 2})
    tokens = [10000, 39999, 40000, 44460]
    opts = design.longer_options("mpnn", g, runs, sizes, tokens, checkpoints, lambda N, T: 1.0, fixed={8})
    assert sorted({o.width for o in opts}) == [16, 32]
    assert all(o.tokens >= 40000 and len(o.replaces) == 1 for o in opts)   # at least LONGER x 20,000
    assert all(g.run_names[o.replaces[0]] == f"mpnn-w{o.width}-fake" for o in opts)
    runs["mpnn-w16-fake"] = dict(runs["mpnn-w16-fake"], status="running")
    opts = design.longer_options("mpnn", g, runs, sizes, tokens, checkpoints, lambda N, T: 1.0, fixed=set())
    assert sorted({o.width for o in opts}) == [8, 32]


def test_widths_where_width_barely_moves_N_are_not_offered():
    """GemNet's many-body bilinear maps do not depend on the width: at widths 1-4 doubling the width adds
    < 40 % parameters, so runs there would move the loss at almost constant N. The other families' N grows
    at least linearly with width from width 1."""
    g = design.parameter_counts("gemnet", [1, 2, 4, 8, 16], {})
    slope = design.size_elasticity("gemnet", g, {})
    assert slope[1] < 0.2 and slope[4] < design.MIN_ELASTICITY < slope[8] and slope[16] > 1.0
    assert np.isclose(slope[4], np.log(g[8] / g[4]) / np.log(2))
    for fam in ("mpnn", "egnn"):
        s = design.size_elasticity(fam, design.parameter_counts(fam, [1, 2, 4], {}), {})
        assert min(s.values()) > 1.0


def test_pilot_costs_include_the_learning_rate_sweep(tmp_path):
    """The pilot's estimate adds the sweep (grid × max(fractions) of a run at the base and transfer widths,
    first seed only), and its measured cost counts the sweep runs of the store."""
    from symscale.plan import pilot
    from symscale.study.schema import parse_study

    raw = {"name": "p", "out": str(tmp_path / "p"), "data": "embedded", "tokens": 1000, "seeds": [0, 1],
           "architectures": [{"family": "mpnn", "widths": [4, 16], "options": {"num_layers": 2}}]}
    plain = extend.Study(raw=raw, cfg=parse_study(raw), dir=tmp_path / "p", source="p.yaml")
    tuned_raw = {**raw, "tune": {"lrs": [1e-3, 1e-2, 1e-1], "fractions": [0.1, 0.5]}}
    tuned = extend.Study(raw=tuned_raw, cfg=parse_study(tuned_raw), dir=tmp_path / "p", source="p.yaml")
    a, b = pilot.cost_per_token(plain, "flops")["mpnn"], pilot.cost_per_token(tuned, "flops")["mpnn"]
    assert sorted(a) == sorted(b) == [4, 8, 16]
    assert b[8] == pytest.approx(a[8], rel=1e-6)                             # not swept
    for w in (4, 16):                                                        # 3 values × 0.5 of a run / 2 seeds
        assert b[w] == pytest.approx(a[w] * (1 + 3 * 0.5 / 2), rel=1e-6)
    study = fake_study(tmp_path)
    with Store(study) as store:
        store.add_runs([SimpleNamespace(id="mpnn-tune-x", group="mpnn@tune", family="mpnn", width=8, seed=0,
                                        run_dir=study / "t", config=SimpleNamespace(model_dump=lambda mode=None: {}))])
        store.finish("mpnn-tune-x", {"status": "completed", "rows": [], "summary": {"train_time_s": 3600.0}})
        before = pilot.measured_cost(extend.read_study(study), "hours")
        store.set_meta("study", {**store.meta("study"), "tune_run_ids": ["mpnn-tune-x"]})
    assert pilot.measured_cost(extend.read_study(study), "hours") == pytest.approx(before + 1.0)
