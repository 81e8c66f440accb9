"""Batches built ahead in background processes: exactly the batches (neighbour lists included) and the order
of the loader itself, whatever the number of workers, across epochs and from a resumed state."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

from symscale.data.loader import StreamingLoader
from symscale.data.prefetch import Prefetcher, to_device


def fields(batch) -> dict:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


def assert_same_batches(got: list, ref: list) -> None:
    assert len(got) == len(ref)
    for k, (a, b) in enumerate(zip(got, ref)):
        fa, fb = fields(a), fields(b)
        for name in fa:
            if fb[name] is None:
                assert fa[name] is None, (k, name)
            else:  # the same computation on the same machine: identical
                assert fa[name].dtype == fb[name].dtype and torch.equal(fa[name], fb[name]), (k, name)


@pytest.mark.parametrize("options", [
    {"batch_size": 16, "subset": 480},                                    # molecular fast path
    {"batch_size": 7, "subset": 40, "epochs": 3},                         # epoch boundaries, reshuffled orders
    {"batch_size": 5, "subset": 30, "max_neighbors": 4, "epochs": 2},     # per-structure neighbour lists
])
def test_same_batches_and_progress_with_0_1_2_workers(options):
    ref_loader = StreamingLoader(None, "train", seed=3, **options)
    ref = list(ref_loader)
    for workers in (1, 2):
        loader = StreamingLoader(None, "train", seed=3, **options)
        assert_same_batches(list(Prefetcher(loader, workers)), ref)
        assert loader.state_dict() == ref_loader.state_dict() and loader.exhausted


def test_progress_follows_consumed_batches_and_resumes():
    """A checkpoint taken after k batches (with more built ahead) resumes with batch k + 1."""
    options = {"batch_size": 9, "subset": 60, "epochs": 2, "seed": 1}
    ref = list(StreamingLoader(None, "train", **options))
    ref_tokens = list(itertools.accumulate(b.tokens for b in ref))
    loader = StreamingLoader(None, "train", **options)
    it = iter(Prefetcher(loader, 2, prefetch=4))
    head = [next(it) for _ in range(5)]
    assert loader.tokens_seen == ref_tokens[4] and loader.batches_seen == 5
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint holds
    it.close()  # stops the workers; later batches were built but never consumed
    resumed = StreamingLoader(None, "train", **options)
    resumed.load_state_dict(state)
    tail = list(Prefetcher(resumed, 2))
    assert_same_batches(head + tail, ref)
    assert resumed.tokens_seen == ref_tokens[-1]


def test_pack_round_trip_with_cells_and_no_edges():
    import numpy as np

    from symscale.data import Structure
    from symscale.data.batch import Batch
    from symscale.data.prefetch import pack, unpack

    bulk = Structure(numbers=np.array([14, 14]), positions=np.array([[0.0, 0, 0], [1.3, 1.4, 1.2]]), energy=-1.0,
                     forces=np.zeros((2, 3)), cell=np.eye(3) * 2.7, pbc=np.ones(3, dtype=bool))
    lone = Structure(numbers=np.array([1]), positions=np.zeros((1, 3)), energy=-0.5, forces=np.zeros((1, 3)))
    for structures in ([bulk, lone], [lone]):
        batch = Batch.from_structures(structures, cutoff=3.0, dtype=torch.float64)
        packed = pack(batch)
        assert packed["buffer"].dtype == torch.uint8 and packed["buffer"].numel() % 8 == 0
        assert_same_batches([unpack(packed)], [batch])
    assert unpack(pack(batch)).n_edges == 0 and unpack(pack(batch)).cell is None


def test_to_device_matches_batch_to():
    batch = next(iter(StreamingLoader(None, "train", batch_size=3)))
    moved = to_device(batch, "cpu", torch.float64, non_blocking=True)
    assert_same_batches([moved], [batch.to("cpu", torch.float64)])
    assert moved.pos.dtype == torch.float64 and moved.numbers.dtype == torch.long


def test_prefetcher_rejects_bad_settings():
    loader = StreamingLoader(None, "train", batch_size=3)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        Prefetcher(loader, -1)
    with pytest.raises(ValueError, match="prefetch must be >= 1"):
        Prefetcher(loader, 1, prefetch=0)
    assert Prefetcher(loader, 0, pin_memory=True).pin_memory is False  # pinning needs a background worker


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches_reach_the_gpu():
    loader = StreamingLoader(None, "train", batch_size=8, subset=32)
    ref = list(StreamingLoader(None, "train", batch_size=8, subset=32))
    got = []
    for batch in Prefetcher(loader, 2, pin_memory=True):
        assert batch.pos.is_pinned() and batch.edge_index.is_pinned()
        got.append(to_device(batch, "cuda", non_blocking=True).to("cpu"))
    assert_same_batches(got, ref)


def test_training_with_loader_workers_gives_the_same_run(tmp_path):
    from symscale.train.run import run

    cfg = {"data": {"val_size": 16}, "batch_size": 8, "tokens": 600, "device": "cpu",
           "model": {"family": "mpnn", "width": 4, "options": {"num_layers": 1}}, "evaluation": {"points": 3}}
    rows = {}
    for workers in (0, 2):
        out = run({**cfg, "loader_workers": workers}, out=tmp_path / f"w{workers}")
        rows[workers] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert json.loads((out / "summary.json").read_text())["loader_workers"] == workers
    assert [(r["step"], r["tokens"]) for r in rows[2]] == [(r["step"], r["tokens"]) for r in rows[0]]
    for a, b in zip(rows[2], rows[0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
