"""Seeded train / validation / test splits.

When structures carry a molecule identity (``mol_id``) the split is made over molecules, so that every
conformer of a validation (or test) molecule is unseen in training. Without identities, or when there are
too few distinct molecules to give every requested split at least one, structures are split at random.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """ConfigError unless both fractions lie in [0, 1) and leave training something."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= f < 1.0):
            raise ConfigError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")


def make_splits(n_structures: int, mol_index: np.ndarray | None = None, *, val_fraction: float = 0.1,
                test_fraction: float = 0.0, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """Split ``range(n_structures)`` into train / val / test index arrays.

    Args:
        n_structures: number of structures.
        mol_index: ``(n_structures,)`` integer molecule label of each structure, or ``None``.
        val_fraction, test_fraction: target fractions of *structures* in the validation and test splits.
        seed: seed of the permutation.

    Returns:
        ``({"train": idx, "val": idx, "test": idx}, method)`` with sorted int64 indices and ``method`` either
        ``"by_molecule"`` or ``"random"``. Empty splits are returned as empty arrays.
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    wanted = [f for f in (val_fraction, test_fraction) if f > 0]
    if mol_index is not None and n_structures:
        mol_index = np.asarray(mol_index, dtype=np.int64)
        groups, inverse, counts = np.unique(mol_index, return_inverse=True, return_counts=True)
        # molecules are useful only when there are more of them than requested held-out splits + train
        if len(groups) > len(wanted) and len(groups) < n_structures:
            split = _split_groups(inverse, counts, val_fraction, test_fraction, rng)
            if split is not None:
                return split, "by_molecule"
    perm = rng.permutation(n_structures)
    n_val = int(round(val_fraction * n_structures))
    n_test = int(round(test_fraction * n_structures))
    if val_fraction > 0 and n_structures >= 2:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n_structures >= 3:
        n_test = max(n_test, 1)
    n_val = min(n_val, max(n_structures - 1, 0))
    n_test = min(n_test, max(n_structures - 1 - n_val, 0))
    val, test, train = perm[:n_val], perm[n_val:n_val + n_test], perm[n_val + n_test:]
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}, "random"


def _split_groups(inverse: np.ndarray, counts: np.ndarray, val_fraction: float, test_fraction: float,
                  rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    """Assign whole molecules to splits in a seeded order until each split holds its share of structures."""
    n = int(counts.sum())
    order = rng.permutation(len(counts))
    cum = np.cumsum(counts[order])

    def n_groups(fraction: float) -> int:  # leading molecules whose structure count best matches the target
        return int(np.argmin(np.abs(cum - fraction * n))) + 1

    k_val = max(n_groups(val_fraction), 1) if val_fraction > 0 else 0
    k_test = max(n_groups(val_fraction + test_fraction), k_val + 1) if test_fraction > 0 else k_val
    if k_test >= len(order):  # training must keep at least one molecule
        return None
    assignment = np.zeros(len(counts), dtype=np.int64)  # 0 train, 1 val, 2 test
    assignment[order[:k_val]] = 1
    assignment[order[k_val:k_test]] = 2
    per_structure = assignment[inverse]
    return {name: np.flatnonzero(per_structure == code).astype(np.int64)
            for code, name in enumerate(SPLIT_NAMES)}


def mol_labels(mol_ids: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Integer labels for molecule identities; a missing identity gets a label of its own.

    Returns ``(mol_index, names)`` where ``names[mol_index[i]]`` is the identity of structure ``i``
    (``""`` stands for a structure without identity, each of which forms its own group).
    """
    names: list[str] = []
    lookup: dict[str, int] = {}
    out = np.empty(len(mol_ids), dtype=np.int64)
    for i, m in enumerate(mol_ids):
        if m is None:
            out[i] = len(names)
            names.append("")
            continue
        key = str(m)
        if key not in lookup:
            lookup[key] = len(names)
            names.append(key)
        out[i] = lookup[key]
    return out, names
