"""The README's main job, shrunk: two families x three widths on a slice of an epoch of the embedded data,
then the fit and the report, through the real CLI (worker processes included)."""

from __future__ import annotations

import json

from symscale.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--families", "mpnn,egnn", "--widths", "8,16,32", "--epochs", "0.03",
            "--bootstrap", "20", "--workers", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "structures" in printed and "report:" in printed
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["egnn-w16", "egnn-w32", "egnn-w8", "mpnn-w16", "mpnn-w32", "mpnn-w8"]
    for run in runs:
        summary = json.loads((out / "runs" / run / "summary.json").read_text())
        assert summary["status"] == "completed"
    laws = json.loads((out / "laws.json").read_text())
    assert set(laws["groups"]) == {"mpnn", "egnn"}
    for g in laws["groups"].values():
        assert g["n_runs"] == 3 and g["alpha"]["value"] > 0
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert (out / "plots" / "frontiers.png").exists()

    # a second call reuses every completed run instead of training again
    assert main(args) == 0
    assert capsys.readouterr().out.count("completed (reused)") == 6
