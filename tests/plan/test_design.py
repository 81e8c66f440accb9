"""``symscale plan design``: the criterion, the greedy search, the study file it writes, the pilot, and the
demonstration on simulated studies (docs/laws.md, "Planning a study: plan design")."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from cli_helpers import assert_one_line_error, run_cli
from symscale import laws
from symscale.errors import ConfigError
from symscale.laws.io import GroupData
from symscale.plan import design, extend, fisher, pilot, search
from symscale.plan.source import group_laws
from symscale.study.schema import TuneSpec, expand, load_study_config, parse_study
from synth import TRUTH

# ------------------------------------------------------------------ simulated studies from a known law
KAPPA = 2.0                      # C = 3κND = 6ND
SIGMA, TAU = 0.01, 0.02          # within-run log noise, run offsets (seed-to-seed scatter of whole curves)
MAX_TOKENS = 10 ** 10
PILOT_WIDTHS = [32, 100, 316]    # "widths" with N = 100·w²: N 1e5 .. 1e7
NAIVE_WIDTHS = [32, 56, 100, 178, 316]


def size(w):
    return 100.0 * w * w


def checkpoints(T):
    return design.fitted_checkpoints(T, 20, None, 1, 0.05)


def flops(N, T):
    return 3 * KAPPA * N * T


def simulate(runs, rng, first=0):
    """(N, D, run, loss) of runs [(N, tokens)] from TRUTH with checkpoint noise σ and run offsets τ."""
    cks = [checkpoints(T) for _, T in runs]
    N = np.concatenate([np.full(len(c), n) for c, (n, _) in zip(cks, runs)])
    D = np.concatenate(cks)
    run = np.concatenate([np.full(len(c), k) for k, c in enumerate(cks)])
    mu = TRUTH["L_inf"] + TRUTH["A"] * N ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"]
    loss = mu * np.exp(rng.normal(0, SIGMA, mu.size) + rng.normal(0, TAU, len(runs))[run])
    return N, D, run + first, loss


def group(*parts) -> GroupData:
    N, D, run, loss = (np.concatenate(x) for x in zip(*parts))
    R = int(run.max()) + 1
    return GroupData(name="g", run=run, N=N, D=D, C=3 * KAPPA * N * D, H=None, loss=loss, kappa=KAPPA,
                     run_names=[f"r{i}" for i in range(R)], run_status=["completed"] * R)


def result(res) -> dict:
    s = res.summary
    return {k: {"width": s[k]["ci_high"] - s[k]["ci_low"], "identified": bool(s[k]["identified"]),
                "covers": bool(s[k]["ci_low"] <= {"alpha": TRUTH["alpha"], "beta": TRUTH["beta"]}[k] <= s[k]["ci_high"])}
            for k in ("alpha", "beta")}


def trial(C: float, seed: int) -> tuple[dict, dict, search.Plan]:
    """Naive design vs pilot + plan, both costing at most C FLOPs, fitted with 200 residual replicates.

    Naive: 5 widths log-spaced over N 1e5–1e7, all at the one token budget that spends C. Planned: a pilot
    of 3 widths over the same range costing 15 % of C, its fit, then :func:`search.greedy` with the rest.
    """
    rng = np.random.default_rng(seed)
    T = C / (3 * KAPPA * sum(size(w) for w in NAIVE_WIDTHS))
    naive = laws.analyse_group(group(simulate([(size(w), T) for w in NAIVE_WIDTHS], rng)), n_boot=200, seed=seed)
    Tp = int(0.15 * C / (3 * KAPPA * sum(size(w) for w in PILOT_WIDTHS)))
    pilot_runs = [(size(w), Tp) for w in PILOT_WIDTHS]
    part = simulate(pilot_runs, rng)
    g0 = group(part)
    doc = json.loads(json.dumps(laws.to_json({"g": laws.analyse_group(g0, n_boot=200, seed=seed)}), allow_nan=False))
    model = design.group_model(group_laws(doc)["g"], g0, 1, np.random.default_rng(seed))
    options = design.make_options("g", {w: size(w) for w in design.width_grid(PILOT_WIDTHS)},
                                  design.token_grid(MAX_TOKENS, 1), checkpoints, flops)
    plan = search.greedy([model], options, C - sum(flops(n, t) for n, t in pilot_runs))
    new = simulate([(o.N, o.tokens) for o in plan.chosen], rng, first=len(pilot_runs))
    planned = laws.analyse_group(group(part, new), n_boot=200, seed=seed)
    return result(naive), result(planned), plan


def identifies(r: dict) -> bool:
    return all(r[k]["identified"] and r[k]["width"] < 0.15 for k in ("alpha", "beta"))


def test_planned_design_identifies_where_a_naive_grid_does_not():
    """Same compute (1e15 FLOPs): the planned design pins α and β (95 % widths < 0.15), the naive grid not."""
    naive, planned, plan = trial(1e15, 6)
    assert identifies(planned), planned
    assert not identifies(naive), naive
    assert naive["alpha"]["width"] > 2 * planned["alpha"]["width"]
    assert plan.spent <= 0.85e15 * (1 + 1e-9)
    assert len({o.width for o in plan.chosen}) == len(plan.chosen)
    assert any(o.N < size(PILOT_WIDTHS[0]) for o in plan.chosen)    # it goes below the pilot's sizes
    assert {o.tokens for o in plan.chosen} != {plan.chosen[0].tokens}   # and varies the budgets


@pytest.mark.slow
def test_planned_vs_naive_20_studies():
    """The docs' table: 20 simulated studies at 1e15 FLOPs."""
    rows = [trial(1e15, s)[:2] for s in range(20)]
    n_ok = {k: sum(identifies(r[i]) for r in rows) for i, k in enumerate(("naive", "planned"))}
    for i, k in enumerate(("naive", "planned")):
        w = {q: np.median([r[i][q]["width"] for r in rows]) for q in ("alpha", "beta")}
        cov = {q: sum(r[i][q]["covers"] for r in rows) for q in ("alpha", "beta")}
        print(f"\n{k}: identified with widths < 0.15 in {n_ok[k]}/20; median width alpha {w['alpha']:.3f}, beta "
              f"{w['beta']:.3f}; truth covered alpha {cov['alpha']}/20, beta {cov['beta']}/20")
    assert n_ok["planned"] >= 19 and n_ok["naive"] <= 1


# ------------------------------------------------------------------ the criterion and the search
def test_predicted_widths_match_the_fitter():
    """Without run offsets the predicted widths are those of the fitter's bootstrap (within 40 %)."""
    runs = [(n, 1e9) for n in np.geomspace(1e5, 1e7, 5)]
    D = search.padded([checkpoints(T) for _, T in runs])
    N = np.array([n for n, _ in runs])
    theta = fisher.theta_array(**TRUTH)
    noise = fisher.Noise(0.01, 0.0)
    H, M = fisher.run_matrices(theta, N, D, noise, 1e6, 1e8)
    cov = fisher.covariance(H.sum(1), M.sum(1), fisher.prior_precision(theta, 0.1), noise)
    pred = fisher.widths(cov, fisher.gradients(theta))[0]
    fitted = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        Nc = np.concatenate([np.full(D.shape[1], n) for n in N])
        Dc = D.ravel()
        mu = TRUTH["L_inf"] + TRUTH["A"] * Nc ** -TRUTH["alpha"] + TRUTH["B"] * Dc ** -TRUTH["beta"]
        g = group((Nc, Dc, np.repeat(np.arange(5), D.shape[1]), mu * np.exp(rng.normal(0, 0.01, mu.size))))
        s = laws.analyse_group(g, n_boot=200, seed=seed).summary
        fitted.append([s[k]["ci_high"] - s[k]["ci_low"] for k in ("alpha", "beta", "a")])
    ratio = pred / np.mean(fitted, axis=0)
    assert np.all((ratio > 0.6) & (ratio < 1.4)), (pred, fitted)


def test_run_offsets_make_more_runs_worth_more_than_more_checkpoints():
    """With τ > 0 a run's offset is not averaged away by its checkpoints: ten seeds of each run beat ten times
    the checkpoints per run, which they equal when τ = 0; the predicted α width grows with τ."""
    theta = fisher.theta_array(**TRUTH)
    P = fisher.prior_precision(theta, 0.1)
    Ns = np.array([1e5, 1e6, 1e7])

    def alpha_width(points, tau, copies=1):
        D = np.array([design.fitted_checkpoints(10 ** 9, points, None, 1, 0.05)] * 3)
        noise = fisher.Noise(0.01, tau)
        H, M = fisher.run_matrices(theta, Ns, D, noise, 1e6, 1e8)
        return fisher.widths(fisher.covariance(copies * H.sum(1), copies * M.sum(1), P, noise),
                             fisher.gradients(theta))[0, 0]

    assert alpha_width(20, 0.02) > 2 * alpha_width(20, 0.0)
    assert alpha_width(200, 0.02) > 2 * alpha_width(20, 0.02, copies=10)
    assert alpha_width(200, 0.0) == pytest.approx(alpha_width(20, 0.0, copies=10), rel=0.35)


def _model(theta=None):
    return search.GroupModel(name="g", theta=fisher.theta_array(**TRUTH) if theta is None else theta,
                             noise=fisher.Noise(0.01, 0.01), N=np.array([1e5, 1e6, 1e7]),
                             D=search.padded([checkpoints(1e7)] * 3), loss_scale=0.1)


def _options(tokens=(10 ** 7, 10 ** 8, 10 ** 9)):
    return design.make_options("g", {w: size(w) for w in (10, 18, 56, 178, 562)}, list(tokens), checkpoints, flops)


def test_greedy_respects_the_budget_and_plans_each_width_once():
    for budget in (1e13, 1e14, 1e15):
        plan = search.greedy([_model()], _options(), budget)
        assert plan.chosen and plan.spent <= budget * (1 + 1e-12)
        assert abs(sum(o.cost for o in plan.chosen) - plan.spent) <= 1e-9 * budget   # upgrades pay the difference
        assert len({o.width for o in plan.chosen}) == len(plan.chosen)
        assert np.all(plan.after["g"] < plan.before["g"])
    assert search.greedy([_model()], _options(), 1e9).chosen == []          # nothing affordable


def test_greedy_averages_over_parameter_points():
    """The criterion is the mean over parameter points, and a plausible law with a faster-decaying model term
    (α = 1.2) asks for a longer run of a small model than the truth alone does."""
    other = (0.0, 400.0, 300.0, 1.2, 0.4)
    both = fisher.theta_array(*[np.array([TRUTH[k], v]) for k, v in zip(("L_inf", "A", "B", "alpha", "beta"), other)])
    states = [search._GroupState(_model(th), _options()) for th in (both, both[:1], both[1:])]
    obj = [float(st.objective(st.H, st.M)) for st in states]
    assert obj[0] == pytest.approx(0.5 * (obj[1] + obj[2]), rel=1e-12)
    truth = search.greedy([_model()], _options(), 1e15)
    robust = search.greedy([_model(both)], _options(), 1e15)
    assert (18, 10 ** 8) in [(o.width, o.tokens) for o in truth.chosen]
    assert (18, 10 ** 9) in [(o.width, o.tokens) for o in robust.chosen]


def test_grids():
    assert design.width_grid([8, 16, 32]) == [1, 2, 3, 4, 6, 11, 23, 45, 64, 91, 128]
    t = design.token_grid(44460, 198)
    assert t[0] == 20 * 198 and t[-1] == 44460 and len(t) == 6
    assert design.token_grid(10 ** 10, 1)[0] == 10 ** 7
    ck = design.fitted_checkpoints(20000, 12, None, 200, 0.05)
    assert ck[-1] == 20000 and min(ck) >= 1000
    assert pilot.pilot_widths([4, 16]) == [4, 8, 16] and pilot.pilot_widths([8]) == [8, 16, 32]
    # report.drop_tokens: the fits keep no checkpoint before it, so a budget below it is not an option
    ck = design.fitted_checkpoints(20000, 12, None, 200, 0.05, 5000)
    assert min(ck) >= 5000 and ck[-1] == 20000
    ckpts = lambda T: design.fitted_checkpoints(T, 12, None, 200, 0.05, 5000)  # noqa: E731
    opts = design.make_options("g", {8: 1e3}, [4000, 20000], ckpts, lambda N, T: 1.0)
    assert [o.tokens for o in opts] == [20000]
    assert pilot.pilot_path(Path("a/next.yaml")) == Path("a/next.pilot.yaml")


# ------------------------------------------------------------------ study files: tokens per width, extensions
IDS_BEFORE = {   # run ids computed before `tokens` could map widths (commit e94f77c): they must not change
    "tokens": ["mpnn-w8-s0-82bdf73f89", "mpnn-w16-s0-6b4aea1b35", "egnn-w4-s0-77b84a9a11", "egnn-w8-s0-0c0fd2dafd",
               "gemnet-w4-s0-d5bd0f54fa"],
    "epochs": ["mpnn-w8-s0-4a9afe981c", "mpnn-w16-s0-81509853b0", "egnn-w4-s0-77b84a9a11", "egnn-w8-s0-0c0fd2dafd",
               "gemnet-w4-s0-d5bd0f54fa"]}


def _ids_doc(budget: str) -> dict:
    return {"name": "ids", "data": "embedded", budget: 5000 if budget == "tokens" else 1,
            "architectures": [{"family": "mpnn", "widths": [8, 16]}, {"family": "egnn", "widths": [4, 8], "tokens": 3000},
                              {"family": "gemnet", "widths": [4], "epochs": 0.5}]}


def _ids(doc: dict) -> list[str]:
    return [r.id for r in expand(parse_study(doc), None, Path("/tmp/ids"), fingerprint="0" * 64)]


def test_integer_budgets_keep_their_run_ids():
    for budget, ids in IDS_BEFORE.items():
        assert _ids(_ids_doc(budget)) == ids


def test_tokens_may_map_widths_to_their_own_budgets():
    doc = _ids_doc("epochs")
    doc["architectures"][0].update(widths=[8, 16, 32], tokens={32: 7000})
    doc["architectures"][1].update(widths=[4, 8, 2], tokens={2: 900, 4: 3000, 8: 3000})
    assert not set(IDS_BEFORE["epochs"]) <= set(_ids(doc))            # width 2 moved the μP base width ...
    doc["architectures"][1]["base_width"] = 4                          # ... unless it is pinned
    runs = {r.id: r for r in expand(parse_study(doc), None, Path("/tmp/ids"), fingerprint="0" * 64)}
    assert set(IDS_BEFORE["epochs"]) < set(runs)                     # listed or not, the old runs keep their ids
    budgets = {(r.family, r.width): (r.config.tokens, r.config.epochs) for r in runs.values()}
    assert budgets[("mpnn", 32)] == (7000, None) and budgets[("mpnn", 8)] == (None, 1.0)
    assert budgets[("egnn", 2)] == (900, None) and budgets[("egnn", 4)] == (3000, None)
    for bad, needle in (({12: 5}, "architectures.0: tokens: width 12 is not one of the widths [8, 16]"),
                        ({8: 0}, "architectures.0.tokens: Input should be greater than or equal to 1"),
                        ("many", "architectures.0.tokens: Input should be a valid integer")):
        doc = _ids_doc("epochs")
        doc["architectures"][0]["tokens"] = bad
        with pytest.raises(ConfigError) as exc:
            parse_study(doc, source="s.yaml")
        assert str(exc.value).startswith(f"s.yaml: {needle}") and "\n" not in str(exc.value)


LAW = dict(L_inf=0.3, A=20.0, B=40.0, alpha=0.4, beta=0.35)
STUDY = """name: fake
data: embedded
tokens: 20000
evaluation: {points: 12}
architectures:
  - family: mpnn
    widths: [8, 16, 32]
    options: {num_layers: 2}
report: {bootstrap: 50}
"""


def fake_study(root: Path, rate: float = 2000.0) -> Path:
    """A study directory (study.yaml + store, no training) of mpnn at widths 8, 16, 32 trained for 20,000 atoms,
    whose losses follow LAW with 1 % noise; training time D / ``rate``."""
    from symscale.study.store import Store

    d = root / "study"
    d.mkdir()
    (d / "study.yaml").write_text(STUDY + f"out: {d}\n")
    rng = np.random.default_rng(0)
    ids = []
    with Store(d) as store:
        for w, N in design.parameter_counts("mpnn", [8, 16, 32], {"num_layers": 2}).items():
            D = np.array(design.fitted_checkpoints(20000, 12, None, 200, 0.0))
            loss = (LAW["L_inf"] + LAW["A"] * N ** -LAW["alpha"] + LAW["B"] * D ** -LAW["beta"]) * np.exp(
                rng.normal(0, 0.01, D.size))
            rid = f"mpnn-w{w}-fake"
            store.add_runs([SimpleNamespace(id=rid, group="mpnn", family="mpnn", width=w, seed=0, run_dir=d / rid,
                                            config=SimpleNamespace(model_dump=lambda mode=None: {}))])
            rows = [{"step": k, "tokens": int(x), "params": N, "compute": 6.0 * N * x, "train_time_s": x / rate,
                     "loss": float(v), "kappa": 2.0} for k, (x, v) in enumerate(zip(D, loss))]
            store.finish(rid, {"status": "completed", "rows": rows, "summary": {"params": N, "kappa": 2.0}})
            ids.append(rid)
        store.set_meta("study", {"name": "fake", "run_ids": ids, "config": {"report": {"bootstrap": 50, "seed": 0}}})
    return d


def _real_ids(path: Path, study_dir: Path) -> set[str]:
    from symscale.data import open_dataset

    cfg = load_study_config(path)
    return {r.id for r in expand(cfg, None, study_dir, fingerprint=open_dataset(None).fingerprint)}


def test_plan_design_writes_a_study_that_extends_the_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = fake_study(tmp_path)
    before = _real_ids(study / "study.yaml", study)
    code, out, err = run_cli(["plan", "design", study, "--budget", "1e12", "--out", "next.yaml"], capsys)
    assert code == 0, err
    text = (tmp_path / "next.yaml").read_text()
    assert text.splitlines()[0] == extend.MARKER
    raw = yaml.safe_load(text)
    entry = raw["architectures"][0]
    new = sorted(set(entry["widths"]) - {8, 16, 32})
    assert new and entry["base_width"] == 8 and Path(raw["out"]).resolve() == study.resolve()
    longer = sorted(set(entry["tokens"]) & {8, 16, 32})                 # finished widths trained longer
    assert sorted(entry["tokens"]) == sorted(new + longer) and raw["tokens"] == 20000  # the others keep theirs
    assert all(3960 <= entry["tokens"][w] <= 44460 for w in new)          # 20 batches .. one epoch of the data
    assert all(2 * 20000 <= entry["tokens"][w] <= 44460 for w in longer)  # at least LONGER x their budget
    after = _real_ids(tmp_path / "next.yaml", study)
    assert len(before - after) == len(longer)                            # only the lengthened widths' runs
    assert len(after - before) == len(new) + len(longer)                 # are replaced; the rest are reused
    assert f"plan: {len(new)} new width(s), {len(longer)} finished width(s) trained longer" in out
    assert "mpnn: alpha" in out
    rows = [x.split() for x in text.splitlines() if x.startswith(("#   mpnn ", "#   longer mpnn "))]
    assert sorted(int(r[-4]) for r in rows) == sorted(new + longer)
    spent = sum(6.0 * float(r[-3]) * float(r[-2]) for r in rows)
    assert 0 < spent <= 1e12
    code, _, err = run_cli(["plan", "design", study, "--budget", "1e12", "--out", "next.yaml", "--seed", "3"], capsys)
    assert code == 0, err                                                # its own file may be replaced


def test_plan_design_hours_budget(tmp_path, capsys):
    study = fake_study(tmp_path, rate=2000.0)
    code, out, err = run_cli(["plan", "design", study, "--budget", "30s", "--out", tmp_path / "n.yml"], capsys)
    assert code == 0, err
    text = (tmp_path / "n.yml").read_text()
    raw = yaml.safe_load(text)
    tokens = raw["architectures"][0]["tokens"]
    # the header lists each new width's cost in hours: probed steps, calibrated so that the finished runs
    # cost what they measured (2000 atoms/s)
    planned = [line.split() for line in text.splitlines() if line.startswith("#   mpnn ")]
    assert planned and {int(p[2]) for p in planned} == {w for w in tokens if w not in (8, 16, 32)}
    longer = [line.split()[1:] for line in text.splitlines() if line.startswith("#   longer mpnn ")]
    # the header rounds each cost to 3 significant digits (<= 0.05 % each): a plan that spends the whole
    # budget may sum to slightly more than it once rounded
    assert 0 < sum(float(p[5]) for p in planned + longer) <= 30 / 3600 * (1 + 1e-3)
    assert all(int(p[4]) == tokens[int(p[2])] for p in planned)
    assert "of 30 s" in out.splitlines()[0]


def test_plan_design_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)             # no STUDY: the default study lives in ./runs/plan
    study = fake_study(tmp_path)
    (tmp_path / "taken.yaml").write_text("mine\n")
    (tmp_path / "fit.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    cases = [(["plan", "design", "--budget", "1s", "--out", tmp_path / "d.yaml"], "too small for a pilot"),
             (["plan", "design", study, "--budget", "1e12", "--out", tmp_path / "taken.yaml"], "taken.yaml exists"),
             (["plan", "design", tmp_path / "empty", "--budget", "1e12"], "not a study directory"),
             (["plan", "design", tmp_path / "nope.yaml", "--budget", "1e12"], "no such study file"),
             (["plan", "design", tmp_path / "fit.json", "--budget", "1e12"], "a fit document cannot be extended"),
             (["plan", "design", study, "--budget", "lots"], "--budget")]
    for argv, needle in cases:
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, needle)
    assert (tmp_path / "taken.yaml").read_text() == "mine\n"
    assert not (tmp_path / "runs" / "plan").exists() and not (tmp_path / "d.pilot.yaml").exists()


def test_extension_refuses_a_width_already_in_the_study(tmp_path):
    study = extend.read_study(fake_study(tmp_path))
    with pytest.raises(ConfigError, match="width 16 is already in the study"):
        extend.extended(study, {"mpnn": {16: 1000}})
    raw = extend.extended(study, {"mpnn": {4: 1000}})
    assert extend.check_extension(study, raw, 1, "x.yaml").architectures[0].widths == [4, 8, 16, 32]
    with pytest.raises(ConfigError, match="would not keep the study's runs"):
        extend.check_extension(study, {**raw, "mup": False}, 1, "x.yaml")
    assert "transfer_width" not in raw["architectures"][0]  # no tune: section, nothing to pin
    # with tune: the μP transfer check stays at the widest width already swept (no unbudgeted sweep at 64)
    tuned = extend.Study(raw={**study.raw, "tune": {"lrs": [1e-3, 1e-2]}},
                         cfg=study.cfg.model_copy(update={"tune": TuneSpec(lrs=[1e-3, 1e-2])}),
                         dir=study.dir, source=study.source)
    raw = extend.extended(tuned, {"mpnn": {64: 1000}})
    assert raw["architectures"][0]["transfer_width"] == 32
    assert extend.check_extension(tuned, raw, 1, "x.yaml").architectures[0].check_width == 32


# ------------------------------------------------------------------ the pilot
PILOT_STUDY = """name: pil
out: {out}
data: embedded
evaluation: {{points: 8}}
architectures:
  - family: mpnn
    widths: [4, 16]
    options: {{num_layers: 2}}
report: {{bootstrap: 50}}
"""


def test_pilot_needs_a_budget_that_pays_for_it(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(PILOT_STUDY.format(out=tmp_path / "runs"))
    code, _, err = run_cli(["plan", "design", tmp_path / "s.yaml", "--budget", "1e8", "--out", tmp_path / "n.yaml"],
                           capsys)
    assert_one_line_error(code, err, "too small for a pilot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.slow
def test_pilot_then_plan(tmp_path, capsys):
    """No study yet: a pilot of 3 widths within 15 % of the budget is trained and fitted, then planned on."""
    from symscale.study.store import Store

    runs = tmp_path / "runs"
    (tmp_path / "s.yaml").write_text(PILOT_STUDY.format(out=runs))
    budget = 3e9
    code, out, err = run_cli(["plan", "design", tmp_path / "s.yaml", "--budget", f"{budget:g}", "--out",
                              tmp_path / "next.yaml"], capsys)
    assert code == 0, err
    pilot_cfg = load_study_config(tmp_path / "next.pilot.yaml")
    assert pilot_cfg.architectures[0].widths == [4, 8, 16] and pilot_cfg.architectures[0].base_width == 4
    with Store(runs, create=False) as store:
        done = [r for r in store.runs() if r["status"] == "completed"]
    assert len(done) == 3
    spent = sum(3 * r["kappa"] * r["params"] * r["tokens"] for r in done)
    assert spent <= 0.15 * budget * 1.05          # a run ends with the batch that crosses its budget (~200 atoms)
    assert {r["id"] for r in done} < _real_ids(tmp_path / "next.yaml", runs)
