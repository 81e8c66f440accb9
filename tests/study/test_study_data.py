"""A study's `data: {generate: ...}` is generated once into the study directory and then reused."""

from symscale.data import open_dataset
from symscale.study.driver import resolve_data
from symscale.study.schema import parse_study


def test_generate_spec_is_made_once(tmp_path):
    cfg = parse_study({"name": "g", "data": {"generate": {"molecules": 4, "per_molecule": 3, "temperatures": [300],
                                                          "stride": 2}},
                       "architectures": [{"family": "mpnn", "widths": [4]}]})
    path = resolve_data(cfg, tmp_path, quiet=True)
    assert path == str(tmp_path / "data")
    ds = open_dataset(path)
    assert len(ds) == 12 and set(ds.split_names()) >= {"train", "val"}
    stamp = (tmp_path / "data" / "metadata.json").stat().st_mtime_ns
    assert resolve_data(cfg, tmp_path, quiet=True) == path
    assert (tmp_path / "data" / "metadata.json").stat().st_mtime_ns == stamp  # not generated again


GENERATE = {"generate": {"molecules": 4, "per_molecule": 3, "temperatures": [300], "stride": 2}, "val_size": 2}


def test_a_generate_study_is_checked_before_generating_then_runs_on_its_data(tmp_path, capsys):
    from symscale.cli import main
    from symscale.study import run_study
    from symscale.study.store import Store

    from study_files import write_study

    path = write_study(tmp_path / "s.yaml", tmp_path / "study", data=GENERATE, tokens=60, batch_size=4,
                       evaluation={"points": 2}, architectures=[{"family": "mpnn", "widths": [4],
                                                                 "options": {"num_layerz": 2}}])
    assert main(["study", str(path)]) == 2
    assert "unknown option 'num_layerz'" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()  # checked before the data were generated

    path = write_study(tmp_path / "s.yaml", tmp_path / "study", data=GENERATE, tokens=60, batch_size=4,
                       evaluation={"points": 2}, architectures=[{"family": "mpnn", "widths": [4]}])
    result = run_study(path, workers=1, quiet=True, report=False)
    assert result.counts == {"completed": 1}
    with Store(tmp_path / "study", create=False) as store:
        (run,) = store.runs()
    fingerprint = open_dataset(tmp_path / "study" / "data").fingerprint
    assert f'"fingerprint": "{fingerprint}"' in run["config"]  # the real data's, not the stand-in used to check
