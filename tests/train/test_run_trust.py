"""A run never writes outside its directory or into one symscale did not make, never trains silently on
data that changed, and refuses impossible numbers in its configuration as one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_helpers import run_cli

from symscale.cli import main

from symscale.errors import ConfigError, DataError
from symscale.train.config import parse_config
from symscale.train.run import run

TINY = {"batch_size": 8, "tokens": 120, "evaluation": {"points": 2},
        "model": {"family": "mpnn", "width": 4, "options": {"num_layers": 1}}}


def _cfg(data, **extra):
    return {**TINY, "data": {"path": str(data), "val_size": 8}, **extra}


@pytest.mark.parametrize("data, field", [
    ({"optimizer": {"lr": float("inf")}}, "optimizer.lr"),
    ({"optimizer": {"lr": float("nan")}}, "optimizer.lr"),
    ({"epochs": float("inf")}, "epochs"),
    ({"epochs": 1e300}, "epochs"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"name": "../../x"}, "name"),
    ({"name": "/abs/path"}, "name"),
    ({"name": ".hidden"}, "name"),
    ({"data": {"cutoff": 1e4}}, "data.cutoff"),
    ({"data": {"fingerprint": "abc"}}, "data.fingerprint"),
])
def test_impossible_values_are_config_errors(data, field):
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="run.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"run.yaml: {field}"), msg


def test_binary_yaml_is_aassert_one_line_error(tmp_path, capsys):
    p = tmp_path / "run.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8 text" in err[0] and "run.yaml" in err[0]


def test_train_refuses_an_out_directory_it_did_not_make(emt_dataset, tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "config.yaml").write_text("my own settings\n")
    with pytest.raises(ConfigError, match="out: .* not a directory symscale wrote"):
        run(_cfg(emt_dataset), out=out)
    assert (out / "config.yaml").read_text() == "my own settings\n" and len(list(out.iterdir())) == 1


def test_run_records_the_data_fingerprint_and_refuses_changed_data(emt_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(emt_dataset, data)
    run_dir = run(_cfg(data), out=tmp_path / "run")
    recorded = json.loads((run_dir / "summary.json").read_text())
    from symscale.data import PreparedDataset

    fp = PreparedDataset(data).fingerprint
    assert (run_dir / "config.yaml").read_text().count(fp) == 1
    assert recorded["status"] == "completed"
    # edit one energy in place: the dataset no longer matches its own record, and a run configured with
    # the old fingerprint is refused before anything is written
    energy = np.load(data / "energy.npy", mmap_mode="r+")
    energy[0] += 1.0
    energy.flush()
    del energy
    with pytest.raises(DataError, match="content changed since it was prepared"):
        run(_cfg(data), out=tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
    # a copy keeps its fingerprint (identity follows content, not path), whatever the file times
    copy = tmp_path / "copy"
    shutil.copytree(emt_dataset, copy, copy_function=shutil.copy)
    assert PreparedDataset(copy).fingerprint == PreparedDataset(emt_dataset).fingerprint
    other = dict(_cfg(copy))
    other["data"] = {**other["data"], "fingerprint": "0" * 64}
    with pytest.raises(ConfigError, match=r"data.fingerprint: .* \(the data changed\)"):
        run(other, out=tmp_path / "run3")
    assert not (tmp_path / "run3").exists()



def test_eval_and_md_outputs_are_checked_before_the_work(tiny_run, emt_dataset, tmp_path, capsys):
    mol = tmp_path / "mol.xyz"
    from ase.build import molecule
    from ase.io import write

    write(mol, molecule("CH4"))
    for bad, needle in ((tmp_path / "t.foo", "unsupported file type"), (tmp_path, "is a directory"),
                        (mol / "t.traj", "is a file, not a directory")):
        code, _, err = run_cli(["md", tiny_run, "--structure", mol, "--steps", "2", "--trajectory", bad], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    deep = tmp_path / "nodir" / "f" / "t.traj"  # a new directory is created
    assert run_cli(["md", tiny_run, "--structure", mol, "--steps", "2", "--trajectory", deep], capsys)[0] in (0, 1)
    assert deep.is_file()
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    code, _, err = run_cli(["eval", tiny_run, emt_dataset, "--out", mine], capsys)
    assert code == 2 and "not a eval file symscale wrote" in err
    assert mine.read_text() == '{"my": "notes"}'
    out = tmp_path / "eval.json"
    assert run_cli(["eval", tiny_run, emt_dataset, "--out", out, "--max-structures", "4"], capsys)[0] == 0
    assert json.loads(out.read_text())["written_by"]["kind"] == "eval"
    assert run_cli(["eval", tiny_run, emt_dataset, "--out", out, "--max-structures", "4"], capsys)[0] == 0
    code, _, err = run_cli(["md", tiny_run, "--structure", mol, "--steps", "2", "--out", out], capsys)
    assert code == 2 and "not a md file" in err  # an eval result is not replaced by an md result
    traj = tmp_path / "md.traj"
    code, _, err = run_cli(["md", tiny_run, "--structure", mol, "--steps", "2", "--trajectory", traj], capsys)
    assert traj.is_file()
    code, _, err = run_cli(["md", tiny_run, "--structure", mol, "--steps", "2", "--trajectory", traj], capsys)
    assert code == 2 and "--trajectory" in err and "exists" in err
