"""OMol25 as shipped: a directory of ``.aselmdb`` shards with charge and spin in each row's ``data`` and a
``metadata.npz``, read through ``data info`` and ``data prepare`` (``--where``, workers, resume, errors)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from omol_synth import write_omol_dir, write_omol_shard
from test_streaming_prepare import assert_same_as_reference

import symscale.data.convert as convert_mod
from symscale.cli import main
from symscale.data import PreparedDataset, read_structures
from symscale.data.prepare import prepare_source
from symscale.data.shards import plan_source
from symscale.errors import DataError

N = 240


@pytest.fixture(scope="module")
def omol(tmp_path_factory):
    return write_omol_dir(tmp_path_factory.mktemp("omol") / "train_4M", N, n_shards=3, seed=1)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("symscale: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def counts(values) -> dict:
    v, c = np.unique(values, return_counts=True)
    return {str(a): int(b) for a, b in zip(v, c)}


def test_plan_counts_rows_and_reads_metadata_npz(omol, tmp_path):
    plan = plan_source(omol.directory)
    assert [s.path for s in plan.shards] == omol.shards  # metadata.npz is not a shard
    assert plan.rows == N and plan.atoms == int(omol.natoms.sum()) and plan.metadata_npz == "used"
    assert plan.shards[1].atoms == int(omol.natoms[80:160].sum()) and not plan.notes
    bad = tmp_path / "bad"
    shutil.copytree(omol.directory, bad)
    np.savez(bad / "metadata.npz", natoms=omol.natoms[:-5])
    plan = plan_source(bad)
    assert plan.metadata_npz == "ignored" and plan.atoms is None and plan.rows == N
    assert "natoms has 235 entries but the shards hold 240 rows; ignored" in plan.notes[0]
    (bad / "metadata.npz").unlink()
    assert plan_source(bad).metadata_npz == "absent"


def test_info_reports_charge_and_spin_distributions(omol, capsys):
    code, out, err = run(capsys, "data", "info", omol.directory, "--json")
    assert code == 0, err
    desc = json.loads(out)
    assert desc["structures"] == N and desc["atoms"] == int(omol.natoms.sum())
    assert desc["charge"] == counts(omol.charge) and desc["spin"] == counts(omol.spin)
    assert desc["molecules"] == N  # OMol25's source is one identifier per structure
    code, out, _ = run(capsys, "data", "info", omol.directory, "--json", "--where", "charge==0")
    desc = json.loads(out)
    neutral = omol.mask(charge=0)
    assert desc["where"] == ["charge==0"] and desc["rows"] == N and desc["structures"] == neutral.sum()
    assert desc["charge"] == {"0": int(neutral.sum())} and desc["spin"] == counts(omol.spin[neutral])
    code, text, _ = run(capsys, "data", "info", omol.directory, "--where", "spin==1")
    assert code == 0 and f"spin         1:{int(omol.mask(spin=1).sum())}" in text and "charge       -1:" in text


def test_prepare_the_neutral_singlet_subset(omol, tmp_path, capsys):
    out = tmp_path / "neutral"
    code, stdout, err = run(capsys, "data", "prepare", omol.directory, "--out", out, "--where", "charge==0",
                            "--where", "spin == 1", "--workers", "2", "--seed", "3")
    assert code == 0, err
    keep = omol.mask(charge=0, spin=1)
    assert f"{keep.sum()} structures (selected from {N} rows by charge==0 and spin==1)" in stdout
    ds = PreparedDataset(out)
    assert len(ds) == keep.sum() and np.all(ds.charge == 0) and np.all(ds.spin == 1)
    np.testing.assert_array_equal(ds.n_atoms, omol.natoms[keep])
    assert ds.metadata["selection"] == {"where": ["charge==0", "spin==1"], "rows": N, "structures": int(keep.sum())}
    assert ds.metadata["shards"]["count"] == 3 and ds.metadata["shards"]["metadata_npz"] == "used"
    assert "--where charge==0 --where 'spin == 1'" in ds.metadata["command"]
    # the same arrays, splits and normalisation as the in-memory writer on the same structures
    selected = list(read_structures(omol.directory, where=["charge==0", "spin==1"]))
    assert_same_as_reference(out, selected, seed=3, val_fraction=0.1, test_fraction=0.0)
    code, stdout, _ = run(capsys, "data", "info", out, "--json")
    desc = json.loads(stdout)
    assert desc["charge"] == {"0": int(keep.sum())} and desc["spin"] == {"1": int(keep.sum())}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neutral", "ref-energy.npy", "ref-forces.npy",
                                                          "ref-mol_index.npy", "ref-numbers.npy",
                                                          "ref-offsets.npy", "ref-positions.npy"]


def test_regular_expression_and_element_selection(omol, tmp_path):
    out = prepare_source(omol.directory, tmp_path / "sub", where=["data_id~^(elytes|biomolecules)$",
                                                                   "elements<=C,H,N,O"], workers=1)
    ds = PreparedDataset(out)
    wanted = [i for i, d in enumerate(omol.data_id) if d in ("elytes", "biomolecules")]
    assert 0 < len(ds) < len(wanted)  # some of them hold S or Cl
    assert set(np.unique(ds.numbers)) <= {1, 6, 7, 8}


def test_interrupted_prepare_continues_from_finished_shards(omol, tmp_path, monkeypatch):
    whole = PreparedDataset(prepare_source(omol.directory, tmp_path / "whole", workers=1))
    converted, interrupts = [], [KeyboardInterrupt]
    real = convert_mod.convert_shard

    def interrupted(task, report=None):  # Ctrl-C while the third shard is read, the first time only
        converted.append(task["index"])
        if task["index"] == 2 and interrupts:
            raise interrupts.pop()
        return real(task, report)

    monkeypatch.setattr(convert_mod, "convert_shard", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare_source(omol.directory, out, workers=1)
    assert converted == [0, 1] + [2] and not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".resumed.partial-")]
    assert sorted(p.name for p in partial.iterdir() if p.is_dir()) == ["shard-00000", "shard-00001"]
    assert not (partial / "metadata.json").exists() and not (partial / ".symscale-output.json").exists()
    converted.clear()
    ds = PreparedDataset(prepare_source(omol.directory, out, workers=1))
    assert converted == [2]  # the finished shards are reused
    assert ds.fingerprint == whole.fingerprint and len(ds) == N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed", "whole"]


def test_a_changed_shard_is_converted_again(omol, tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(omol.directory, src)
    converted = []
    real = convert_mod.convert_shard

    def failing(task, report=None):
        converted.append(task["index"])
        if task["index"] == 1:
            raise KeyboardInterrupt
        return real(task, report)

    monkeypatch.setattr(convert_mod, "convert_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_source(src, tmp_path / "out", workers=1)
    (src / "data.0000.aselmdb").unlink()  # shard 0 rewritten (other content, other stamp)
    write_omol_shard(src / "data.0000.aselmdb", 0, 80, seed=7)
    monkeypatch.setattr(convert_mod, "convert_shard", lambda task, report=None: converted.append(task["index"])
                        or real(task, report))
    converted.clear()
    ds = PreparedDataset(prepare_source(src, tmp_path / "out", workers=1))
    assert converted == [0, 1, 2] and len(ds) == N


def test_bad_shards_are_one_line_errors_naming_shard_and_row(omol, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(omol.directory, src)
    out = tmp_path / "out"
    # a key no row has: stops at the first row of the first shard, listing the keys there are
    code, _, err = run(capsys, "data", "prepare", src, "--out", out, "--where", "chrage==0", "--workers", "1")
    one_line_error(code, err, f"{src / 'data.0000.aselmdb'}: structure 0: where 'chrage==0': no key 'chrage'",
                   "charge, data_id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # a shard that cannot be opened: found while planning, before any work
    (src / "data.0001.aselmdb").write_bytes(b"\0" * 4096)
    code, _, err = run(capsys, "data", "prepare", src, "--out", out)
    one_line_error(code, err, f"{src / 'data.0001.aselmdb'}: cannot open aselmdb database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # a row without forces in the second shard (structure 95 = row 15 of shard 1)
    (src / "data.0001.aselmdb").unlink()
    write_omol_shard(src / "data.0001.aselmdb", 80, 80, seed=1, drop_forces=(95,))
    code, _, err = run(capsys, "data", "prepare", src, "--out", out, "--workers", "1")
    one_line_error(code, err, f"{src / 'data.0001.aselmdb'}: structure 15: missing forces",
                   "1 finished shard(s) kept in")
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert not any(p.name in ("metadata.json", ".symscale-output.json") for p in partial.rglob("*"))
    # the same error from worker processes
    code, _, err = run(capsys, "data", "prepare", src, "--out", out, "--workers", "2")
    one_line_error(code, err, f"{src / 'data.0001.aselmdb'}: structure 15: missing forces")
    # the shard repaired: the run continues from the finished shard and completes
    (src / "data.0001.aselmdb").unlink()
    write_omol_shard(src / "data.0001.aselmdb", 80, 80, seed=1)
    code, _, err = run(capsys, "data", "prepare", src, "--out", out, "--workers", "1")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_charge_on_some_structures_only_is_refused(tmp_path):
    import ase.db
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    src = tmp_path / "mixed.aselmdb"
    db = ase.db.connect(str(src), type="aselmdb", use_lock_file=False)
    with db:
        for k in range(4):
            atoms = molecule("H2O")
            atoms.calc = SinglePointCalculator(atoms, energy=-10.0 - k, forces=np.zeros((3, 3)))
            db.write(atoms, data={"spin": 1, **({"charge": 0} if k != 2 else {})})
    before = sorted(p.name for p in tmp_path.iterdir())  # the database and LMDB's lock file of the writer
    with pytest.raises(DataError, match=rf"{src}: structure 2: no charge, although 3 of the 4 structures have one"):
        prepare_source(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_selection_that_keeps_nothing_says_so(omol, tmp_path, capsys):
    code, _, err = run(capsys, "data", "prepare", omol.directory, "--out", tmp_path / "none", "--where",
                       "charge>5", "--workers", "1")
    one_line_error(code, err, f"no structures found ({N} rows read, none satisfies where charge>5)")
    assert list(tmp_path.iterdir()) == []


def test_ray_tasks_write_the_same_dataset(omol, tmp_path, monkeypatch):
    """One Ray task per shard, in place and node-locally (files shipped back): the same content as local
    workers; a shard's error arrives as the one-line DataError naming shard and row."""
    ray = pytest.importorskip("ray")
    import logging
    import os

    from symscale.study.ray_backend import NODE_LOCAL_ENV

    local = PreparedDataset(prepare_source(omol.directory, tmp_path / "local", where=["spin==2"], workers=1))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        in_place = prepare_source(omol.directory, tmp_path / "ray", where=["spin==2"], backend="ray")
        assert PreparedDataset(in_place).fingerprint == local.fingerprint
        monkeypatch.setenv(NODE_LOCAL_ENV, "1")
        shipped = prepare_source(omol.directory, tmp_path / "shipped", where=["spin==2"], backend="ray", workers=2)
        assert PreparedDataset(shipped).fingerprint == local.fingerprint
        src = tmp_path / "src"
        shutil.copytree(omol.directory, src)
        (src / "data.0002.aselmdb").unlink()
        write_omol_shard(src / "data.0002.aselmdb", 160, 80, seed=1, drop_forces=(170,))
        with pytest.raises(DataError, match=rf"^{src / 'data.0002.aselmdb'}: structure 10: missing forces"):
            prepare_source(src, tmp_path / "bad", backend="ray")
        assert ray.is_initialized()  # a connection that existed before is left open
    finally:
        ray.shutdown()
    assert not (tmp_path / "bad").exists()
