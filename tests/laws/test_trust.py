"""Fit honesty and robust inputs (issue #11 §3): unidentified quantities, duplicates, extreme and binary input."""

import json
import re
import warnings

import numpy as np
import pytest

from symscale.cli import main
from symscale.errors import DataError
from symscale.laws import analyse_group, load_csv, load_study, to_json
from symscale.laws.bootstrap import quantity
from symscale.laws.io import assemble
from synth import make_group, write_csv, write_study

HEAD = "arch,run,N,D,C,loss\n"


def _csv(tmp_path, text, name="in.csv"):
    p = tmp_path / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def _rows(N_of_run, Ds, loss=lambda N, D: 0.05 + 40 * N ** -0.45 + 300 * D ** -0.4, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    lines = [f"a,r{r},{N:.6g},{D:.6g},{3 * N * D:.6g},{loss(N, D) * np.exp(rng.normal(0, noise)):.6g}"
             for r, N in enumerate(N_of_run) for D in Ds]
    return HEAD + "\n".join(lines) + "\n"


def _fit_doc(tmp_path, capsys, text, *flags):
    out = tmp_path / "fit.json"
    assert main(["fit", str(_csv(tmp_path, text)), "--group-col", "arch", "--run-col", "run",
                 "--bootstrap", "40", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())["groups"]["a"], capsys.readouterr().out


def _error(tmp_path, capsys, text, *flags):
    assert main(["fit", str(_csv(tmp_path, text)), "--group-col", "arch", "--bootstrap", "5", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("symscale: error: ") and len(err.splitlines()) == 1, err
    return err


GOOD = "a,r0,1e5,1e6,3e11,1.0\na,r0,1e5,2e6,6e11,0.9\na,r1,1e6,1e6,3e12,0.8\na,r1,1e6,2e6,6e12,0.7\n"


@pytest.mark.parametrize("row,pattern", [
    ("a,r1,1e300,1e6,3e11,0.5", r"line 6: column 'N' = 1e\+300 is outside \[1e-30, 1e\+30\]"),
    ("a,r1,1e5,1e6,3e300,0.5", r"line 6: column 'C' = 3e\+300 is outside"),
    ("a,r1,1e5,1e6,3e11,1e-300", r"line 6: column 'loss' = 1e-300 is outside"),
    ("a,r1,1e5,1e400,3e11,0.5", r"line 6: column 'D' is infinite"),
    ("a,r1,1e5,1e6,-inf,0.5", r"line 6: column 'C' is infinite"),
    ("a,r1,1e5,1e6,3e11,0", r"line 6: column 'loss' must be > 0"),
    ("a,r1,1e5,1e6,3e11", r"line 6: column 'loss' is missing"),
])
def test_bad_values_are_one_line_errors(tmp_path, capsys, row, pattern):
    err = _error(tmp_path, capsys, HEAD + GOOD + row + "\n", "--run-col", "run")
    assert re.search(pattern, err) and "in.csv" in err, err


def test_binary_csv_is_one_line_error(tmp_path, capsys):
    err = _error(tmp_path, capsys, b"arch,N,D,C,loss\n" + bytes(range(256)) * 8)
    assert "in.csv: line 3: not UTF-8 text (byte 0x80)" in err      # byte 0x0a ends line 2
    err = _error(tmp_path, capsys, b"arch,N,D,C,loss\na,1e5,1e6,3e11,\x001\n")
    assert "line 2: column 'loss' is not a number" in err
    # a byte-order mark is not an error
    g = load_csv(_csv(tmp_path, ("\ufeffarch,N,D,C,loss\n" + "a,1e5,1e6,3e11,1.0\na,1e6,1e6,3e12,0.8\n")
                      .encode("utf-8")), group_col="arch")["a"]
    assert g.n_points == 2


def test_study_metrics_not_utf8(tmp_path):
    root = write_study(tmp_path / "s", [make_group("m", n_runs=2, n_ckpt=5)])
    (root / "m" / "m-1" / "metrics.jsonl").write_bytes(b'{"loss": 1}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"m-1/metrics.jsonl: line 2: not UTF-8 text") as exc:
        load_study(root)
    assert "\n" not in str(exc.value)


def test_column_spanning_too_many_decades(tmp_path, capsys):
    text = _rows([1e-12, 1e-2, 1e8], [1e6, 1e7, 1e8])
    err = _error(tmp_path, capsys, text, "--run-col", "run")
    assert "group 'a': column 'N' spans 20.0 decades (line 2: 1e-12 to line 8: 1e+08)" in err


def test_values_at_the_limits_fit_without_overflow(tmp_path, capsys):
    """N and D over 15 decades, C = 3ND over 30 and losses near 1e-30: no overflow, the exponents found."""
    text = _rows(np.geomspace(1e-7, 1e8, 6), np.geomspace(1e-7, 1e8, 10),
                 loss=lambda N, D: 1.2e-30 * (1 + 1e-2 * N ** -0.3 + 1e-2 * D ** -0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)     # an overflow anywhere would fail the fit
        g, _ = _fit_doc(tmp_path, capsys, text, "--drop-fraction", "0")
    assert g["alpha"]["value"] == pytest.approx(0.3, abs=0.05) and g["beta"]["value"] == pytest.approx(0.3, abs=0.05)


def test_exact_duplicates_counted_once(tmp_path, capsys):
    text = _rows(np.geomspace(1e5, 1e7, 4), np.geomspace(1e8, 1e10, 8))
    lines = text.splitlines()
    clean, _ = _fit_doc(tmp_path, capsys, text)
    dup, out = _fit_doc(tmp_path, capsys, "\n".join(lines + lines[3:6] + [lines[3]]) + "\n")
    assert dup["n_points"] == clean["n_points"]
    assert "4 duplicate row(s) (same run, N, D and loss as an earlier row) counted once" in dup["warnings"]
    assert "4 duplicate row(s)" in out
    for key in ("alpha", "beta", "gamma_c", "L_inf"):
        assert dup[key] == clean[key]


def test_conflicting_rows_are_an_error(tmp_path, capsys):
    text = _rows(np.geomspace(1e5, 1e7, 3), np.geomspace(1e8, 1e10, 5))
    lines = text.splitlines()
    row = lines[2].split(",")
    row[-1] = "0.123"
    err = _error(tmp_path, capsys, "\n".join(lines + [",".join(row)]) + "\n", "--run-col", "run")
    assert "in.csv: lines 3 and 17: run 'r0' has two different checkpoints at D = " in err
    # without --run-col, two runs of one size are one "run" with two losses per D: the same error
    text = _rows([1e5, 1e5, 1e6], np.geomspace(1e8, 1e10, 5))
    assert "run 'N=100000' has two different checkpoints" in _error(tmp_path, capsys, text)


def test_store_rows_are_checked(tmp_path):
    rows = {"g": [("r0", 1e5, 1e6, 3e11, float("nan"), 1.0), ("r1", 1e6, 1e6, 3e300, float("nan"), 0.5)]}
    with pytest.raises(DataError, match=r"study.db: run 'r1': column 'C' = 3e\+300 is outside"):
        assemble(rows, {}, {}, str(tmp_path / "study.db"), True)
    rows = {"g": [("r0", 1e5, 1e6, 3e11, float("nan"), 1.0), ("r0", 1e5, 1e6, 3e11, float("nan"), 0.9)]}
    with pytest.raises(DataError, match=r"^study.db: run 'r0' has two different checkpoints at D = 1e\+06"):
        assemble(rows, {}, {}, "study.db", True)


def _not_identified(q):
    """A quantity flagged as not identified: its value kept for diagnostics, never presented as a number."""
    return q["identified"] is False and set(q) == {"value", "ci_low", "ci_high", "identified"}


def test_single_size_leaves_alpha_unidentified(tmp_path, capsys):
    g, out = _fit_doc(tmp_path, capsys, _rows([1e5] * 4, np.geomspace(1e6, 1e10, 12)), "--drop-fraction", "0")
    for key in ("alpha", "A", "L_inf", "a", "b", "gamma_c_derived"):
        assert _not_identified(g[key]), key
    assert _not_identified(g["allocation"]["G"]) and _not_identified(g["allocation"]["N_star_at_C_ref"])
    assert g["beta"]["value"] == pytest.approx(0.4, abs=0.05) and g["beta"]["ci_low"] is not None
    assert g["beta"]["identified"] is True
    assert any(w.startswith("alpha, A, L_inf, a, b, gamma_c_derived") and "every run has N = 100000" in w
               for w in g["warnings"])
    header, row = (line for line in out.splitlines() if line.startswith(("group ", "a ")))
    assert row[header.index("alpha"):].startswith("not identified (")   # never a bare number for alpha


def test_single_token_count_leaves_beta_unidentified(tmp_path, capsys):
    g, _ = _fit_doc(tmp_path, capsys, _rows(np.geomspace(1e4, 1e7, 8), [1e9]), "--drop-fraction", "0")
    assert _not_identified(g["beta"]) and _not_identified(g["B"]) and _not_identified(g["L_inf"])
    assert g["alpha"]["value"] is not None and g["alpha"]["identified"] is True
    assert any("every checkpoint has D = 1e+09" in w for w in g["warnings"])


def test_law_with_more_parameters_than_points_is_not_fitted(tmp_path, capsys):
    g, _ = _fit_doc(tmp_path, capsys, HEAD + GOOD)
    for key in ("alpha", "beta", "L_inf", "A", "B"):
        assert g[key]["value"] is None and g[key]["identified"] is False    # nothing fitted: no value at all
    assert g["interval_method"] == "runs"               # no fitted law to simulate from
    assert any("the sum law is not fitted: 4 distinct (N, D) point(s) for 5 identifiable parameter(s)" in w
               for w in g["warnings"])
    assert g["gamma_c"]["value"] is not None and g["gamma_c"]["identified"]  # 4 corners: L = F·C^-γ fitted
    assert g["frontier_c"]["free"]["gamma"]["identified"]
    # three points on the frontier: the free law (3 parameters + σ) is not identified
    g, _ = _fit_doc(tmp_path, capsys, HEAD + GOOD.rsplit("a,r1", 1)[0])
    assert g["frontier_c"]["free"]["gamma"]["identified"] is False and g["gamma_c"]["identified"]
    assert any(w.startswith("frontier_c.free not identified: the compute frontier has 3 corner(s)")
               for w in g["warnings"])


def test_nothing_fittable_is_an_error(tmp_path, capsys):
    err = _error(tmp_path, capsys, HEAD + "a,r0,1e5,1e6,3e11,1.0\na,r1,1e6,1e6,3e12,0.8\n", "--run-col", "run")
    assert "in.csv: group 'a': nothing can be fitted from 2 checkpoint(s)" in err


def test_replicates_without_two_sizes_are_left_out():
    """With 2 runs, replicates that draw one run twice have one N: their α is not used for the interval."""
    g = make_group("two", n_runs=2, n_ckpt=20, seed=4)
    r = analyse_group(g, n_boot=60, seed=0, intervals="runs")
    both = np.all(r.counts > 0, axis=1)
    assert 0 < both.sum() < 60
    expected = quantity(r.fit.alpha[0], r.boot.alpha[both])
    assert {k: r.summary["alpha"][k] for k in ("value", "ci_low", "ci_high")} == {k: expected[k] for k in ("value", "ci_low", "ci_high")}
    expected = quantity(r.fit.beta[0], r.boot.beta)                        # D varies in every replicate
    assert {k: r.summary["beta"][k] for k in ("value", "ci_low", "ci_high")} == {k: expected[k] for k in ("value", "ci_low", "ci_high")}


def test_report_with_unidentified_quantities(tmp_path, capsys):
    csv = _csv(tmp_path, _rows([1e5] * 4, np.geomspace(1e8, 1e10, 12)))
    assert main(["report", str(csv), "--group-col", "arch", "--run-col", "run", "--bootstrap", "20",
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| a | γ_c ≈ αβ/(α+β) | – | not identified |" in md
    assert (tmp_path / "rep" / "sumlaw_a.png").stat().st_size > 1000


def test_to_json_of_unidentified_is_flagged():
    g = make_group("one", n_runs=3, n_ckpt=12, seed=2, n_range=(1e5, 1e5))
    doc = to_json({"one": analyse_group(g, n_boot=10)})
    json.dumps(doc, allow_nan=False)
    assert _not_identified(doc["groups"]["one"]["alpha"])


def test_write_csv_round_trip(tmp_path):
    """The synthetic CSV writer used above reads back unchanged (guards the helpers of this file)."""
    g = make_group("g", n_runs=3, n_ckpt=5)
    back = load_csv(write_csv(tmp_path / "g.csv", [g]), group_col="arch", run_col="run")["g"]
    assert back.n_points == 15 and np.allclose(back.loss, g.loss, rtol=1e-7)


def test_flat_exponent_is_not_identified_everywhere(tmp_path, capsys):
    """Runs spanning 0.3 decades of N: α is not identified in the JSON, the table and the report; derived
    quantities follow, and no consistency check or verdict line is drawn from them (issue #12 §1)."""
    from symscale.laws.report import consistency, verdict

    flat = make_group("flat", n_runs=3, n_ckpt=10, noise=0.03, seed=1, n_range=(1e6, 2e6), d_range=(1e8, 1e10))
    good = make_group("good", n_runs=5, n_ckpt=10, noise=0.02, seed=2)
    csv = write_csv(tmp_path / "two.csv", [flat, good])
    assert main(["report", str(csv), "--group-col", "arch", "--run-col", "run", "--bootstrap", "100",
                 "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "rep" / "fit.json").read_text())["groups"]
    for key in ("alpha", "A", "a", "b", "gamma_c_derived"):
        assert _not_identified(doc["flat"][key]) and doc["flat"][key]["value"] is not None, key
    assert doc["flat"]["beta"]["identified"] and doc["good"]["alpha"]["identified"]
    assert any(w.startswith("alpha, A, a, b, gamma_c_derived") for w in doc["flat"]["warnings"])
    assert not any(w.startswith(("alpha: 95%", "a: 95%")) for w in doc["flat"]["warnings"])
    row = next(line for line in out.splitlines() if line.startswith("flat "))
    assert "not identified (" in row
    assert [r[2] for r in consistency(doc["flat"])] == ["not identified", "not identified"]
    lines = verdict({"groups": doc})
    assert lines[0].startswith("Best compute scaling: good")
    assert any(ln.startswith("flat:") and "not identified: α, a, b, γ derived" in ln for ln in lines)
    assert not any(ln.startswith("flat: compute-optimal") for ln in lines)
    html = (tmp_path / "rep" / "report.html").read_text()
    # the verdict and the frontier figure come before the tables, the inventory and the warnings
    order = [html.index(s) for s in ("<h2>Verdict</h2>", 'alt="frontiers"', "<h2>Exponents", "<h2>Inventory",
                                     "<h2>Warnings")]
    assert order == sorted(order)
    assert "not identified (" in html


def test_report_without_bootstrap_intervals(tmp_path):
    """``--bootstrap 0``: no intervals anywhere, and the verdict still says what to do next."""
    csv = write_csv(tmp_path / "runs.csv", [make_group("a", n_runs=4, n_ckpt=8, seed=1)])
    assert main(["report", str(csv), "--group-col", "arch", "--run-col", "run", "--bootstrap", "0",
                 "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Next step" in html
