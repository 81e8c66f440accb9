"""The study file: validation errors are one line naming the field; run ids are stable under edits."""

import pytest
import yaml

from symscale.cli import main
from symscale.errors import ConfigError
from symscale.study.schema import expand, load_study_config, parse_study

BASE = {"name": "s", "data": "embedded", "architectures": [{"family": "mpnn", "widths": [8, 16]}]}


def _ids(doc, tmp_path):
    return [p.id for p in expand(parse_study(doc), None, tmp_path)]


def test_expand_runs_and_configs(tmp_path):
    doc = {**BASE, "seeds": [0, 1], "tokens": 1000,
           "architectures": [{"family": "mpnn", "widths": [16, 8]},
                             {"family": "esen", "label": "esen-l2", "widths": [4], "options": {"lmax": 2}},
                             {"family": "mpnn", "widths": [8], "symmetry": {"augment": True}}]}
    runs = expand(parse_study(doc), None, tmp_path)
    assert [(r.group, r.width, r.seed) for r in runs] == [
        ("mpnn", 8, 0), ("mpnn", 8, 1), ("mpnn", 16, 0), ("mpnn", 16, 1), ("esen-l2", 4, 0), ("esen-l2", 4, 1),
        ("mpnn-aug", 8, 0), ("mpnn-aug", 8, 1)]
    assert len({r.id for r in runs}) == len(runs)
    r = runs[2]
    assert r.config.model.width == 16 and r.config.mup.base_width == 8 and r.config.tokens == 1000
    assert r.config.name == r.id and r.config.group == "mpnn" and r.run_dir == tmp_path / "runs" / r.id
    assert runs[4].config.model.options == {"lmax": 2}
    assert runs[6].config.symmetry.augment


def test_ids_stable_under_edits(tmp_path):
    before = _ids(BASE, tmp_path)
    wider = {**BASE, "architectures": [{"family": "mpnn", "widths": [8, 16, 32]}]}
    after = _ids(wider, tmp_path)
    assert set(before) < set(after) and len(after) == 3
    # an unrelated architecture added, or another output directory: same ids for the old runs
    more = {**BASE, "out": "elsewhere", "architectures": BASE["architectures"] + [{"family": "egnn", "widths": [4]}]}
    assert _ids(more, tmp_path)[:2] == before
    # a changed setting that affects training changes every id
    assert not set(_ids({**BASE, "batch_size": 32}, tmp_path)) & set(before)


@pytest.mark.parametrize("change, message", [
    ({"architectures": []}, "architectures: List should have at least 1 item"),
    ({"architectures": [{"family": "transformer", "widths": [8]}]}, "unknown family 'transformer'"),
    ({"architectures": [{"family": "mpnn", "widths": [8, 8]}]}, "widths must be distinct"),
    ({"architectures": [{"family": "mpnn", "widths": [8]}, {"family": "mpnn", "widths": [16]}]},
     "group 'mpnn' appears twice"),
    ({"tokens": 10, "epochs": 1}, "either tokens or epochs"),
    ({"data": {"path": "x", "embedded": True}}, "exactly one of path, embedded, generate"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
    ({"widths": [8]}, "widths: Extra inputs are not permitted"),
    ({"optimizer": {"lr": -1}}, "optimizer.lr: Input should be greater than 0"),
])
def test_bad_study_files(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(ConfigError) as err:
        load_study_config(path)
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


def test_bad_files_on_the_command_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: s\narchitectures: [\n")
    assert main(["study", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("symscale: error:") and "invalid YAML" in err and len(err.splitlines()) == 1
    assert main(["study", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read study file" in capsys.readouterr().err
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert main(["study", str(scalar)]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    # a per-architecture optimizer override with an impossible value is caught before anything runs
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({**BASE, "out": str(tmp_path / "o"),
                                    "architectures": [{"family": "mpnn", "widths": [4], "optimizer": {"lr": 0}}]}))
    assert main(["study", str(over)]) == 2
    assert "optimizer.lr" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs").exists()
    # a missing data path names the field
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text(yaml.safe_dump({**BASE, "out": str(tmp_path / "n"), "data": str(tmp_path / "nope")}))
    assert main(["study", str(nodata)]) == 2
    assert "data.path" in capsys.readouterr().err


def test_quickstart_is_the_main_job():
    """examples/quickstart.yaml: all four families at >= 3 widths each, on the embedded data."""
    from pathlib import Path

    cfg = load_study_config(Path(__file__).parents[2] / "examples" / "quickstart.yaml")
    assert cfg.data.embedded
    runs = expand(cfg, None)
    widths = {}
    for r in runs:
        widths.setdefault(r.family, []).append(r.width)
    assert set(widths) == {"mpnn", "gemnet", "egnn", "esen"} and all(len(w) >= 3 for w in widths.values())


def test_paper_mini_study_meets_issue_7():
    """benchmarks/paper_mini/study.yaml: >= 5 widths spanning >= 1.5 decades of N per family, >= 15
    evaluations per run, and the ablations (esen l2 vs l4; mpnn with augmentation, symmetry loss, FA)."""
    from pathlib import Path

    from symscale.models import build, count_parameters

    cfg = load_study_config(Path(__file__).parents[2] / "benchmarks" / "paper_mini" / "study.yaml")
    assert cfg.evaluation.points >= 15
    groups = {a.group(): a for a in cfg.architectures}
    for name in ("mpnn", "gemnet", "egnn", "esen-l2"):
        a = groups[name]
        n = [count_parameters(build(a.family, w, **a.options)) for w in a.widths]
        assert len(n) >= 5 and max(n) / min(n) >= 10 ** 1.5, name
    assert groups["esen-l4"].options["lmax"] == 4 and groups["esen-l2"].options["lmax"] == 2
    assert groups["mpnn-aug"].symmetry.augment and groups["mpnn-fa"].symmetry.frame_averaging
    assert groups["mpnn-symloss2"].symmetry.loss is not None
