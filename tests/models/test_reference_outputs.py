"""Faster code, same function: outputs of every family against values stored from the code before issue 14.

``reference_outputs.json`` holds, for each case below, the float64 energies and forces (direct and
conservative) of the model built with ``torch.manual_seed(0)`` on a fixed batch (ethanol, water, a rattled
rock-salt cell: molecules and periodic images), the checksum of those initial weights, and the names and
shapes of the ``state_dict`` entries. They were written by the implementation of commit f6a7437 (before the
CPU speed-ups of issue 14)::

    PYTHONPATH=<checkout of f6a7437>/src python tests/models/test_reference_outputs.py --write \\
        tests/models/reference_outputs.json

The test checks that today's code builds the same weights, accepts the old checkpoint layout (same
``state_dict`` names and shapes) and computes the same outputs to float64 rounding (relative 1e-9).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from symscale.data import Batch
from symscale.models import build

REFERENCE = Path(__file__).with_name("reference_outputs.json")

CASES = {
    "mpnn": ("mpnn", 8, {"num_layers": 2}),
    "egnn": ("egnn", 16, {"num_layers": 2}),
    "gemnet": ("gemnet", 8, {"num_layers": 2}),
    "esen-l2": ("esen", 4, {"lmax": 2, "num_layers": 2}),
    "esen-l4": ("esen", 4, {"lmax": 4, "num_layers": 1}),
    "esen-so3": ("esen", 3, {"lmax": 3, "mmax": 1, "num_layers": 1, "parity": "so3"}),
}


def reference_batch() -> Batch:
    rocksalt = bulk("NaCl", "rocksalt", a=5.64)
    rocksalt.rattle(0.08, seed=3)
    polar = Atoms("OCO", positions=[[0.0, -1.16, 0.0], [0.0, 0.0, 0.0], [0.05, 1.16, 0.0]])  # near-pole edges
    return Batch.from_atoms([molecule("CH3CH2OH"), molecule("H2O"), rocksalt, polar], cutoff=5.0,
                            dtype=torch.float64)


def outputs(case: str) -> dict:
    family, width, options = CASES[case]
    out = {}
    batch = reference_batch()
    for mode in ("direct", "conservative"):
        torch.manual_seed(0)
        model = build(family, width, forces=mode, **options).double()
        pred = model(batch)
        out[mode] = {"energy": pred["energy"].tolist(), "forces": pred["forces"].detach().reshape(-1).tolist()}
        if mode == "direct":
            state = model.state_dict()
            out["checksum"] = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
            out["state"] = {k: list(v.shape) for k, v in state.items()}
    return out


def old_layout(family: str, state: dict) -> dict:
    """``state`` with the layouts changed since the reference written back in the old form: egnn's
    ``radial.weight`` ``(W, B)`` and ``inv.weight`` ``(W, 3C)`` were one ``inv.weight`` ``(W, B + 3C)`` (split so
    that μP trains the radial input map at the base learning rate; the weights are the same numbers)."""
    if family != "egnn":
        return state
    out = {}
    for k, v in state.items():
        if k.endswith(".radial.weight"):
            continue
        if k.endswith(".inv.weight"):
            radial = state[k[: -len("inv.weight")] + "radial.weight"]
            v = torch.cat([radial, v], dim=1) if isinstance(v, torch.Tensor) else [v[0], radial[1] + v[1]]
        out[k] = v
    return out


def _rel(a: list[float], b: list[float]) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("case", list(CASES))
def test_same_outputs_as_before_the_speedups(case):
    ref = json.loads(REFERENCE.read_text())[case]
    new = outputs(case)
    family = CASES[case][0]
    assert old_layout(family, new["state"]) == ref["state"], \
        "state_dict names or shapes changed: old checkpoints would not load"
    assert new["checksum"] == pytest.approx(ref["checksum"], rel=1e-12), "initial weights differ"
    for mode in ("direct", "conservative"):
        err_e = _rel(new[mode]["energy"], ref[mode]["energy"])
        err_f = _rel(new[mode]["forces"], ref[mode]["forces"])
        print(f"{case} {mode}: relative difference energy {err_e:.1e}, forces {err_f:.1e}")
        assert err_e < 1e-9 and err_f < 1e-9


def test_egnn_loads_the_layout_before_the_radial_split():
    """A state_dict with egnn's combined ``inv.weight`` loads into today's model and computes the same."""
    family, width, options = CASES["egnn"]
    torch.manual_seed(0)
    model = build(family, width, **options).double()
    old = old_layout(family, model.state_dict())
    assert not any(k.endswith("radial.weight") for k in old)
    torch.manual_seed(1)
    fresh = build(family, width, **options).double()
    fresh.load_state_dict(old)
    batch = reference_batch()
    assert torch.equal(fresh(batch)["forces"], model(batch)["forces"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        raise SystemExit("usage: python tests/models/test_reference_outputs.py --write OUT.json")
    torch.set_num_threads(1)
    Path(sys.argv[2]).write_text(json.dumps({case: outputs(case) for case in CASES}, indent=0) + "\n")
