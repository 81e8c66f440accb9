"""Output paths (issue: nothing lost): symscale replaces only what it wrote, checks outputs before long work,
and writes files with the permissions the user's umask asks for."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli

from symscale.atomic import write_text
from symscale.errors import OutputError
from symscale.outputs import MARKER, check_output_dir, check_output_file, dir_kind, stamp

XYZ = ("3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n"
       "O 0 0 0.12 0 0 0\nH 0 0.76 -0.48 0 0 0\nH 0 -0.76 -0.48 0 0 0\n") * 4




@pytest.fixture
def src(tmp_path):
    p = tmp_path / "src.xyz"
    p.write_text(XYZ)
    return p


def _tree(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def test_prepare_overwrite_refuses_a_directory_symscale_did_not_write(tmp_path, src, capsys):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    (out / "sub" / "notes.txt").write_text("more")
    before = _tree(out)
    code, _, err = run_cli(["data", "prepare", src, "--out", out, "--overwrite", "--val-fraction", "0.25"], capsys)
    assert_one_line_error(code, err, "--out", "not a directory symscale wrote")
    assert _tree(out) == before


def test_prepare_overwrite_refuses_an_output_holding_its_source(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "src.xyz").write_text(XYZ)
    code, _, err = run_cli(["data", "prepare", data / "src.xyz", "--out", data, "--overwrite"], capsys)
    assert_one_line_error(code, err, "contains the input")
    assert (data / "src.xyz").read_text() == XYZ
    # a prepared dataset re-prepared onto itself is refused too (it is its own source)
    assert run_cli(["data", "prepare", data / "src.xyz", "--out", tmp_path / "p", "--val-fraction", "0.25"],
                capsys)[0] == 0
    code, _, err = run_cli(["data", "prepare", tmp_path / "p", "--out", tmp_path / "p", "--overwrite"], capsys)
    assert_one_line_error(code, err, "contains the input")
    assert dir_kind(tmp_path / "p") == "prepared"


def test_prepare_overwrite_replaces_its_own_dataset_and_marks_it(tmp_path, src, capsys):
    out = tmp_path / "p"
    assert run_cli(["data", "prepare", src, "--out", out, "--val-fraction", "0.25"], capsys)[0] == 0
    assert json.loads((out / MARKER).read_text())["kind"] == "prepared"
    code, _, err = run_cli(["data", "prepare", src, "--out", out, "--val-fraction", "0.25"], capsys)
    assert_one_line_error(code, err, "already exists")
    assert run_cli(["data", "prepare", src, "--out", out, "--overwrite", "--val-fraction", "0.5"], capsys)[0] == 0
    assert json.loads((out / "metadata.json").read_text())["splits"]["val_fraction"] == 0.5


def test_a_file_where_a_directory_goes_and_a_directory_where_a_file_goes(tmp_path, src, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(f, "prepared")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output_dir(f / "below", "prepared")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path, "fit")
    code, _, err = run_cli(["fit", "missing.csv", "--json", tmp_path], capsys)  # before the input is read
    assert_one_line_error(code, err, "--json", "is a directory")


def test_json_results_are_replaced_only_when_symscale_wrote_them(tmp_path):
    mine = tmp_path / "fit.json"
    write_text(mine, json.dumps(stamp({"groups": {}}, "fit")))
    assert check_output_file(mine, "fit") == mine
    foreign = tmp_path / "data.json"
    foreign.write_text(json.dumps({"groups": {}}))
    with pytest.raises(OutputError, match="not a fit file symscale wrote"):
        check_output_file(foreign, "fit")
    with pytest.raises(OutputError, match="not a eval file"):
        check_output_file(mine, "eval")  # another command's result is not replaced either
    with pytest.raises(OutputError, match="unsupported file type"):
        check_output_file(tmp_path / "t.foo", "md-trajectory", flag="--trajectory", suffixes=(".traj", ".xyz"))


CSV_FLAGS = ["--group-col", "arch", "--run-col", "run", "--bootstrap", "0"]


def test_fit_and_report_refuse_foreign_output_directories_before_fitting(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    csv.write_text(open(os.path.join(os.path.dirname(__file__), "..", "examples", "runs.csv")).read())
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("my web page")
    code, _, err = run_cli(["report", csv, "--out", out, *CSV_FLAGS], capsys)
    assert_one_line_error(code, err, "--out", "not a directory symscale wrote")
    assert (out / "index.html").read_text() == "my web page" and len(list(out.iterdir())) == 1
    code, _, err = run_cli(["fit", csv, "--plots", out, *CSV_FLAGS], capsys)
    assert_one_line_error(code, err, "--plots")
    # its own report directory is replaced in place, and a fit --plots directory is one too
    assert run_cli(["report", csv, "--out", tmp_path / "rep", *CSV_FLAGS], capsys)[0] == 0
    assert dir_kind(tmp_path / "rep") == "laws"
    assert run_cli(["report", csv, "--out", tmp_path / "rep", *CSV_FLAGS], capsys)[0] == 0
    assert run_cli(["fit", csv, "--plots", tmp_path / "rep", "--json", tmp_path / "rep" / "fit.json",
                 *CSV_FLAGS], capsys)[0] == 0
    code, _, err = run_cli(["fit", csv, "--json", csv, *CSV_FLAGS], capsys)  # never over an input
    assert_one_line_error(code, err, "--json", "not a fit file symscale wrote")


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_and_directories_honour_the_umask(tmp_path, src, capsys, mask):
    old = os.umask(mask)
    try:
        write_text(tmp_path / "a.txt", "x")
        assert run_cli(["data", "prepare", src, "--out", tmp_path / "p", "--val-fraction", "0.25"], capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o777 & ~mask
    for f in (tmp_path / "p").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name
    assert np.load(tmp_path / "p" / "energy.npy").shape == (4,)
