"""Measured compute: κ (forward FLOPs per parameter per atom) and FLOPs of one training step.

The study writes training compute as ``C = 3 κ N D``: ``N`` parameters, ``D`` atoms seen, ``κ`` the
forward FLOPs per parameter per atom of the architecture, and ×3 for forward + backward. Here κ is
*measured* on a fixed reference batch with :class:`torch.utils.flop_counter.FlopCounterMode`.

What is counted. ``FlopCounterMode`` counts only matmul/convolution-like aten ops (``mm``, ``addmm``,
``bmm``, ``baddbmm``, convolutions, attention), at 2 FLOPs per multiply-add. Elementwise work
(activations, envelopes, ``index_add`` scatters, gathers, products of vector channels) is not counted.
We keep that convention for ``kappa``: it is what makes ``3κND`` comparable with the study's numbers,
and it is the part of the cost that grows with N. Because equivariant models (vector channels, tensor
products written as elementwise products) do a real share of their arithmetic outside matmuls,
:func:`measure_kappa` also reports ``kappa_elementwise``: κ after adding about one FLOP per element of
the largest floating (dense) operand of every other arithmetic op (pure data movement — views, copies,
gathers, concatenations, allocation — and the assembly of sparse matrices are excluded). It is an
upper-bound-style diagnostic for the docs, not the κ used for C.

Block-sparse (CSR) matrix products — eSEN's edge rotations, GemNet's gathers — count 2 FLOPs per stored
entry and column (``layers._count_sparse_mm``), not as dense matrices.

Positions are passed as ``pos * 1.0`` (a non-leaf copy): FlopCounterMode can otherwise miss work done
on leaf inputs (pytorch issue 131753).

Command line: ``python -m symscale.models.flops --table`` prints the κ table of ``docs/models.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..data.batch import Batch
from .registry import count_parameters

# Small drug-like molecules (3D from RDKit ETKDG, fixed seed): 10-33 atoms, like OMol25's neutral set
# (about 27 atoms per structure), so neighbour counts within 5 Å are realistic.
REFERENCE_SMILES = {
    "ethanol": "CCO",
    "benzene": "c1ccccc1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "ibuprofen": "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
}

# Data movement / allocation: not arithmetic, never counted.
_MOVEMENT = {
    "clone", "_to_copy", "copy_", "copy", "zeros", "zeros_like", "new_zeros", "ones", "ones_like",
    "new_ones", "empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "full",
    "full_like", "fill_", "fill", "index", "index_select", "gather", "cat", "stack", "arange", "detach",
    "lift_fresh", "lift_fresh_copy", "scalar_tensor", "_local_scalar_dense", "embedding",
    "embedding_dense_backward", "unique", "_unique2", "repeat", "expand_copy", "constant_pad_nd",
    "masked_fill", "where", "zero_", "t_copy", "transpose_copy", "_reshape_alias_copy", "unsqueeze_copy",
    "view_copy", "slice_copy", "select_copy", "split_with_sizes_copy", "split", "split_with_sizes",
    "contiguous", "alias", "set_", "resize_", "select_backward", "slice_backward",
}


class _ElementwiseCounter(TorchDispatchMode):
    """About one FLOP per element of the largest floating operand of each arithmetic, non-matmul op."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = packet.__name__
        if packet in flop_registry or func.is_view or name in _MOVEMENT:
            return out
        sizes = [t.numel() for t in torch.utils._pytree.tree_leaves((args, kwargs, out))
                 if isinstance(t, torch.Tensor) and t.is_floating_point() and t.layout == torch.strided]
        if sizes:
            self.flops += max(sizes)
        return out


def _prepare(model: torch.nn.Module, batch: Batch) -> Batch:
    """``batch`` on the model's device and floating dtype, with positions as a non-leaf copy."""
    p = next(model.parameters(), None)
    if p is not None:
        batch = batch.to(p.device, p.dtype)
    return batch.replace(pos=batch.pos * 1.0)


def measure_kappa(model: torch.nn.Module, batch: Batch) -> dict[str, float | int]:
    """κ = forward FLOPs / (params × atoms) of ``model`` on ``batch`` (matmul FLOPs, see module doc).

    The batch is moved to the model's device and dtype. The forward pass is ``model(batch)`` exactly as
    used in training, including the isolated-atom
    reference pass of :class:`ForceFieldModel` (tiny) and, for conservative models, the force gradient.

    Returns ``{"kappa", "forward_flops", "params", "atoms", "edges", "kappa_elementwise"}``.
    """
    params = count_parameters(model)
    b = _prepare(model, batch)
    counter, elementwise = FlopCounterMode(display=False), _ElementwiseCounter()
    with torch.no_grad(), counter, elementwise:
        model(b)
    flops = int(counter.get_total_flops())
    atoms = batch.tokens
    return {
        "kappa": flops / (params * atoms),
        "forward_flops": flops,
        "params": params,
        "atoms": atoms,
        "edges": batch.n_edges,
        "kappa_elementwise": (flops + elementwise.flops) / (params * atoms),
    }


def default_loss(out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """The study's loss: per-atom energy MAE + mean per-atom L2 norm of the force error.

    Missing references count as zeros (FLOP counting only needs the shape of the computation).
    """
    e_ref = batch.energy if batch.energy is not None else torch.zeros_like(out["energy"])
    f_ref = batch.forces if batch.forces is not None else torch.zeros_like(out["forces"])
    n = batch.n_atoms.to(out["energy"].dtype)
    e_loss = ((out["energy"] - e_ref).abs() / n).mean()
    f_loss = torch.linalg.vector_norm(out["forces"] - f_ref, dim=-1).mean()
    return e_loss + f_loss


def training_step_flops(model: torch.nn.Module, batch: Batch,
                        loss_fn: Callable[[dict, Batch], torch.Tensor] | None = None) -> dict[str, float | int]:
    """FLOPs of one training step: forward + loss + backward (no optimizer update).

    The model runs in training mode (conservative models build the double-backward graph); parameter
    gradients are cleared afterwards and the previous mode restored.

    Returns ``{"flops", "forward_flops", "backward_flops", "ratio", "params", "atoms"}`` where
    ``ratio = flops / forward_flops`` (the study assumes 3).
    """
    loss_fn = loss_fn or default_loss
    was_training = model.training
    model.train()
    b = _prepare(model, batch)
    try:
        fwd, bwd = FlopCounterMode(display=False), FlopCounterMode(display=False)
        with fwd:
            loss = loss_fn(model(b), b)
        with bwd:
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    f, g = int(fwd.get_total_flops()), int(bwd.get_total_flops())
    return {"flops": f + g, "forward_flops": f, "backward_flops": g, "ratio": (f + g) / max(f, 1),
            "params": count_parameters(model), "atoms": batch.tokens}


def reference_atoms() -> list:
    """The reference molecules as :class:`ase.Atoms` (deterministic RDKit ETKDG conformers)."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    out = []
    for name, smiles in REFERENCE_SMILES.items():
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        params = AllChem.ETKDGv3()
        params.randomSeed = 7
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError(f"RDKit could not embed reference molecule {name}")
        pos = mol.GetConformer().GetPositions()
        out.append(Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos))
    return out


def reference_batch(cutoff: float = 5.0, dtype: torch.dtype = torch.float32) -> Batch:
    """The fixed κ reference batch: six drug-like molecules (see ``REFERENCE_SMILES``), cutoff 5 Å."""
    return Batch.from_atoms(reference_atoms(), cutoff=cutoff, dtype=dtype)


# ------------------------------------------------------------------------------------------ table
TABLE_WIDTHS = {"mpnn": (128, 512, 1024), "egnn": (64, 128, 256), "gemnet": (32, 64, 128),
                "esen": (8, 16, 32)}
STUDY_KAPPA = {"mpnn": 2.33, "egnn": 28.09, "gemnet": 35.18, "esen": 74.36}


def kappa_table(families: list[str] | None = None, widths: dict[str, tuple[int, ...]] | None = None,
                stream=sys.stdout) -> list[dict]:
    """Measure κ for each available family at its table widths; print a Markdown table row by row."""
    from .registry import available, build

    widths = widths or TABLE_WIDTHS
    have = available()
    families = [f for f in (families or list(TABLE_WIDTHS)) if f in have]
    batch = reference_batch()
    print(f"reference batch: {batch.n_structures} molecules, {batch.tokens} atoms, {batch.n_edges} edges "
          f"({batch.n_edges / batch.tokens:.1f} neighbours/atom), cutoff 5 Å, float32", file=stream)
    print("| family | width | params | forward GFLOPs | κ | κ incl. elementwise | step/forward | study κ |",
          file=stream)
    print("|---|---|---|---|---|---|---|---|", file=stream)
    rows = []
    for fam in families:
        for w in widths.get(fam, TABLE_WIDTHS.get(fam, ())):
            torch.manual_seed(0)
            model = build(fam, w)
            t0 = time.perf_counter()
            k = measure_kappa(model, batch)
            step = training_step_flops(model, batch)
            row = {"family": fam, "width": w, **k, "step_ratio": step["ratio"],
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"| {fam} | {w} | {k['params']:,} | {k['forward_flops'] / 1e9:.3f} | {k['kappa']:.2f} | "
                  f"{k['kappa_elementwise']:.2f} | {step['ratio']:.2f} | {STUDY_KAPPA.get(fam, float('nan'))} |",
                  file=stream, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symscale.models.flops", description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="store_true", help="print the κ table of docs/models.md")
    parser.add_argument("--families", nargs="*", default=None, help="families to measure (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.table:
        parser.print_help()
        return 0
    kappa_table(args.families)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
