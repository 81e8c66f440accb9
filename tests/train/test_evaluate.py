"""evaluate_model / evaluate_checkpoint: exact metrics, batching-independent, from a saved run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

from symscale.data import Batch, PreparedDataset, Structure, write_prepared
from symscale.errors import DataError
from symscale.models import build
from symscale.train.checkpoint import model_spec, save_checkpoint
from symscale.train.evaluate import evaluate_checkpoint, evaluate_model
from symscale.train.loss import LossFunction

CUTOFF = 4.0


def emt_structures(n: int = 12, seed: int = 0) -> list[Structure]:
    """Rattled small molecules labelled with ASE's EMT (a real, cheap potential)."""
    rng = np.random.default_rng(seed)
    names = ["CH3CH2OH", "H2O", "CH3OH", "NH3", "CH4", "HCOOH"]
    out = []
    for k in range(n):
        a = molecule(names[k % len(names)])
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        a.calc = EMT()
        out.append(Structure(numbers=a.numbers, positions=a.positions, energy=a.get_potential_energy(),
                             forces=a.get_forces(), mol_id=f"m{k}"))
    return out


def mpnn():
    torch.manual_seed(0)
    m = build("mpnn", 8, cutoff=CUTOFF)
    m.set_normalization({1: 1.0, 6: 2.0, 7: 3.0, 8: 4.0}, 0.2, 0.5)
    return m.double().eval()


def manual_metrics(model, structures, e_scale, f_scale):
    b = Batch.from_structures(structures, cutoff=CUTOFF, dtype=torch.float64)
    out = model(b)
    de = (out["energy"] - b.energy).detach() / b.n_atoms
    df = (out["forces"] - b.forces).detach()
    e_mae, f_l2 = float(de.abs().mean()), float(df.norm(dim=-1).mean())
    return {"energy_mae_per_atom": e_mae, "force_mae": float(df.abs().mean()), "force_l2": f_l2,
            "loss": e_mae / e_scale + f_l2 / f_scale}


def test_evaluate_model_exact_and_independent_of_batching():
    model, structures = mpnn(), emt_structures()
    es, fs = float(model.energy_scale), float(model.force_scale)  # 0.2 and 0.5 stored in float32
    ref = manual_metrics(model, structures, es, fs)
    for bs in (1, 5, 12):
        batches = [Batch.from_structures(structures[i:i + bs], cutoff=CUTOFF, dtype=torch.float64)
                   for i in range(0, len(structures), bs)]
        got = evaluate_model(model, batches)  # model's own scales: 0.2 eV/atom, 0.5 eV/Å
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-9), (bs, k)
        assert got["n_structures"] == 12 and got["n_atoms"] == sum(s.n_atoms for s in structures)
    raw = evaluate_model(model, batches, energy_scale=1.0, force_scale=1.0)
    assert raw["loss"] == pytest.approx(ref["energy_mae_per_atom"] + ref["force_l2"], rel=1e-9)
    # same formula as the training loss on one batch holding everything
    b = Batch.from_structures(structures, cutoff=CUTOFF, dtype=torch.float64)
    assert float(LossFunction(es, fs)(model(b), b).detach()) == pytest.approx(ref["loss"], rel=1e-9)
    assert model.training is False


def test_evaluate_model_needs_labels():
    unlabeled = [Structure(numbers=s.numbers, positions=s.positions) for s in emt_structures(2)]
    with pytest.raises(DataError, match="batch 0"):
        evaluate_model(mpnn(), [Batch.from_structures(unlabeled, cutoff=CUTOFF)])


@pytest.fixture
def run_and_data(tmp_path):
    model = mpnn()
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", {"model": model_spec("mpnn", 8, {"cutoff": CUTOFF}),
                                            "model_state": model.float().state_dict()})
    data = write_prepared(emt_structures(20), tmp_path / "data", source="emt-test", val_fraction=0.25)
    return run, data, mpnn()


def test_evaluate_checkpoint_on_prepared_split(run_and_data):
    run, data, model = run_and_data
    ds = PreparedDataset(data)
    val = [ds.structure(int(i)) for i in ds.split("val")]
    assert 0 < len(val) < 20
    got = evaluate_checkpoint(run, data, batch_size=3, split="val")
    # the checkpoint stores float32 weights; evaluation runs in float64
    ref = manual_metrics(model.float().double(), val, 0.2, 0.5)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-6), k
    assert got["n_structures"] == len(val) and got["split"] == "val" and got["cutoff"] == CUTOFF
    everything = evaluate_checkpoint(run, data, batch_size=64)
    assert everything["n_structures"] == 20
    # a model instance works too, and is left untouched
    m = mpnn().float()
    inst = evaluate_checkpoint(m, data, split="val")
    assert inst["loss"] == pytest.approx(got["loss"], rel=1e-6)
    assert next(m.parameters()).dtype == torch.float32


def test_evaluate_checkpoint_errors(run_and_data, tmp_path):
    run, data, _ = run_and_data
    with pytest.raises(DataError, match="split 'test' selects no structures"):
        evaluate_checkpoint(run, data, split="test")  # test_fraction was 0
    with pytest.raises(DataError, match="no split 'bogus'"):
        evaluate_checkpoint(run, data, split="bogus")
    with pytest.raises(DataError, match="no checkpoint"):
        evaluate_checkpoint(tmp_path / "nothing", data)
    with pytest.raises(DataError, match="no such file"):
        evaluate_checkpoint(run, tmp_path / "missing.xyz")
