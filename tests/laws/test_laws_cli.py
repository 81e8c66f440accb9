"""Inputs (CSV, study directories), their errors, and the fit/report commands end to end."""

import base64
import json
import re

import numpy as np
import pytest

from symscale.cli import main
from symscale.errors import DataError
from symscale.laws import drop_warmup, load_csv, load_study
from synth import make_group, write_csv, write_study

CSV_FLAGS = ["--group-col", "arch", "--run-col", "run", "--time-col", "time_s"]
Q_KEYS = ("gamma_c", "gamma_h", "alpha", "beta", "a", "b", "L_inf", "A", "B", "gamma_c_derived")


@pytest.fixture(scope="module")
def groups():
    return [make_group("mpnn", n_runs=4, n_ckpt=12, seed=1, alpha=0.3, beta=0.3, d_range=(1e7, 1e9)),
            make_group("esen", n_runs=4, n_ckpt=12, seed=2, alpha=0.8, beta=0.7, d_range=(1e7, 1e9))]


def _csv_text(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    return p


GOOD_HEAD = "arch,N,D,C,loss\n"
GOOD_ROWS = "a,1e5,1e6,3e11,1.0\na,1e5,2e6,6e11,0.9\na,1e6,1e6,3e12,0.8\na,1e6,2e6,6e12,0.7\n"


@pytest.mark.parametrize("text,flags,pattern", [
    (GOOD_HEAD + GOOD_ROWS, {"loss_col": "mae"}, r"missing column 'mae' \(--loss-col\)"),
    (GOOD_HEAD + GOOD_ROWS + "a,-1,1e6,3e11,0.5\n", {}, r"line 6: column 'N' must be > 0"),
    (GOOD_HEAD + GOOD_ROWS + "a,1e5,0,3e11,0.5\n", {}, r"line 6: column 'D' must be > 0"),
    (GOOD_HEAD + GOOD_ROWS + "a,1e5,1e6,3e11,nan\n", {}, r"line 6: column 'loss' is NaN"),
    (GOOD_HEAD + GOOD_ROWS + "a,1e5,1e6,abc,0.5\n", {}, r"line 6: column 'C' is not a number"),
    (GOOD_HEAD + GOOD_ROWS + "b,1e5,1e6,3e11,0.5\n", {}, r"group 'b' has 1 run \(need at least 2\)"),
])
def test_csv_errors(tmp_path, text, flags, pattern):
    with pytest.raises(DataError, match=pattern) as exc:
        load_csv(_csv_text(tmp_path, text), group_col="arch", **flags)
    assert "\n" not in str(exc.value) and "bad.csv" in str(exc.value)


def test_csv_kappa_and_runs(tmp_path):
    g = load_csv(_csv_text(tmp_path, GOOD_HEAD + GOOD_ROWS), group_col="arch")["a"]
    assert g.n_runs == 2 and g.n_points == 4
    assert g.kappa == pytest.approx(1.0)   # C = 3·1·N·D in GOOD_ROWS
    assert g.H is None


def test_drop_warmup_uses_each_runs_tokens(groups):
    g = groups[0]
    kept = drop_warmup(g, 0.05)
    assert kept.n_runs == g.n_runs
    for i in range(g.n_runs):
        d = g.D[g.run == i]
        assert np.all(kept.D[kept.run == i] >= 0.05 * d.max())
        assert (kept.run == i).sum() == np.count_nonzero(d >= 0.05 * d.max())


def test_drop_tokens_drops_an_absolute_transient(groups):
    """``tokens`` cuts every run at the same atom count, whatever its budget; a run shorter than it vanishes."""
    g = groups[0]
    cut = float(np.median(g.D))
    kept = drop_warmup(g, 0.05, cut)
    assert kept.n_points == np.count_nonzero((g.D >= cut) & (g.D >= 0.05 * np.array(
        [g.D[g.run == r].max() for r in g.run])))
    assert kept.D.min() >= cut
    assert drop_warmup(g, 0.05, 0.0).n_points == drop_warmup(g, 0.05).n_points
    assert drop_warmup(g, 0.0, float(g.D.max()) * 2).n_points == 0


def test_study_reader_and_divergence(tmp_path, groups):
    root = write_study(tmp_path / "study", groups, diverge="mpnn-1")
    data = load_study(root)
    assert sorted(data) == ["esen", "mpnn"]
    m = data["mpnn"]
    assert m.run_status[m.run_names.index("mpnn-1")] == "diverged"
    assert np.count_nonzero(m.run == m.run_names.index("mpnn-1")) == 6   # points before the NaN only
    assert m.kappa == pytest.approx(3.0) and m.H is not None
    fm = load_study(root, loss_key="force_mae")["esen"]
    assert np.allclose(fm.loss, 1.5 * data["esen"].loss)


def test_study_errors(tmp_path, groups):
    root = write_study(tmp_path / "s", groups[:1])
    run = root / "mpnn" / "mpnn-0"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["{not json"] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl: line 3: invalid JSON"):
        load_study(root)
    rec = json.loads(lines[2])
    rec["loss"] = float("nan")
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"line 3: key 'loss' is not finite"):
        load_study(root)
    del rec["tokens"]
    rec["loss"] = 1.0
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"line 3: missing key 'tokens'"):
        load_study(root)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text(json.dumps({"model": "mpnn", "status": "completed"}))
    (run / "metrics.jsonl").rename(run / "m.bak")
    with pytest.raises(DataError, match=r"mpnn-0/metrics.jsonl: missing"):
        load_study(root)
    (run / "summary.json").write_text(json.dumps({"model": "mpnn", "status": "running"}))
    assert load_study(root)["mpnn"].n_runs == 3   # a run not yet evaluated is skipped
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no run directories"):
        load_study(tmp_path / "empty")

def test_cli_errors_exit_2(tmp_path, capsys):
    bad = _csv_text(tmp_path, GOOD_HEAD + GOOD_ROWS + "a,1e5,1e6,3e11,-2\n")
    assert main(["fit", str(bad), "--group-col", "arch", "--bootstrap", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("symscale: error:") and "line 6: column 'loss' must be > 0" in err
    assert len(err.splitlines()) == 1
    assert main(["fit", str(bad), "--group-col", "arch", "--drop-fraction", "1.5"]) == 2
    assert "--drop-fraction" in capsys.readouterr().err
    assert main(["fit", str(bad), "--group-col", "arch", "--drop-tokens", "-1"]) == 2
    assert "--drop-tokens must be >= 0" in capsys.readouterr().err


def test_fit_csv_end_to_end(tmp_path, groups, capsys):
    csv_path = write_csv(tmp_path / "runs.csv", groups)
    out, plots = tmp_path / "laws.json", tmp_path / "plots"
    assert main(["fit", str(csv_path), *CSV_FLAGS, "--json", str(out), "--plots", str(plots),
                 "--bootstrap", "40", "--seed", "1"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^esen\s+4\s+\d+\s+0\.\d+ \[", table, re.M)
    doc = json.loads(out.read_text())
    for name in ("mpnn", "esen"):
        g = doc["groups"][name]
        for key in Q_KEYS:
            assert set(g[key]) >= {"value", "ci_low", "ci_high"}, key
        assert g["n_runs"] == 4 and isinstance(g["n_points"], int)
        assert isinstance(g["backtest_rel_error"], float)
    assert abs(doc["groups"]["esen"]["alpha"]["value"] - 0.8) < 0.05
    for stem in ("frontiers", "allocation", "exponents", "curves_mpnn", "sumlaw_esen"):
        assert (plots / f"{stem}.png").stat().st_size > 1000 and (plots / f"{stem}.svg").is_file()
    assert not list(plots.glob(".*tmp"))
    # report from the fit directory: no refit, images embedded
    assert main(["report", str(plots)]) == 0
    html = (plots / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list(plots.glob("*.png")))
    b64 = re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(b64)[:4] == b"\x89PNG"
    md = (plots / "report.md").read_text()
    for section in ("Exponents", "Consistency checks", "allocation", "back-test", "Inventory of runs", "Warnings"):
        assert section in md
    assert "a + b = 1" in md and "mpnn-3" in md


def test_report_on_study_directory(tmp_path, groups, capsys):
    root = write_study(tmp_path / "study", groups[:1] + [make_group("egnn", n_runs=2, n_ckpt=8, seed=4)])
    assert main(["report", str(root), "--bootstrap", "20"]) == 0
    out = root / "report"
    doc = json.loads((out / "fit.json").read_text())
    assert doc["groups"]["egnn"]["n_runs"] == 2
    assert any("only 2 runs" in w for w in doc["groups"]["egnn"]["warnings"])
    assert "only 2 runs" in (out / "report.md").read_text()
    assert (out / "report.html").stat().st_size > 10000
    # the study can be re-read with the report inside it
    assert main(["fit", str(root), "--bootstrap", "0"]) == 0
