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
