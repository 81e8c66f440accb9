"""StreamingLoader: exact token counts, seeded orders, subsets, and resumption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_synth import emt_structures, periodic_structures

from symscale.data import Batch, PreparedDataset, StreamingLoader, write_prepared
from symscale.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    structs = emt_structures(n_conformers=6, seed=4)  # 48 structures of 3-9 atoms
    return PreparedDataset(write_prepared(structs, tmp_path_factory.mktemp("ld") / "ds", source="emt",
                                          val_fraction=0.25, seed=0))


def _orders(loader):
    return [tuple(c.tolist()) for c in loader.batch_indices()]


def test_one_epoch_visits_every_structure_once_with_exact_tokens(ds):
    loader = StreamingLoader(ds, batch_size=5, cutoff=3.0, seed=1)
    train = ds.split("train")
    seen, tokens = [], 0
    for b in loader:
        assert isinstance(b, Batch) and b.n_structures <= 5
        tokens += b.tokens
        seen.append(b)
    assert tokens == loader.tokens_seen == loader.tokens_per_epoch == int(ds.n_atoms[train].sum())
    assert loader.total_tokens == loader.tokens_per_epoch
    assert len(seen) == loader.batches_per_epoch == -(-len(train) // 5) and len(loader) == 0
    assert sum(b.n_structures for b in seen) == len(train)
    assert list(loader) == []  # single pass: exhausted


FIELDS = ("pos", "numbers", "batch", "edge_index", "edge_shift", "n_atoms", "energy", "forces", "cell")


@pytest.mark.parametrize("max_neighbors, dtype", [(None, torch.float64), (None, torch.float32), (3, torch.float32)])
def test_batches_equal_batch_from_structures(ds, max_neighbors, dtype):
    """The fast molecular path and the general path give exactly what Batch.from_structures gives."""
    kwargs = dict(batch_size=7, cutoff=3.0, seed=2, max_neighbors=max_neighbors)
    orders = list(StreamingLoader(ds, **kwargs).batch_indices())
    for idx, batch in zip(orders, StreamingLoader(ds, dtype=dtype, **kwargs)):
        ref = Batch.from_structures(ds.structures(idx), cutoff=3.0, dtype=dtype, max_neighbors=max_neighbors)
        for name in FIELDS:
            a, b = getattr(batch, name), getattr(ref, name)
            assert (a is None and b is None) or torch.equal(a, b), name
        assert batch.pos.dtype == dtype


def test_periodic_dataset_batches(tmp_path):
    structs = periodic_structures(n=5)
    ds = PreparedDataset(write_prepared(structs, tmp_path / "cu", source="cu", val_fraction=0.0))
    (batch,) = list(StreamingLoader(ds, batch_size=8, cutoff=4.0, shuffle=False))
    ref = Batch.from_structures(structs, cutoff=4.0)
    assert batch.cell is not None and torch.equal(batch.edge_index, ref.edge_index)
    torch.testing.assert_close(batch.edge_shift, ref.edge_shift)
    torch.testing.assert_close(batch.forces, ref.forces)


def test_epochs_reshuffle_and_seed_fixes_order(ds):
    a = StreamingLoader(ds, batch_size=6, seed=3, epochs=3)
    orders = _orders(a)
    per_epoch = a.batches_per_epoch
    epochs = [orders[k * per_epoch:(k + 1) * per_epoch] for k in range(3)]
    flat = [sorted(sum(e, ())) for e in epochs]
    assert flat[0] == flat[1] == flat[2] == ds.split("train").tolist()
    assert epochs[0] != epochs[1]
    assert a.tokens_seen == 3 * a.tokens_per_epoch == a.total_tokens
    assert _orders(StreamingLoader(ds, batch_size=6, seed=3, epochs=3)) == orders
    assert _orders(StreamingLoader(ds, batch_size=6, seed=4, epochs=3)) != orders


def test_fixed_subset_fraction_and_count(ds):
    train = ds.split("train")
    by_fraction = StreamingLoader(ds, subset=0.25, epochs=4, seed=5, batch_size=3)
    assert len(by_fraction.indices) == round(0.25 * len(train))
    assert set(by_fraction.indices) <= set(train.tolist())
    seen = set(sum(_orders(by_fraction), ()))
    assert seen == set(by_fraction.indices.tolist())  # the same subset every epoch
    assert by_fraction.tokens_seen == 4 * int(ds.n_atoms[by_fraction.indices].sum())
    by_count = StreamingLoader(ds, subset=7, seed=5)
    assert len(by_count.indices) == 7
    assert np.array_equal(StreamingLoader(ds, subset=7, seed=5).indices, by_count.indices)
    with pytest.raises(ConfigError, match="subset"):
        StreamingLoader(ds, subset=1.5)
    with pytest.raises(ConfigError, match="subset"):
        StreamingLoader(ds, subset=10_000)


@pytest.mark.parametrize("stop", [1, 4, 7, 13])
def test_resume_yields_exactly_the_remaining_batches(ds, stop):
    kwargs = dict(batch_size=4, seed=6, epochs=2, cutoff=3.0)
    full = StreamingLoader(ds, **kwargs)
    reference = list(full)
    first = StreamingLoader(ds, **kwargs)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    state = first.state_dict()
    assert state["tokens_seen"] == sum(b.tokens for b in head)
    resumed = StreamingLoader(ds, **kwargs)
    resumed.load_state_dict(state)
    assert len(resumed) == len(reference) - stop
    rest = list(resumed)
    assert len(head) + len(rest) == len(reference)
    for got, want in zip(head + rest, reference):
        assert torch.equal(got.pos, want.pos) and torch.equal(got.edge_index, want.edge_index)
    assert resumed.tokens_seen == full.tokens_seen == full.total_tokens
    with pytest.raises(ConfigError, match="seed"):
        StreamingLoader(ds, **{**kwargs, "seed": 7}).load_state_dict(state)


def test_validation_split_and_errors(ds, tmp_path):
    val = StreamingLoader(ds, split="val", shuffle=False, batch_size=100)
    (batch,) = list(val)
    assert batch.n_structures == len(ds.split("val"))
    assert torch.equal(batch.n_atoms, torch.as_tensor(ds.n_atoms[ds.split("val")]))
    with pytest.raises(DataError, match="split 'test' is empty"):
        StreamingLoader(ds, split="test")
    with pytest.raises(ConfigError, match="batch_size"):
        StreamingLoader(ds, batch_size=0)


def test_max_neighbors_reaches_the_batch(ds):
    full = next(iter(StreamingLoader(ds, batch_size=8, cutoff=6.0, seed=0)))
    capped = next(iter(StreamingLoader(ds, batch_size=8, cutoff=6.0, seed=0, max_neighbors=2)))
    assert capped.n_edges < full.n_edges
    assert torch.bincount(capped.edge_index[0]).max() <= 2
