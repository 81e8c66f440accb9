"""Training and studies on a subset of OMol25-shaped shards: ``data.where`` in a run file, and in a study file,
where the selection is prepared once into ``<study>/prepared/<key>`` and shared by every run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from omol_synth import write_omol_dir, write_omol_shard  # noqa: E402

from symscale.cli import main  # noqa: E402
from symscale.data import PreparedDataset  # noqa: E402
from symscale.data.prepare import prepare_source  # noqa: E402
from symscale.study import run_study  # noqa: E402
from symscale.study.store import Store  # noqa: E402
from study_files import write_study  # noqa: E402

TINY = {"tokens": 120, "batch_size": 8, "evaluation": {"points": 2}, "report": {"bootstrap": 0},
        "architectures": [{"family": "mpnn", "widths": [4], "options": {"num_layers": 1}}]}


@pytest.fixture(scope="module")
def omol(tmp_path_factory):
    return write_omol_dir(tmp_path_factory.mktemp("omol") / "shards", 150, n_shards=3, seed=2)


def test_a_run_trains_on_the_selected_structures(omol, tmp_path):
    from symscale.train.run import run

    where = ["charge==0", "spin==1"]
    cfg = {"data": {"path": str(omol.directory), "where": where, "val_size": 8}, "batch_size": 8, "tokens": 100,
           "model": {"family": "mpnn", "width": 4, "options": {"num_layers": 1}}, "evaluation": {"points": 2},
           "name": "neutral"}
    run_dir = run(cfg, out=tmp_path / "run", quiet=True)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["where"] == where
    expected = PreparedDataset(prepare_source(omol.directory, tmp_path / "neutral", where=where, workers=1))
    assert len(expected) == omol.mask(charge=0, spin=1).sum()
    assert resolved["data"]["fingerprint"] == expected.fingerprint  # trained on exactly that subset


def test_a_study_prepares_its_selection_once(omol, tmp_path, capsys):
    data = {"path": str(omol.directory), "where": ["charge == 0"], "val_size": 8}
    study = write_study(tmp_path / "s.yaml", tmp_path / "study", data=data, **TINY)
    assert run_study(study, workers=1, quiet=True, report=False).counts == {"completed": 1}
    (prepared,) = (tmp_path / "study" / "prepared").iterdir()
    ds = PreparedDataset(prepared)
    assert len(ds) == omol.mask(charge=0).sum() and set(ds.charge.tolist()) == {0}
    assert ds.metadata["selection"]["where"] == ["charge==0"]
    with Store(tmp_path / "study", create=False) as store:
        (row,) = store.runs()
    config = yaml.safe_load(row["config"]) if isinstance(row["config"], str) else row["config"]
    assert config["data"]["path"] == str(prepared) and config["data"]["fingerprint"] == ds.fingerprint
    stamp = (prepared / "metadata.json").stat().st_mtime_ns
    assert run_study(study, workers=1, quiet=True, report=False).counts == {"completed": 1}
    assert (prepared / "metadata.json").stat().st_mtime_ns == stamp  # not prepared again, nothing retrained
    # another selection: prepared anew, the old preparation removed, a new run for the new data
    study = write_study(tmp_path / "s.yaml", tmp_path / "study", data={**data, "where": ["charge==0", "spin==1"]},
                        **TINY)
    assert main(["study", str(study), "--workers", "1", "--quiet", "--no-report"]) == 0
    (again,) = (tmp_path / "study" / "prepared").iterdir()
    assert again != prepared and len(PreparedDataset(again)) == omol.mask(charge=0, spin=1).sum()
    with Store(tmp_path / "study", create=False) as store:
        assert len(store.runs()) == 2


def test_where_errors_are_found_before_anything_is_created(omol, tmp_path, capsys):
    study = write_study(tmp_path / "s.yaml", tmp_path / "study",
                        data={"path": str(omol.directory), "where": ["charge=0"]}, **TINY)
    assert main(["study", str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{study}: data.where: 0: 'charge=0' is not a condition" in err[0]
    assert "use == for equality" in err[0] and not (tmp_path / "study").exists()
    study = write_study(tmp_path / "s.yaml", tmp_path / "study",
                        data={"generate": {"molecules": 2}, "where": ["charge==0"]}, **TINY)
    assert main(["study", str(study)]) == 2
    assert "where selects from a path or the embedded set" in capsys.readouterr().err


def test_a_bad_row_fails_the_study_before_its_directory_exists(omol, tmp_path, capsys, monkeypatch):
    import os

    import symscale.data.convert as convert_mod

    import shutil

    src = tmp_path / "src"
    shutil.copytree(omol.directory, src)
    (src / "data.0002.aselmdb").unlink()  # the last shard: another one has finished when it fails
    write_omol_shard(src / "data.0002.aselmdb", 100, 50, seed=2, drop_forces=(107,))
    study = write_study(tmp_path / "s.yaml", tmp_path / "study", data={"path": str(src), "val_size": 8}, **TINY)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # the shards in this process, in order
    assert main(["study", str(study), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{src / 'data.0002.aselmdb'}: structure 7: missing forces" in err[0], err
    assert not (tmp_path / "study").exists()
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("..study.prepared-")]  # the finished shards
    assert sorted(p.parent.name for p in kept.glob("shard-*/done.json")) == ["shard-00000", "shard-00001"]
    (src / "data.0002.aselmdb").unlink()
    write_omol_shard(src / "data.0002.aselmdb", 100, 50, seed=2)
    converted = []
    real = convert_mod.convert_shard
    monkeypatch.setattr(convert_mod, "convert_shard",
                        lambda task, report=None: converted.append(task["index"]) or real(task, report))
    assert main(["study", str(study), "--workers", "1", "--quiet", "--no-report"]) == 0
    assert converted == [2]  # the finished shards are not converted again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "src", "study"]
    (prepared,) = (tmp_path / "study" / "prepared").iterdir()
    assert len(PreparedDataset(prepared)) == 150
