"""``symscale train`` / ``eval`` / ``md`` through the command line."""

from __future__ import annotations

import json

import yaml

from symscale.cli import main


def test_train_eval_md_commands(emt_dataset, tmp_path, capsys):
    cfg = {"data": {"path": str(emt_dataset), "val_size": 16}, "model": {"family": "mpnn", "width": 8,
           "options": {"num_layers": 1}}, "batch_size": 8, "tokens": 300, "evaluation": {"points": 3},
           "name": "cli-run"}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs" / "cli"
    assert main(["train", str(p), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert "cli-run: completed" in line and str(out) in line
    assert (out / "checkpoint.pt").is_file() and (out / "config.yaml").is_file()
    n_rows = len((out / "metrics.jsonl").read_text().splitlines())
    # resuming a finished run is a no-op that keeps its points
    assert main(["train", str(p), "--out", str(out), "--quiet", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == n_rows
    capsys.readouterr()

    assert main(["eval", str(out), str(emt_dataset), "--split", "val", "--max-structures", "8",
                 "--out", str(tmp_path / "eval.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["force_mae"] > 0 and result["energy_mae_per_atom"] >= 0
    assert json.loads((tmp_path / "eval.json").read_text())["force_mae"] == result["force_mae"]

    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "h2o.xyz", molecule("H2O"))
    assert main(["md", str(out), "--structure", str(tmp_path / "h2o.xyz"), "--steps", "5",
                 "--timestep", "0.25", "--temperature", "100", "--out", str(tmp_path / "md.json")]) == 0
    md = json.loads(capsys.readouterr().out)
    assert md["steps"] == 5 and "energy_total" not in md  # the terminal gets the summary
    assert len(json.loads((tmp_path / "md.json").read_text())["energy_total"]) == 6  # --out the whole trace

    assert main(["eval", str(tmp_path / "nowhere"), str(emt_dataset)]) == 2
    assert capsys.readouterr().err.startswith("symscale: error: ")
