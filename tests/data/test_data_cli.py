"""``symscale data prepare / info`` end to end, and every malformed input as a one-line error (exit 2)."""

from __future__ import annotations

import json

import ase.db
import ase.io
import numpy as np
import pytest

from symscale.cli import main
from symscale.data import PreparedDataset

H2O = "O 0 0 0.12 {fo}\nH 0 0.76 -0.48 0 0 0\nH 0 -0.76 -0.48 0 0 0\n"


def _xyz(tmp_path, header: str, body: str, name="bad.xyz", good_first=True):
    """A file whose second frame (structure 1) is ``header``/``body`` after one valid frame."""
    good = "3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n" + H2O.format(fo="0 0 0")
    text = (good if good_first else "") + header + body
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_error(tmp_path, capsys, src, pattern, extra=()):
    out = tmp_path / "out"
    code, _, err = _run(["data", "prepare", str(src), "--out", str(out), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("symscale: error: "), err
    assert pattern in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


P = "3\nProperties=species:S:1:pos:R:3:forces:R:3 "


@pytest.mark.parametrize("header, body, pattern", [
    (P + "energy=-1.0\n", "O 0 0 nan 0 0 0\nH 0 0.76 -0.48 0 0 0\nH 0 -0.76 -0.48 0 0 0\n",
     "structure 1: atom 0: non-finite position"),
    (P + "energy=nan\n", H2O.format(fo="0 0 0"), "structure 1: non-finite energy"),
    (P + "energy=-1.0\n", H2O.format(fo="inf 0 0"), "structure 1: atom 0: non-finite force"),
    ("3\nProperties=species:S:1:pos:R:3:forces:R:3\n", H2O.format(fo="0 0 0"), "structure 1: missing energy"),
    ("3\nProperties=species:S:1:pos:R:3 energy=-1.0\n",
     "O 0 0 0.12\nH 0 0.76 -0.48\nH 0 -0.76 -0.48\n", "structure 1: missing forces"),
    (P + "energy=-1.0\n", "Xx 0 0 0.12 0 0 0\nH 0 0.76 -0.48 0 0 0\nH 0 -0.76 -0.48 0 0 0\n",
     "structure 1: unknown element symbol 'Xx'"),
    ("0\nProperties=species:S:1:pos:R:3:forces:R:3 energy=0.0\n", "", "structure 1: empty structure"),
    (P + "energy=-1.0\n", "O 0 0 0 0 0 0\nH 0 0 0.05 0 0 0\nH 0 -0.76 -0.48 0 0 0\n",
     "structure 1: atom 0 overlaps atom 1"),
    ("4\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n", H2O.format(fo="0 0 0"),
     "structure 1: cannot parse"),
])
def test_malformed_extxyz(tmp_path, capsys, header, body, pattern):
    src = _xyz(tmp_path, header, body)
    _assert_error(tmp_path, capsys, src, f"{src}: {pattern}")


def test_forces_shape_mismatch_in_database(tmp_path, capsys):
    from ase.build import molecule

    src = tmp_path / "bad.db"
    db = ase.db.connect(str(src))
    db.write(molecule("H2O"), data={"REF_energy": -1.0, "REF_forces": np.zeros((2, 3))})
    _assert_error(tmp_path, capsys, src, f"{src}: structure 0: forces have shape (2, 3), expected (3, 3)")


def test_unknown_atomic_number_and_bad_arrays_in_npz(tmp_path, capsys):
    src = tmp_path / "bad.npz"
    np.savez(src, nuclear_charges=[1, 200], coords=[[[0, 0, 0], [0, 0, 1.0]]], energies=[1.0],
             forces=np.zeros((1, 2, 3)))
    _assert_error(tmp_path, capsys, src, f"{src}: structure 0: atom 1: unknown element (atomic number 200)")
    np.savez(src, nuclear_charges=[1, 1], coords=[[[0, 0, 0], [0, 0, 1.0]]], forces=np.zeros((1, 2, 3)))
    _assert_error(tmp_path, capsys, src, f"{src}: no energy array")


def test_source_level_errors(tmp_path, capsys):
    _assert_error(tmp_path, capsys, tmp_path / "missing.xyz", "missing.xyz: no such file or directory")
    (tmp_path / "table.csv").write_text("x\n")
    _assert_error(tmp_path, capsys, tmp_path / "table.csv", "table.csv: unsupported format")
    good = _xyz(tmp_path, "", "", name="good.xyz")
    _assert_error(tmp_path, capsys, good, f"{good}: structure 0: no energy under key 'E'", ["--energy-key", "E"])
    _assert_error(tmp_path, capsys, good, "val_fraction must be in [0, 1)", ["--val-fraction", "2"])
    (tmp_path / "corrupt.db").write_bytes(b"not a database at all" * 10)
    _assert_error(tmp_path, capsys, tmp_path / "corrupt.db", "corrupt.db: cannot open db database")


def test_prepare_then_info(tmp_path, capsys, structures):
    src = tmp_path / "set.extxyz"
    ase.io.write(src, [s.to_atoms() for s in structures], format="extxyz")
    out = tmp_path / "prep"
    code, stdout, err = _run(["data", "prepare", str(src), "--out", str(out), "--val-fraction", "0.25",
                              "--test-fraction", "0.25", "--seed", "4"], capsys)
    assert code == 0, err
    assert f"wrote {out}: {len(structures)} structures" in stdout
    ds = PreparedDataset(out)
    assert ds.metadata["command"].startswith("symscale data prepare") and "--seed 4" in ds.metadata["command"]
    assert [len(ds.split(n)) for n in ("train", "val", "test")] == [16, 8, 8]
    code, stdout, _ = _run(["data", "info", str(out), "--json"], capsys)
    desc = json.loads(stdout)
    assert desc["kind"] == "prepared" and desc["structures"] == len(structures)
    assert desc["atoms"] == sum(s.n_atoms for s in structures) and desc["molecules"] == 8
    assert desc["splits"]["val"]["count"] == 8
    forces = np.concatenate([s.forces for s in structures])
    assert desc["force_component_rms_eV_per_A"] == pytest.approx(np.sqrt(np.mean(forces ** 2)), rel=1e-5)
    code, raw_text, _ = _run(["data", "info", str(src)], capsys)
    assert code == 0 and f"structures   {len(structures)}" in raw_text and "elements" in raw_text
    code, text, _ = _run(["data", "info", str(out)], capsys)
    assert "splits       by_molecule (seed 4)" in text and "E0 (eV)" in text
    # a second prepare onto the same directory refuses, --overwrite replaces
    code, _, err = _run(["data", "prepare", str(src), "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    code, _, _ = _run(["data", "prepare", str(src), "--out", str(out), "--overwrite", "--val-fraction", "0.5"],
                      capsys)
    assert code == 0 and len(PreparedDataset(out).split("val")) == 16


def test_units_flag_converts(tmp_path, capsys, structures):
    from ase import units

    same = [s for s in structures if s.mol_id == "NH3"]
    src = tmp_path / "nh3.npz"
    np.savez(src, nuclear_charges=same[0].numbers, coords=np.stack([s.positions for s in same]),
             energies=[s.energy for s in same], forces=np.stack([s.forces for s in same]))
    out = tmp_path / "kcal"
    assert main(["data", "prepare", str(src), "--out", str(out), "--units", "kcal/mol"]) == 0
    ds = PreparedDataset(out)
    factor = units.kcal / units.mol
    np.testing.assert_allclose(np.asarray(ds.energy), [s.energy * factor for s in same])
    assert ds.metadata["reader_options"]["units"] == "kcal/mol"


def test_data_group_help_lists_commands(capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "prepare" in out and "info" in out
    import importlib.util

    if importlib.util.find_spec("symscale.data.generate") is not None:  # hooked in when present
        assert "generate" in out
