"""Symmetry without the architecture: rotation augmentation, the symmetry loss and frame averaging.

Conventions (shared by every function here):

* A rotation ``R`` acts on a Cartesian vector ``v`` (a column) as ``R v``; on the row-vector tensors of a
  :class:`~symscale.data.batch.Batch` this is ``v @ R.T``.
* Rotations are applied **about each structure's centre of mass** ``c`` (masses from :mod:`ase.data`):
  ``x' = c + (x - c) R^T``. The centre of mass is unchanged, so a translation-invariant model sees exactly
  a rotated copy; a model that reads absolute positions sees the study's centre-of-mass centring.
* Vectors without a base point (forces, periodic edge shifts, cell rows) are rotated as ``v @ R^T``.
  ``edge_index`` is unchanged: rotations preserve distances, so the neighbour list stays valid.

The study (Ngo & Ravanbakhsh 2025) enforces symmetry on the unconstrained MPNN either by nothing, by
augmentation or by a symmetry loss; frame averaging (Puny et al. 2022) is symscale's addition.
See ``docs/symmetry.md`` for the formulas and their cost in the compute count ``C``.
"""

from __future__ import annotations

import itertools
from typing import Mapping

import torch
from torch import nn

from ..data.batch import Batch
from ..models.layers import ForceFieldModel, scatter_sum

__all__ = ["random_rotations", "rotate_batch", "centres_of_mass", "tile_batch", "symmetry_loss",
           "FrameAveraging", "pca_frames"]


# ----------------------------------------------------------------------------------------- rotations
def random_rotations(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, 3, 3)`` proper rotations drawn uniformly (Haar measure on SO(3)).

    A Gaussian matrix is QR-factorised; multiplying the columns of ``Q`` by ``sign(diag(R))`` makes the
    factorisation unique and ``Q`` Haar-distributed on O(3) (Mezzadri 2007); flipping the sign of the
    first column where ``det Q = -1`` maps O(3) onto SO(3) and keeps the measure uniform.
    Draws happen on the CPU in float64 from ``generator``, so a seed gives the same rotations everywhere.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    g = torch.randn((n, 3, 3), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    d = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    d = torch.where(d == 0, torch.ones_like(d), d)
    q = q * d.unsqueeze(-2)
    det = torch.linalg.det(q)
    q[..., :, 0] = q[..., :, 0] * det.sign().unsqueeze(-1)
    return q.to(dtype=dtype, device=device)


def _masses(numbers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    from ase.data import atomic_masses

    table = torch.as_tensor(atomic_masses, dtype=dtype, device=numbers.device)
    return table[numbers]


def centres_of_mass(batch: Batch, pos: torch.Tensor | None = None) -> torch.Tensor:
    """``(S, 3)`` centre of mass of each structure (standard atomic masses, amu)."""
    pos = batch.pos if pos is None else pos
    m = _masses(batch.numbers, pos.dtype)
    total = scatter_sum(m, batch.batch, batch.n_structures)
    return scatter_sum(m.unsqueeze(-1) * pos, batch.batch, batch.n_structures) / total.unsqueeze(-1)


def rotate_batch(batch: Batch, R: torch.Tensor) -> Batch:
    """The batch with structure ``s`` rotated by ``R[s]`` about its centre of mass.

    Args:
        batch: ``S`` structures.
        R: ``(S, 3, 3)`` rotations (or reflections: nothing here assumes ``det R = 1``).

    Returns:
        A new :class:`Batch`: positions ``c + (x - c) R^T``, forces / edge shifts / cell rows ``v R^T``;
        numbers, edges, energies unchanged.
    """
    if R.shape != (batch.n_structures, 3, 3):
        raise ValueError(f"R must have shape ({batch.n_structures}, 3, 3), got {tuple(R.shape)}")
    R = R.to(dtype=batch.pos.dtype, device=batch.pos.device)
    Rt = R.transpose(-1, -2)
    com = centres_of_mass(batch)[batch.batch]
    rot_atoms = Rt[batch.batch]                                   # (n, 3, 3)
    pos = com + torch.einsum("ni,nij->nj", batch.pos - com, rot_atoms)
    centre = batch.batch[batch.edge_index[0]]
    shift = torch.einsum("ei,eij->ej", batch.edge_shift, Rt[centre])
    forces = None if batch.forces is None else torch.einsum("ni,nij->nj", batch.forces, rot_atoms)
    cell = None if batch.cell is None else batch.cell @ Rt
    return batch.replace(pos=pos, edge_shift=shift, forces=forces, cell=cell)


def tile_batch(batch: Batch, k: int) -> Batch:
    """``k`` copies of the batch concatenated into one batch of ``k * S`` structures.

    Copy ``m`` holds structures ``m * S ... (m + 1) * S - 1`` and atoms ``m * n ... (m + 1) * n - 1``,
    so per-copy results are recovered with ``.view(k, S)`` / ``.view(k, n, 3)``. Used to run several
    rotated or canonicalised copies through a model in one forward call.
    """
    n, s, e = batch.tokens, batch.n_structures, batch.n_edges
    dev = batch.pos.device
    atom_off = (torch.arange(k, device=dev) * n).repeat_interleave(e)
    struct_off = (torch.arange(k, device=dev) * s).repeat_interleave(n)

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat((k,) + (1,) * (t.dim() - 1))

    return Batch(pos=rep(batch.pos), numbers=rep(batch.numbers), batch=rep(batch.batch) + struct_off,
                 edge_index=batch.edge_index.repeat(1, k) + atom_off, edge_shift=rep(batch.edge_shift),
                 n_atoms=rep(batch.n_atoms), energy=rep(batch.energy), forces=rep(batch.forces),
                 cell=rep(batch.cell))


# ----------------------------------------------------------------------------------------- symmetry loss
def symmetry_loss(model: nn.Module, batch: Batch, n_rotations: int = 5,
                  generator: torch.Generator | None = None,
                  outputs: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
    """The study's symmetry loss: disagreement between ``f(R x)`` and ``R f(x)`` over random rotations.

    With ``M = n_rotations`` independent Haar rotations ``R_{m,s}`` per structure ``s`` (applied about the
    centre of mass by :func:`rotate_batch`), reference outputs ``E_s, F_i`` on the unrotated batch and
    outputs ``E^m_s, F^m_i`` on the rotated batches::

        L_sym = 1/M sum_m [ 1/S sum_s |E^m_s - E_s| / (n_s sigma_E)
                          + 1/n sum_i ||F^m_i - R_{m,s(i)} F_i||_2 / sigma_F ]

    i.e. the training loss's form (per-atom energy MAE + mean force-error L2 norm) with the model's own
    output on the unrotated input as the target; ``sigma_E`` (eV/atom) and ``sigma_F`` (eV/Å) are the
    model's ``energy_scale`` / ``force_scale`` buffers, so the loss is in normalised units and comparable
    with the data loss. The caller multiplies by ``lambda``. Gradients flow through both terms (no
    stop-gradient on the reference). Reference labels in ``batch`` are not used.

    Args:
        model: any :class:`ForceFieldModel` (or a wrapper with the same ``forward``).
        batch: the training batch.
        n_rotations: ``M`` (the study uses 5).
        generator: seeds the rotations.
        outputs: ``model(batch)`` if the caller already computed it for the data loss (its graph is
            reused); otherwise it is computed here.

    Returns:
        ``(loss, extra_forward_passes)``: the scalar loss and the number of forward passes over the
        batch this call made, for the compute count ``C``: ``M`` when ``outputs`` is given, ``M + 1``
        otherwise. The ``M`` rotated copies are evaluated in one call on a tiled batch (same FLOPs).
    """
    if n_rotations < 1:
        raise ValueError(f"n_rotations must be >= 1, got {n_rotations}")
    extra = n_rotations
    if outputs is None:
        outputs = model(batch)
        extra += 1
    M, S, n = n_rotations, batch.n_structures, batch.tokens
    R = random_rotations(M * S, generator, dtype=batch.pos.dtype, device=batch.pos.device)
    rotated = rotate_batch(tile_batch(batch, M), R)
    out_rot = model(rotated)
    e_rot = out_rot["energy"].view(M, S)
    f_rot = out_rot["forces"].view(M, n, 3)
    # R f(x): rotate the reference forces of every copy with that copy's rotation
    R_atoms = R.view(M, S, 3, 3)[:, batch.batch]                                # (M, n, 3, 3)
    f_ref = torch.einsum("nj,mnij->mni", outputs["forces"], R_atoms)
    sigma_e = _scale(model, "energy_scale", e_rot)
    sigma_f = _scale(model, "force_scale", e_rot)
    n_per = batch.n_atoms.to(e_rot.dtype)
    e_term = ((e_rot - outputs["energy"].unsqueeze(0)).abs() / n_per).mean() / sigma_e
    f_term = torch.linalg.vector_norm(f_rot - f_ref, dim=-1).mean() / sigma_f
    return e_term + f_term, extra


def _scale(model: nn.Module, name: str, like: torch.Tensor) -> torch.Tensor:
    value = getattr(model, name, None)
    if value is None:
        return like.new_tensor(1.0)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).detach()


# ----------------------------------------------------------------------------------------- frame averaging
def pca_frames(batch: Batch, proper: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA frames of every structure.

    The covariance ``C_s = 1/n_s sum_i (x_i - c_s)(x_i - c_s)^T`` about the centre of mass ``c_s`` has
    eigenvectors ``U_s`` (columns, ascending eigenvalues), each defined up to sign. The frame group is
    ``{U_s diag(d) : d in {+-1}^3}``: 8 orthogonal frames (O(3)), or with ``proper=True`` the 4 with
    ``det = +1`` (SO(3)). Rotating the structure by ``R`` maps this set onto ``{R Q}``, which is what
    makes frame averaging exact — provided the eigenvalues are distinct (see :class:`FrameAveraging`).

    Returns:
        ``frames`` ``(G, S, 3, 3)`` (columns are the frame axes), centres ``(S, 3)`` and the relative
        eigenvalue gap ``min_k (l_{k+1} - l_k) / max(l_3, tiny)`` per structure ``(S,)``.
    """
    com = centres_of_mass(batch)
    x = batch.pos - com[batch.batch]
    cov = scatter_sum(x.unsqueeze(-1) * x.unsqueeze(-2), batch.batch, batch.n_structures)
    cov = cov / batch.n_atoms.to(x.dtype).view(-1, 1, 1)
    evals, U = torch.linalg.eigh(cov)
    gaps = (evals[:, 1:] - evals[:, :-1]).min(dim=-1).values
    rel_gap = gaps / evals[:, -1].clamp_min(torch.finfo(x.dtype).tiny)
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=3)), dtype=x.dtype, device=x.device)
    frames = U.unsqueeze(0) * signs.view(8, 1, 1, 3)                 # (8, S, 3, 3): scale columns
    if proper:
        keep = torch.linalg.det(frames) > 0                           # (8, S); exactly 4 per structure
        frames = frames.transpose(0, 1)[keep.transpose(0, 1)].view(batch.n_structures, 4, 3, 3)
        frames = frames.transpose(0, 1).contiguous()
    return frames, com, rel_gap


class FrameAveraging(nn.Module):
    """Make any :class:`ForceFieldModel` E(3)- (or SE(3)-) symmetric by averaging over PCA frames.

    For each structure the frames ``Q_g`` of :func:`pca_frames` define canonical copies
    ``x~_g = (x - c) Q_g`` (edge shifts and cell rows ``v Q_g``). The wrapped model runs once on all
    ``G`` copies (one tiled batch) and::

        E(x) = 1/G sum_g E_inner(x~_g),        F_i(x) = 1/G sum_g F_inner,i(x~_g) Q_g^T

    Rotating (``proper=True``) or rotating/reflecting (default) the input permutes the frames, so ``E`` is
    invariant and ``F`` equivariant for *any* inner model; permutation equivariance and translation
    invariance (centre of mass) are kept.

    Degenerate covariance: when two eigenvalues coincide (symmetric tops, linear molecules, single atoms,
    highly symmetric molecules such as CH4 or benzene) the eigenvectors inside the degenerate subspace are
    arbitrary and the symmetrisation is only approximate; near-degeneracy also makes the frames (hence the
    output) change quickly with geometry. No perturbation is applied: ``last_min_gap`` records the
    smallest relative eigenvalue gap of the last batch so callers can check. Periodic structures are
    handled mechanically (cell and shifts rotate with the frame), but the frame of a wrapped cell is not
    translation invariant; frame averaging is meant for molecules.

    Forces are the average of the inner forces rotated back; for a conservative inner model this is not
    exactly ``-dE/dx`` of the averaged energy (the frames depend on ``x``), so ``force_mode`` is reported
    as ``"direct"``; the inner model's mode is in ``inner_force_mode``.

    Cost: ``G`` (8, or 4 with ``proper=True``) inner forward passes per evaluation; count ``C`` with
    ``n_frames`` times the inner model's ``kappa``.
    """

    def __init__(self, model: ForceFieldModel, proper: bool = False):
        super().__init__()
        self.model = model
        self.proper = bool(proper)
        self.n_frames = 4 if self.proper else 8
        self.last_min_gap: float | None = None

    # -- what callers read off a ForceFieldModel
    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    @property
    def width(self):
        return getattr(self.model, "width", None)

    @property
    def inner_force_mode(self) -> str:
        return self.model.force_mode

    @property
    def force_mode(self) -> str:
        return "direct"

    @property
    def e0(self) -> torch.Tensor:
        return self.model.e0

    @property
    def energy_scale(self) -> torch.Tensor:
        return self.model.energy_scale

    @property
    def force_scale(self) -> torch.Tensor:
        return self.model.force_scale

    def set_normalization(self, *args, **kwargs) -> None:
        """Forwarded to the wrapped model."""
        self.model.set_normalization(*args, **kwargs)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        frames, com, rel_gap = pca_frames(batch, proper=self.proper)
        G, S, n = self.n_frames, batch.n_structures, batch.tokens
        self.last_min_gap = float(rel_gap.min()) if S else None
        tiled = tile_batch(batch, G)
        Q = frames.reshape(G * S, 3, 3)                        # structure g*S + s -> frame g of s
        Q_atoms = Q[tiled.batch]
        x = (tiled.pos - com.repeat(G, 1)[tiled.batch])
        pos = torch.einsum("ni,nij->nj", x, Q_atoms)
        shift = torch.einsum("ei,eij->ej", tiled.edge_shift, Q[tiled.batch[tiled.edge_index[0]]])
        cell = None if tiled.cell is None else tiled.cell @ Q
        forces = None if tiled.forces is None else torch.einsum("ni,nij->nj", tiled.forces, Q_atoms)
        out = self.model(tiled.replace(pos=pos, edge_shift=shift, cell=cell, forces=forces))
        energy = out["energy"].view(G, S).mean(0)
        f_back = torch.einsum("nj,nij->ni", out["forces"], Q_atoms)  # f Q^T
        forces = f_back.view(G, n, 3).mean(0)
        atom_energy = out["atom_energy"].view(G, n).mean(0)
        return {"energy": energy, "forces": forces, "atom_energy": atom_energy}
