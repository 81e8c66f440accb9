"""Hostile inputs to the data layer: read-only commands never modify their inputs, truncated or foreign
files and geometries outside what the neighbour search handles are one-line errors (never a crash)."""

from __future__ import annotations

import hashlib
import sqlite3

import ase.db
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from cli_helpers import assert_one_line_error, run_cli

from symscale.data import Batch, Structure, neighbor_list
from symscale.errors import ConfigError, DataError
from symscale.train.config import parse_config

FRAME = ("3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n"
         "O 0 0 0.12 0 0 0\nH 0 0.76 -0.48 0 0 0\nH 0 -0.76 -0.4812345678 0.5 0.25 0.125\n")




def _state(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, path.stat().st_size


def _labelled(atoms):
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    return atoms


def test_info_never_writes_to_an_empty_or_foreign_database(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    empty.touch()
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE samples (x REAL)")
    con.commit()
    con.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 10)
    for path, why in ((empty, "empty file"), (foreign, "without ASE's 'systems' table"), (junk, "not an SQLite")):
        before = _state(path)
        code, _, err = run_cli(["data", "info", path], capsys)
        assert_one_line_error(code, err, path.name, why)
        assert _state(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "foreign.db", "junk.db"]
    con = sqlite3.connect(foreign)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["samples"]
    con.close()


def test_info_on_an_ase_database_leaves_it_byte_identical(tmp_path, capsys):
    path = tmp_path / "good.db"
    with ase.db.connect(path) as db:
        db.write(_labelled(Atoms("H2O", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])))
    before = _state(path)
    code, out, _ = run_cli(["data", "info", path], capsys)
    assert code == 0 and "structures   1" in out
    assert _state(path) == before


@pytest.mark.parametrize("content", [b"", b"\x00" * 4096])
def test_bad_aselmdb_is_one_line_without_destructor_noise(tmp_path, capsys, content):
    path = tmp_path / "bad.aselmdb"
    path.write_bytes(content)
    code, _, err = run_cli(["data", "info", path], capsys)
    assert_one_line_error(code, err, "bad.aselmdb", "cannot open aselmdb database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.aselmdb"]  # no lock file created


def test_truncated_extxyz_is_refused_wherever_the_last_frame_is_cut(tmp_path, capsys):
    text = FRAME * 3
    path = tmp_path / "cut.xyz"
    complete = len(FRAME) * 2
    # a cut anywhere inside the last frame: an error, never two (or three) structures read quietly
    for k in range(complete + 1, len(text)):
        path.write_text(text[:k])
        code, out, err = run_cli(["data", "info", path, "--json"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (k, out, err)
    path.write_text(text[:-3])  # inside the last number: ASE alone reads 0.12 as 0.1
    _, _, err = run_cli(["data", "info", path], capsys)
    assert "ends inside a frame" in err
    path.write_text(text)
    assert run_cli(["data", "info", path], capsys)[0] == 0


@pytest.mark.parametrize("coord", [1e5, 3e4, 1e300])
def test_huge_coordinates_are_refused_before_the_neighbour_search(tmp_path, capsys, coord):
    path = tmp_path / "far.xyz"
    path.write_text(FRAME + FRAME.replace("-0.76 -0.4812345678", f"-0.76 {coord!r}"))
    for cmd in (["data", "info", path], ["data", "prepare", path, "--out", tmp_path / "out"]):
        code, _, err = run_cli(cmd, capsys)
        assert_one_line_error(code, err, "structure 1", "exceeds")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cutoff", [1e4, 1e-9, float("inf"), float("nan"), -1.0])
def test_cutoffs_outside_the_search_range_are_errors(cutoff):
    s = Structure(numbers=np.array([8, 1]), positions=np.array([[0.0, 0, 0], [0.96, 0, 0]]))
    with pytest.raises(DataError, match="cutoff"):
        neighbor_list(s.positions, cutoff)
    with pytest.raises(DataError, match="cutoff"):
        Batch.from_structures([s], cutoff=cutoff)
    with pytest.raises(ConfigError, match="data.cutoff"):
        parse_config({"data": {"cutoff": cutoff}})


def test_periodic_cutoff_far_beyond_the_cell_is_refused():
    pos = np.random.default_rng(0).uniform(0, 2.5, (64, 3))
    with pytest.raises(DataError, match="pairs"):
        neighbor_list(pos, 100.0, np.eye(3) * 2.5, [True, True, True])
    edges, _ = neighbor_list(pos, 5.0, np.eye(3) * 2.5, [True, True, True])  # an ordinary case still works
    assert edges.shape[1] > 0


def test_npz_with_object_arrays_and_non_utf8_names(tmp_path, capsys):
    obj = tmp_path / "obj.npz"
    np.savez(obj, nuclear_charges=np.array([1, 1]), coords=np.zeros((1, 2, 3), dtype=object),
             energies=np.array([1.0]), forces=np.zeros((1, 2, 3)))
    code, _, err = run_cli(["data", "info", obj], capsys)
    assert_one_line_error(code, err, "obj.npz", "'coords' cannot be read")
    odd = tmp_path / "d\udcff.xyz"  # a file name that is not UTF-8 (bytes 0xff), as os.fsdecode gives it
    odd.write_text(FRAME * 4)
    out = tmp_path / "o\udcfe"
    code, printed, err = run_cli(["data", "prepare", odd, "--out", out, "--val-fraction", "0.25"], capsys)
    assert code == 0, err
    assert "\\udcfe" in printed or "\\xfe" in printed
    code, printed, _ = run_cli(["data", "info", out, "--json"], capsys)
    assert code == 0 and '"structures": 4' in printed


def test_generate_checks_its_output_before_labelling(tmp_path, monkeypatch):
    import symscale.data.generate as gen
    from symscale.errors import OutputError

    def must_not_run(**kwargs):
        raise AssertionError("labelling started before the output was checked")

    monkeypatch.setattr(gen, "generate_structures", must_not_run)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a directory symscale wrote"):
        gen.generate(out, n_molecules=2, structures_per_molecule=2, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep"
