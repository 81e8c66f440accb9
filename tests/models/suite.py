"""``ModelSuite``: the tests every model family of the staircase must pass.

A family's test file subclasses it::

    from suite import ModelSuite

    class TestEGNN(ModelSuite):
        name = "egnn"
        options = {"num_layers": 2}
        equivariant = True

Everything runs in float64 on small real molecules from :func:`ase.build.molecule` with seeded random
weights. Measured errors are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from symscale.data import Batch
from symscale.models import build, count_parameters
from symscale.models.registry import FAMILIES, available

F64 = torch.float64


# ------------------------------------------------------------------------------------------ structures
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def water() -> Atoms:
    return molecule("H2O")


def rattled_rocksalt(seed: int = 3) -> Atoms:
    """Primitive NaCl cell (2 atoms, 3D periodic), rattled so forces do not vanish by symmetry."""
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    atoms.rattle(0.08, seed=seed)
    return atoms


def far_pair() -> Atoms:
    """Two atoms 12 Å apart: atoms but no edges at the cutoffs used here."""
    return Atoms("CO", positions=[[0.0, 0.0, 0.0], [12.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------------------ helpers
def random_rotation(seed: int, proper: bool = True) -> torch.Tensor:
    """A random 3x3 orthogonal matrix from a seeded generator (det +1, or -1 when ``proper=False``)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q if proper else -q


def transform(batch: Batch, rot: torch.Tensor) -> Batch:
    """Rotate (or reflect) positions, edge shifts and cells: ``x -> R x``. Neighbours are unchanged."""
    rot = rot.to(batch.pos.dtype)
    cell = None if batch.cell is None else batch.cell @ rot.T
    return batch.replace(pos=batch.pos @ rot.T, edge_shift=batch.edge_shift @ rot.T, cell=cell)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` (max|b| floored at 1e-12)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


class ModelSuite:
    """Shared checks; subclasses set ``name``, ``options``, ``equivariant`` and may tune the rest."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    width: ClassVar[int] = 8
    widths: ClassVar[tuple[int, ...]] = (4, 8, 16)  # strictly increasing parameter count expected
    cutoff: ClassVar[float] = 5.0
    equivariant: ClassVar[bool] = True     # O(3)/SO(3) equivariance asserted; False: asserted broken
    reflection: ClassVar[bool | None] = None  # None: same as `equivariant`
    equivariance_tol: ClassVar[float] = 1e-8
    broken_min: ClassVar[float] = 1e-3     # minimal symmetry error of a non-equivariant model
    invariance_tol: ClassVar[float] = 1e-10  # translation / permutation / batching
    fd_step: ClassVar[float] = 1e-4
    fd_tol: ClassVar[float] = 1e-6
    cutoff_jump_tol: ClassVar[float] = 1e-6
    unused_parameters: ClassVar[tuple[str, ...]] = ()  # name substrings allowed to get no gradient
    seed: ClassVar[int] = 0

    # -------------------------------------------------------------------------------- building
    def make(self, dtype: torch.dtype = F64, **overrides) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        opts = {"cutoff": self.cutoff, **self.options, **overrides}
        width = opts.pop("width", self.width)
        return build(self.name, width, **opts).to(dtype)

    def batch(self, atoms_list, dtype: torch.dtype = F64) -> Batch:
        return Batch.from_atoms(atoms_list, cutoff=self.cutoff, dtype=dtype)

    def _reflects(self) -> bool:
        return self.equivariant if self.reflection is None else self.reflection

    # -------------------------------------------------------------------------------- registry
    def test_registered_with_options(self):
        assert self.name in FAMILIES and self.name in available()
        opts = available()[self.name]
        for key in ("forces", "cutoff"):
            assert key in opts
        model = self.make()
        params = inspect.signature(type(model).__init__).parameters
        for key, (default, desc) in opts.items():
            assert isinstance(desc, str) and desc and "\n" not in desc, key
            assert key in params, f"option {key!r} is not a constructor argument"
            assert params[key].default == default, f"option {key!r}: OPTIONS default != signature default"
        assert model.width == self.width
        assert model.build_config["name"] == self.name

    def test_outputs_nontrivial(self):
        model = self.make()
        out = model(self.batch([ethanol(), water()]))
        assert out["energy"].shape == (2,) and out["forces"].shape == (12, 3)
        assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
        print(f"|E| {out['energy'].abs().max():.3e}  |F| {out['forces'].abs().max():.3e}")
        assert out["forces"].abs().max() > 1e-4, "random model predicts ~zero forces: tests are vacuous"

    # -------------------------------------------------------------------------------- symmetry
    @pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
    def test_rotation_reflection(self, proper):
        model = self.make()
        b = self.batch([ethanol(), water(), rattled_rocksalt()])
        errs_e, errs_f = [], []
        for seed in (1, 2):
            rot = random_rotation(seed, proper=proper)
            ref, out = model(b), model(transform(b, rot))
            errs_e.append(rel_err(out["energy"], ref["energy"]))
            errs_f.append(rel_err(out["forces"], ref["forces"] @ rot.T))
        kind = "rotation" if proper else "reflection"
        err = max(max(errs_e), max(errs_f))
        print(f"{kind} error energy {max(errs_e):.2e} forces {max(errs_f):.2e}")
        expected = self.equivariant if proper else self._reflects()
        if expected:
            assert err < self.equivariance_tol
        elif self.equivariant and not proper:
            pytest.skip(f"{self.name} is not meant to be reflection-equivariant (error {err:.2e})")
        else:
            assert err > self.broken_min, f"{kind} error {err:.2e}: expected clearly broken symmetry"

    def test_translation_invariance(self):
        model = self.make()
        b = self.batch([ethanol(), rattled_rocksalt()])
        ref = model(b)
        out = model(b.replace(pos=b.pos + torch.tensor([1.7, -3.1, 0.4], dtype=F64)))
        err = max(rel_err(out["energy"], ref["energy"]), rel_err(out["forces"], ref["forces"]))
        print(f"translation error {err:.2e}")
        assert err < self.invariance_tol

    def test_permutation_equivariance(self):
        model = self.make()
        b = self.batch([ethanol()])
        g = torch.Generator().manual_seed(5)
        perm = torch.randperm(b.tokens, generator=g)
        inv = torch.argsort(perm)
        eorder = torch.randperm(b.n_edges, generator=g)  # edge order must not matter either
        pb = b.replace(pos=b.pos[perm], numbers=b.numbers[perm], edge_index=inv[b.edge_index][:, eorder],
                       edge_shift=b.edge_shift[eorder])
        ref, out = model(b), model(pb)
        err = max(rel_err(out["energy"], ref["energy"]), rel_err(out["forces"], ref["forces"][perm]),
                  rel_err(out["atom_energy"], ref["atom_energy"][perm]))
        print(f"permutation error {err:.2e}")
        assert err < self.invariance_tol

    # -------------------------------------------------------------------------------- forces
    def test_conservative_forces_match_finite_differences(self):
        model = self.make(forces="conservative")
        b = self.batch([water(), ethanol()])
        forces = model(b)["forces"].detach()
        g = torch.Generator().manual_seed(7)
        coords = list(range(9)) + (9 + torch.randperm(27, generator=g)[:9]).tolist()  # all of H2O, 9 of EtOH
        h = self.fd_step
        fd = torch.empty(len(coords), dtype=F64)
        with torch.no_grad():
            for k, c in enumerate(coords):
                e = []
                for sign in (1.0, -1.0):
                    pos = b.pos.clone()
                    pos.view(-1)[c] += sign * h
                    e.append(model(b.replace(pos=pos))["energy"].sum())
                fd[k] = -(e[0] - e[1]) / (2 * h)
        err = rel_err(forces.reshape(-1)[coords], fd)
        print(f"finite-difference error {err:.2e} (|F| max {fd.abs().max():.2e})")
        assert fd.abs().max() > 1e-4
        assert err < self.fd_tol

    def test_direct_head_shape_dtype_units(self):
        model = self.make(forces="direct")
        b = self.batch([ethanol(), water()])
        ref = model(b)
        assert ref["forces"].shape == (b.tokens, 3) and ref["forces"].dtype == F64
        assert ref["energy"].shape == (2,) and ref["atom_energy"].shape == (b.tokens,)
        e0 = {1: -0.5, 6: -37.8, 8: -75.1}
        model.set_normalization(e0=e0, energy_scale=3.0, force_scale=2.5)
        out = model(b)
        e0_sum = torch.zeros(2, dtype=F64).index_add_(
            0, b.batch, torch.tensor([e0[int(z)] for z in b.numbers], dtype=F64))
        err_e = rel_err(out["energy"], e0_sum + 3.0 * ref["energy"])
        err_f = rel_err(out["forces"], 2.5 * ref["forces"])
        print(f"units error energy {err_e:.2e} forces {err_f:.2e}")
        assert err_e < 1e-12 and err_f < 1e-12

    def test_float32(self):
        m64 = self.make()
        m32 = self.make(dtype=torch.float32)
        out32 = m32(self.batch([ethanol(), water()], dtype=torch.float32))
        out64 = m64(self.batch([ethanol(), water()]))
        assert out32["energy"].dtype == torch.float32 and out32["forces"].dtype == torch.float32
        err = max(rel_err(out32["energy"].double(), out64["energy"]),
                  rel_err(out32["forces"].double(), out64["forces"]))
        print(f"float32 vs float64 error {err:.2e}")
        assert err < 1e-3

    @pytest.mark.parametrize("mode", ["direct", "conservative"])
    def test_gradients_reach_parameters(self, mode):
        model = self.make(forces=mode).train()
        b = self.batch([ethanol(), water()])
        out = model(b)
        loss = out["energy"].pow(2).mean() + out["forces"].pow(2).sum(-1).mean()
        loss.backward()
        missing = [n for n, p in model.named_parameters()
                   if (p.grad is None or float(p.grad.abs().max()) < 1e-12)
                   and not any(s in n for s in self.unused_parameters)
                   and not (mode == "conservative" and "force" in n)]
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert not missing, f"parameters without gradient in {mode} mode: {missing}"

    # -------------------------------------------------------------------------------- batching etc.
    def test_batch_consistency(self):
        model = self.make()
        structures = [ethanol(), water(), rattled_rocksalt(), far_pair()]
        joint = model(self.batch(structures))
        alone = [model(self.batch([a])) for a in structures]
        err_e = rel_err(joint["energy"], torch.cat([o["energy"] for o in alone]))
        err_f = rel_err(joint["forces"], torch.cat([o["forces"] for o in alone]))
        print(f"batch consistency error energy {err_e:.2e} forces {err_f:.2e}")
        assert err_e < self.invariance_tol and err_f < self.invariance_tol

    def test_smooth_at_cutoff(self):
        """Move one extra H atom radially through r = cutoff from one atom of ethanol in steps of h;
        the neighbour list changes between steps 1 and 2; a jump J there shows up as ~2J in the third
        difference E3 - 3E2 + 3E1 - E0, which is O(h^3) for a smooth energy."""
        model = self.make()
        base = ethanol()
        pos = base.positions
        h, c = 1e-3, self.cutoff
        for axis in np.eye(3).tolist() + (-np.eye(3)).tolist():
            u = np.asarray(axis)
            a = int(np.argmax(pos @ u))
            others = np.delete(pos, a, axis=0)
            d_others = np.linalg.norm(pos[a] + c * u - others, axis=1)
            if np.all(np.abs(d_others - c) > 50 * h):
                break
        energies, edges = [], []
        with torch.no_grad():
            for k in range(4):
                atoms = base + Atoms("H", positions=[pos[a] + (c + (k - 1.5) * h) * u])
                b = self.batch([atoms])
                energies.append(float(model(b)["energy"][0]))
                edges.append(b.n_edges)
        assert edges[0] == edges[1] > edges[2] == edges[3], edges  # exactly one crossing, mid-way
        e = energies
        jump = abs(e[3] - 3 * e[2] + 3 * e[1] - e[0])
        print(f"cutoff jump {jump:.2e} (|E| {abs(e[0]):.2e}, step {abs(e[1] - e[0]):.2e})")
        assert jump < self.cutoff_jump_tol * max(1.0, abs(e[0]))

    def test_isolated_atoms_give_reference_energy(self):
        """The isolated-atom reference is subtracted to rounding: it is computed in a batch of another shape
        (one atom per element), so GEMM blocking and SIMD paths may differ from the structure's batch and
        leave ~1e-15 of the O(1) normalised outputs. Not subtracting it would leave O(1) eV and eV/Å."""
        model = self.make()
        model.set_normalization(e0={6: -37.8, 8: -75.1, 11: -162.0}, energy_scale=2.0, force_scale=3.0)
        single = model(self.batch([Atoms("Na")]))
        assert torch.allclose(single["energy"], torch.tensor([-162.0], dtype=F64), rtol=0, atol=1e-12)
        assert single["forces"].abs().max() < 1e-10  # eV/Å, float64
        out = model(self.batch([Atoms("C"), far_pair(), Atoms("O", positions=[[1.0, 2.0, 3.0]])]))
        expected = torch.tensor([-37.8, -37.8 - 75.1, -75.1], dtype=F64)
        print(f"isolated-atom error {(out['energy'] - expected).abs().max():.2e}"
              f"  |F| {out['forces'].abs().max():.2e}")
        assert torch.allclose(out["energy"], expected, rtol=0, atol=1e-12)
        assert out["forces"].abs().max() < 1e-10  # eV/Å, float64

    def test_parameter_count_increases_with_width(self):
        counts = [count_parameters(self.make(width=w)) for w in self.widths]
        print(f"params at widths {self.widths}: {counts}")
        assert all(a < b for a, b in zip(counts, counts[1:]))

    def test_periodic_structure(self):
        """Extensivity through edge shifts: a 2x1x1 supercell has twice the energy and tiled forces;
        moving an atom by a lattice vector changes nothing."""
        model = self.make()
        prim = rattled_rocksalt()
        sup = prim.repeat((2, 1, 1))
        bp, bs = self.batch([prim]), self.batch([sup])
        assert torch.any(bp.edge_shift != 0)
        op, os_ = model(bp), model(bs)
        err_e = rel_err(os_["energy"], 2 * op["energy"])
        err_f = rel_err(os_["forces"], op["forces"].repeat(2, 1))
        shifted = prim.copy()
        shifted.positions[0] += prim.cell[1]
        ot = model(self.batch([shifted]))
        err_t = max(rel_err(ot["energy"], op["energy"]), rel_err(ot["forces"], op["forces"]))
        print(f"periodic errors: supercell energy {err_e:.2e} forces {err_f:.2e}, lattice shift {err_t:.2e}")
        assert max(err_e, err_f, err_t) < 1e-9

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    def test_cuda_matches_cpu(self):
        model = self.make()
        b = self.batch([ethanol(), water(), rattled_rocksalt()])
        ref = model(b)
        out = model.to("cuda")(b.to("cuda"))
        err = max(rel_err(out["energy"].cpu(), ref["energy"]), rel_err(out["forces"].cpu(), ref["forces"]))
        print(f"cuda vs cpu error {err:.2e}")
        assert err < 1e-9
