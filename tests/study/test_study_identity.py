"""A study's runs follow the content of its data, not the path: data edited in place are never reused
silently, and a study directory is only ever one symscale made."""

from __future__ import annotations

import ase.io
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from symscale.data import open_dataset
from symscale.errors import OutputError
from symscale.study import run_study
from symscale.study.store import Store

from study_files import write_study


def _xyz(path, energy_shift: float = 0.0):
    """80 structures of the embedded dataset as extended XYZ; ``energy_shift`` edits structure 3's energy."""
    ds = open_dataset(None)
    frames = []
    for i in range(80):
        s = ds.structure(i)
        atoms = Atoms(numbers=s.numbers, positions=s.positions)
        atoms.calc = SinglePointCalculator(atoms, energy=s.energy + (energy_shift if i == 3 else 0.0),
                                           forces=s.forces)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_data_edited_in_place_gives_new_runs_and_says_so(tmp_path, capsys):
    data = _xyz(tmp_path / "data.xyz")
    study = write_study(tmp_path / "s.yaml", tmp_path / "study", data={"path": str(data), "val_size": 8},
                        tokens=150, architectures=[{"family": "mpnn", "widths": [4]}], report={"bootstrap": 0})
    first = run_study(study, workers=1, quiet=True, report=False)
    assert first.counts == {"completed": 1}
    with Store(tmp_path / "study", create=False) as store:
        (old,) = [r["id"] for r in store.runs()]
    again = run_study(study, workers=1, quiet=True, report=False)  # unchanged data: nothing to train
    assert again.counts == {"completed": 1}
    capsys.readouterr()
    _xyz(data, energy_shift=0.5)  # one energy edited in place, same path
    edited = run_study(study, workers=1, quiet=True, report=False)
    err = capsys.readouterr().err
    assert "data: content changed since the last invocation" in err and "1 run(s)" in err
    assert edited.counts == {"completed": 1}
    with Store(tmp_path / "study", create=False) as store:
        runs = {r["id"]: r for r in store.runs()}
        meta = store.meta("study")
    assert old in runs and len(runs) == 2 and old not in meta["run_ids"]
    (new,) = meta["run_ids"]
    assert new.split("-")[:3] == old.split("-")[:3] and new != old  # same settings, other data


def test_study_out_must_be_a_study_directory(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "study.yaml").write_text("my own notes\n")
    study = write_study(tmp_path / "s.yaml", out)
    with pytest.raises(OutputError, match="not a directory symscale wrote"):
        run_study(study, workers=1, quiet=True)
    assert [p.name for p in out.iterdir()] == ["study.yaml"]
    assert (out / "study.yaml").read_text() == "my own notes\n"
