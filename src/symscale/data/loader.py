"""Token-counted streaming of batches from a prepared dataset.

Training data ``D`` is counted in atoms ("tokens"). :class:`StreamingLoader` walks a split in a seeded
random order, ``batch_size`` structures at a time (the last batch of an epoch may be smaller), once by
default or ``epochs`` times with a fresh order each epoch. ``tokens_seen`` is the exact number of atoms
yielded so far; ``state_dict()`` / ``load_state_dict()`` let a resumed loader yield exactly the remaining
batches in the same order.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .batch import Batch
from .prepared import PreparedDataset, open_dataset
from .structure import Structure

_STATE_VERSION = 1


class StreamingLoader:
    """Iterate :class:`Batch`es over one split of a prepared dataset.

    Args:
        dataset: a :class:`PreparedDataset` or anything :func:`open_dataset` accepts.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: structures per batch (the study uses 64 molecules).
        cutoff: neighbour-list cutoff in Å.
        seed: seed of the subset choice and of every epoch's order.
        epochs: passes over the (subset of the) split; the order is reshuffled each epoch.
        max_neighbors: keep only the nearest ``max_neighbors`` neighbours of each atom.
        subset: use only a fixed seeded subset of the split: a fraction in ``(0, 1]`` (float) or a count
            of structures (int). ``subset=0.01, epochs=100`` is the study's multi-epoch ablation.
        dtype: floating dtype of the batches (default: torch's default dtype).
        shuffle: ``False`` keeps the split's stored order (useful for evaluation).

    Attributes:
        indices: the structure indices this loader walks (after ``subset``), in stored order.
        tokens_per_epoch: atoms in one pass; ``total_tokens = tokens_per_epoch * epochs``.
        tokens_seen, batches_seen, epoch: progress, restored by :meth:`load_state_dict`.
    """

    def __init__(self, dataset: PreparedDataset | str | os.PathLike | None, split: str = "train",
                 batch_size: int = 64, cutoff: float = 5.0, seed: int = 0, epochs: int = 1,
                 max_neighbors: int | None = None, subset: float | int | None = None,
                 dtype: torch.dtype | None = None, shuffle: bool = True):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        if cutoff <= 0:
            raise ConfigError(f"cutoff must be positive, got {cutoff}")
        if max_neighbors is not None and max_neighbors < 1:
            raise ConfigError(f"max_neighbors must be >= 1, got {max_neighbors}")
        self.dataset = open_dataset(dataset)
        self.split = split
        self.batch_size = int(batch_size)
        self.cutoff = float(cutoff)
        self.seed = int(seed)
        self.epochs = int(epochs)
        self.max_neighbors = max_neighbors
        self.subset = subset
        self.dtype = dtype
        self.shuffle = bool(shuffle)
        split_idx = self.dataset.split(split)
        if len(split_idx) == 0:
            raise DataError(f"{self.dataset.path}: split {split!r} is empty")
        self.indices = _choose_subset(split_idx, subset, self.seed)
        self._n_atoms = self.dataset.n_atoms
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its order), see epoch_order
        self.tokens_per_epoch = int(self._n_atoms[self.indices].sum())
        self.epoch = 0
        self.batches_seen = 0  # batches yielded in the current epoch
        self.tokens_seen = 0

    # ------------------------------------------------------------------ sizes
    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_epoch * self.epochs

    @property
    def structures_per_epoch(self) -> int:
        return int(len(self.indices))

    def __len__(self) -> int:
        """Batches still to come."""
        return self.batches_per_epoch * (self.epochs - self.epoch) - self.batches_seen

    @property
    def exhausted(self) -> bool:
        return self.epoch >= self.epochs

    # ------------------------------------------------------------------ order
    def epoch_order(self, epoch: int) -> np.ndarray:
        """The structure indices of ``epoch`` in the order they are yielded (deterministic in seed, epoch)."""
        if not self.shuffle:
            return self.indices
        if self._order is None or self._order[0] != int(epoch):  # drawn once per epoch, not once per batch
            rng = np.random.default_rng([self.seed, 1, int(epoch)])
            self._order = (int(epoch), self.indices[rng.permutation(len(self.indices))])
        return self._order[1]

    def batch_indices(self) -> Iterator[np.ndarray]:
        """Structure indices of the remaining batches, advancing the state like iteration does."""
        while self.epoch < self.epochs:
            order = self.epoch_order(self.epoch)
            start = self.batches_seen * self.batch_size
            if start >= len(order):
                self.epoch += 1
                self.batches_seen = 0
                continue
            chunk = order[start:start + self.batch_size]
            self.batches_seen += 1
            self.tokens_seen += int(self._n_atoms[chunk].sum())
            if self.batches_seen * self.batch_size >= len(order):
                self.epoch += 1
                self.batches_seen = 0
            yield chunk

    def __iter__(self) -> Iterator[Batch]:
        for chunk in self.batch_indices():
            yield self.make_batch(chunk)

    def make_batch(self, indices: np.ndarray) -> Batch:
        """The :class:`Batch` of the structures ``indices``.

        Molecular batches without ``max_neighbors`` take a fast path: the molecules are laid out side by
        side, more than ``cutoff`` apart, and one vesin call lists the neighbours of the whole batch; the
        edges are the same (in the same order, up to rounding for pairs within ~1e-12 Å of the cutoff)
        as :meth:`Batch.from_structures` gives, which is used
        for periodic structures and for ``max_neighbors``.
        """
        ds = self.dataset
        indices = np.asarray(indices, dtype=np.int64)
        atoms = ds.atom_indices(indices)  # one gather per array instead of per-structure reads
        numbers, positions, forces = ds.numbers[atoms], ds.positions[atoms], ds.forces[atoms]
        counts = self._n_atoms[indices]
        periodic = ds.pbc is not None and bool(np.any(ds.pbc[indices]))
        if periodic or self.max_neighbors is not None:
            bounds = np.concatenate([[0], np.cumsum(counts)])
            structures = [Structure(
                numbers=numbers[bounds[k]:bounds[k + 1]], positions=positions[bounds[k]:bounds[k + 1]],
                energy=float(ds.energy[i]), forces=forces[bounds[k]:bounds[k + 1]],
                cell=None if ds.cell is None else ds.cell[i],
                pbc=np.zeros(3, dtype=bool) if ds.pbc is None else ds.pbc[i]) for k, i in enumerate(indices)]
            return Batch.from_structures(structures, cutoff=self.cutoff, max_neighbors=self.max_neighbors,
                                         dtype=self.dtype)
        dtype = self.dtype or torch.get_default_dtype()
        pos = positions.astype(np.float64)
        batch = np.repeat(np.arange(len(indices), dtype=np.int64), counts)
        edge_index = _molecular_edges(pos, batch, counts, self.cutoff)
        return Batch(pos=torch.as_tensor(pos, dtype=dtype), numbers=torch.as_tensor(numbers, dtype=torch.long),
                     batch=torch.as_tensor(batch), edge_index=torch.as_tensor(edge_index),
                     edge_shift=torch.zeros((edge_index.shape[1], 3), dtype=dtype),
                     n_atoms=torch.as_tensor(counts, dtype=torch.long),
                     energy=torch.as_tensor(np.asarray(ds.energy[indices], dtype=np.float64), dtype=dtype),
                     forces=torch.as_tensor(forces.astype(np.float64), dtype=dtype), cell=None)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Progress and the settings that fix the order (checked on :meth:`load_state_dict`)."""
        return {"version": _STATE_VERSION, "epoch": self.epoch, "batches_seen": self.batches_seen,
                "tokens_seen": self.tokens_seen, "seed": self.seed, "batch_size": self.batch_size,
                "split": self.split, "n_indices": int(len(self.indices)), "epochs": self.epochs,
                "tokens_per_epoch": self.tokens_per_epoch, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next batch is the one after the last batch yielded before saving."""
        for key in ("seed", "batch_size", "split", "n_indices", "tokens_per_epoch", "shuffle"):
            if key in state and state[key] != self.state_dict()[key]:
                raise ConfigError(f"loader state: {key} is {state[key]!r} but this loader has "
                                  f"{self.state_dict()[key]!r}; the batch order would differ")
        self.epoch = int(state["epoch"])
        self.batches_seen = int(state["batches_seen"])
        self.tokens_seen = int(state["tokens_seen"])


def _choose_subset(indices: np.ndarray, subset: float | int | None, seed: int) -> np.ndarray:
    """A fixed seeded subset of ``indices`` (sorted), given as a fraction (float) or a count (int)."""
    if subset is None:
        return np.asarray(indices, dtype=np.int64)
    n = len(indices)
    if isinstance(subset, bool):
        raise ConfigError(f"subset must be a fraction or a count, got {subset!r}")
    if isinstance(subset, (int, np.integer)):
        if not 1 <= subset <= n:
            raise ConfigError(f"subset count must be in 1..{n}, got {subset}")
        k = int(subset)
    else:
        subset = float(subset)
        if not 0.0 < subset <= 1.0:
            raise ConfigError(f"subset fraction must be in (0, 1], got {subset}")
        k = max(1, int(round(subset * n)))
    rng = np.random.default_rng([seed, 0])
    return np.sort(np.asarray(indices, dtype=np.int64)[rng.choice(n, size=k, replace=False)])


def _molecular_edges(pos: np.ndarray, batch: np.ndarray, counts: np.ndarray, cutoff: float) -> np.ndarray:
    """Full neighbour list (``(2, E)``, sorted by centre then neighbour) of a batch of isolated molecules.

    Molecule ``k`` is translated along x so that the gap between consecutive bounding boxes exceeds
    ``cutoff``; a single vesin call then finds every intra-molecular pair (no pair spans two molecules).
    """
    from vesin import NeighborList

    n_mol = len(counts)
    lo = np.full((n_mol, 3), np.inf)
    hi = np.full((n_mol, 3), -np.inf)
    np.minimum.at(lo, batch, pos)
    np.maximum.at(hi, batch, pos)
    width = hi[:, 0] - lo[:, 0]
    start = np.concatenate([[0.0], np.cumsum(width + 2.0 * cutoff + 1.0)[:-1]])
    shifted = pos.copy()
    shifted[:, 0] += (start - lo[:, 0])[batch]
    shifted[:, 1:] -= lo[batch, 1:]
    i, j = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=shifted, box=np.zeros((3, 3)), periodic=False, quantities="ij")
    i, j = i.astype(np.int64), j.astype(np.int64)
    same = batch[i] == batch[j]  # guaranteed by the gaps; kept as a cheap safety net
    i, j = i[same], j[same]
    order = np.lexsort((j, i))
    return np.stack([i[order], j[order]])

