"""A batch of atomic graphs: the one input type every model takes.

A :class:`Batch` concatenates ``S`` structures with ``n`` atoms in total and ``E`` edges in total.
Edges follow the convention of :mod:`symscale.data.neighbors`: ``edge_index[0]`` is the centre ``i``,
``edge_index[1]`` the neighbour ``j`` and ``r_ij = pos[j] - pos[i] + edge_shift``. Edge vectors are
computed from ``pos`` on demand (:meth:`Batch.edge_vectors`) so that autograd reaches positions, which
conservative forces (-dE/dpos) need.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .neighbors import neighbor_list
from .structure import Structure

@dataclass
class Batch:
    """Concatenated structures.

    Attributes:
        pos: ``(n, 3)`` positions in Å.
        numbers: ``(n,)`` atomic numbers (int64).
        batch: ``(n,)`` index of the structure each atom belongs to (int64, sorted).
        edge_index: ``(2, E)`` centre / neighbour atom indices into the concatenated atoms (int64).
        edge_shift: ``(E, 3)`` Cartesian periodic shifts in Å (zeros for molecules).
        n_atoms: ``(S,)`` atoms per structure (int64).
        energy: ``(S,)`` reference energies in eV, or ``None``.
        forces: ``(n, 3)`` reference forces in eV/Å, or ``None``.
        cell: ``(S, 3, 3)`` cells in Å, or ``None`` when no structure is periodic.
    """

    pos: torch.Tensor
    numbers: torch.Tensor
    batch: torch.Tensor
    edge_index: torch.Tensor
    edge_shift: torch.Tensor
    n_atoms: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    cell: torch.Tensor | None = None

    # ------------------------------------------------------------------ derived quantities
    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def tokens(self) -> int:
        """Atoms in the batch: the unit ("token") in which training data D is counted."""
        return int(self.pos.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def edge_vectors(self, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``(E, 3)`` vectors ``r_ij = pos[j] - pos[i] + shift``; pass ``pos`` to differentiate through it."""
        pos = self.pos if pos is None else pos
        i, j = self.edge_index
        return pos[j] - pos[i] + self.edge_shift.to(pos.dtype)

    @property
    def edge_vec(self) -> torch.Tensor:
        return self.edge_vectors()

    # ------------------------------------------------------------------ conversions
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Batch":
        """A copy on ``device`` with floating tensors cast to ``dtype`` (integer tensors keep theirs)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            out[f.name] = v
        return Batch(**out)

    def replace(self, **changes) -> "Batch":
        """A shallow copy with some fields replaced (e.g. rotated positions and forces)."""
        return dataclasses.replace(self, **changes)

    def structure_slices(self) -> list[slice]:
        """Atom slices of each structure in the concatenation."""
        ends = torch.cumsum(self.n_atoms, 0).tolist()
        starts = [0] + ends[:-1]
        return [slice(s, e) for s, e in zip(starts, ends)]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_structures(cls, structures: Sequence[Structure], cutoff: float,
                        max_neighbors: int | None = None, dtype: torch.dtype | None = None,
                        ) -> "Batch":
        """Build a batch from :class:`Structure` records, computing neighbour lists with vesin."""
        dtype = dtype or torch.get_default_dtype()
        if len(structures) == 0:
            raise ValueError("cannot build a Batch from zero structures")
        pos, num, bidx, eidx, eshift, cells = [], [], [], [], [], []
        energies, forces = [], []
        offset = 0
        any_cell = any(s.cell is not None and bool(np.any(s.pbc)) for s in structures)
        for k, s in enumerate(structures):
            ei, sh = neighbor_list(s.positions, cutoff, s.cell, s.pbc, max_neighbors)
            pos.append(s.positions)
            num.append(s.numbers)
            bidx.append(np.full(s.n_atoms, k, dtype=np.int64))
            eidx.append(ei + offset)
            eshift.append(sh)
            cells.append(s.cell if s.cell is not None else np.zeros((3, 3)))
            energies.append(s.energy)
            forces.append(s.forces)
            offset += s.n_atoms
        has_e = all(e is not None for e in energies)
        has_f = all(f is not None for f in forces)
        return cls(
            pos=torch.as_tensor(np.concatenate(pos), dtype=dtype),
            numbers=torch.as_tensor(np.concatenate(num), dtype=torch.long),
            batch=torch.as_tensor(np.concatenate(bidx), dtype=torch.long),
            edge_index=torch.as_tensor(np.concatenate(eidx, axis=1), dtype=torch.long),
            edge_shift=torch.as_tensor(np.concatenate(eshift), dtype=dtype),
            n_atoms=torch.as_tensor([s.n_atoms for s in structures], dtype=torch.long),
            energy=torch.as_tensor(np.array(energies, dtype=np.float64), dtype=dtype) if has_e else None,
            forces=torch.as_tensor(np.concatenate(forces), dtype=dtype) if has_f else None,
            cell=torch.as_tensor(np.stack(cells), dtype=dtype) if any_cell else None,
        )

    @classmethod
    def from_atoms(cls, atoms_list: Iterable, cutoff: float, max_neighbors: int | None = None,
                   energy_key: str | None = None, forces_key: str | None = None,
                   dtype: torch.dtype | None = None) -> "Batch":
        """Build a batch from :class:`ase.Atoms`.

        Labels are found as the readers find them (:func:`symscale.data.readers.structure_from_atoms`):
        the given keys, else an attached calculator's results, else the common keys
        (``energy``/``REF_energy``, ``forces``/``REF_forces``). Unlabelled atoms give ``energy=None``.
        """
        from .readers import structure_from_atoms

        structures = [structure_from_atoms(a, energy_key=energy_key, forces_key=forces_key, index=k)
                      for k, a in enumerate(atoms_list)]
        return cls.from_structures(structures, cutoff, max_neighbors=max_neighbors, dtype=dtype)

