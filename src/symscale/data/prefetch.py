"""Batches built ahead in background processes, so the device never waits for the input pipeline.

:class:`Prefetcher` iterates the remaining batches of a :class:`~symscale.data.loader.StreamingLoader` --
the same batches, neighbour lists included, in the same order as iterating the loader itself -- built by
``workers`` background processes (a :class:`torch.utils.data.DataLoader` over :class:`_Shard`). Worker
``w`` of ``n`` builds the batches ``w, w + n, w + 2n, ...`` of the loader's remaining sequence, and the
DataLoader hands them out in sequence order, so the order (and every tensor) is exactly that of
``workers=0``. Each worker keeps ``prefetch`` batches ready. A batch travels as one byte buffer (its
tensors packed end to end, :func:`pack`), so it costs one shared-memory segment and one pinned copy rather
than one per tensor.

The loader's progress (``state_dict()``, what a checkpoint saves) follows the batches *consumed*, not those
built ahead: the main process advances the loader by one batch for each batch it yields, so a run resumed
from a checkpoint rebuilds whatever was prefetched but never trained on.

``pin_memory=True`` (a CUDA run) makes the DataLoader copy each batch into page-locked memory in a
background thread; :func:`to_device` then copies it to the GPU with ``non_blocking=True``, overlapping the
copy with computation. With ``workers=0`` the loader's own iteration is used (batches built in the training
process, not pinned), as before.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import torch

from .batch import Batch
from .loader import StreamingLoader


class _Shard(torch.utils.data.IterableDataset):
    """One DataLoader worker's share of a loader's remaining batches (see the module docstring).

    Pickles as the dataset's path plus the loader's settings and progress (never the memory-mapped
    arrays), so any multiprocessing start method works.
    """

    def __init__(self, loader: StreamingLoader):
        self.path = str(loader.dataset.path)
        self.options = {"split": loader.split, "batch_size": loader.batch_size, "cutoff": loader.cutoff,
                        "seed": loader.seed, "epochs": loader.epochs, "max_neighbors": loader.max_neighbors,
                        "subset": loader.subset, "dtype": loader.dtype, "shuffle": loader.shuffle}
        self.state = loader.state_dict()

    def __iter__(self) -> Iterator[dict]:
        from .prepared import PreparedDataset

        info = torch.utils.data.get_worker_info()
        n, w = (info.num_workers, info.id) if info is not None else (1, 0)
        walker = StreamingLoader(PreparedDataset(self.path), **self.options)
        walker.load_state_dict(self.state)
        for k, chunk in enumerate(walker.batch_indices()):
            if k % n == w:
                yield pack(walker.make_batch(chunk))


def pack(batch: Batch) -> dict:
    """``{"buffer": uint8 tensor, "layout": str}``: every tensor of ``batch`` in one buffer (each 8-byte
    aligned), and a JSON layout saying where; :func:`unpack` inverts it without copying."""
    parts, layout, offset = [], [], 0
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if v is None:
            layout.append([f.name, None])
            continue
        raw = v.contiguous().reshape(-1).view(torch.uint8)
        pad = -raw.numel() % 8
        parts += [raw, torch.zeros(pad, dtype=torch.uint8)] if pad else [raw]
        layout.append([f.name, [str(v.dtype).removeprefix("torch."), list(v.shape), offset, raw.numel()]])
        offset += raw.numel() + pad
    return {"buffer": torch.cat(parts), "layout": json.dumps(layout)}


def unpack(packed: dict) -> Batch:
    """The :class:`Batch` of a :func:`pack` result; its tensors are views of the buffer (pinned with it)."""
    buffer, out = packed["buffer"], {}
    for name, spec in json.loads(packed["layout"]):
        if spec is None:
            out[name] = None
            continue
        dtype, shape, offset, nbytes = spec
        out[name] = buffer[offset:offset + nbytes].view(getattr(torch, dtype)).view(shape)
    return Batch(**out)


class Prefetcher:
    """Iterate ``loader``'s remaining batches, built ahead by ``workers`` background processes.

    Args:
        loader: the loader whose batches to yield; its progress advances as batches are yielded.
        workers: background processes (``0``: iterate ``loader`` in this process).
        pin_memory: put batches in page-locked memory (for a fast, non-blocking copy to a GPU); only with
            ``workers > 0``.
        prefetch: batches each worker keeps ready.
    """

    def __init__(self, loader: StreamingLoader, workers: int = 0, pin_memory: bool = False, prefetch: int = 2):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.loader = loader
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory) and self.workers > 0
        self.prefetch = int(prefetch)

    def __iter__(self) -> Iterator[Batch]:
        if self.workers == 0:
            yield from self.loader
            return
        built = torch.utils.data.DataLoader(_Shard(self.loader), batch_size=None, num_workers=self.workers,
                                            pin_memory=self.pin_memory, prefetch_factor=self.prefetch)
        it = iter(built)  # the workers start from the loader's progress now
        chunks = self.loader.batch_indices()
        try:
            for packed in it:
                chunk = next(chunks)  # the loader's progress: one more batch consumed
                batch = unpack(packed)
                if batch.n_structures != len(chunk):  # cannot happen unless the data changed underneath
                    raise RuntimeError(f"prefetched batch of {batch.n_structures} structures where the loader "
                                       f"expected {len(chunk)}")
                yield batch
        finally:
            chunks.close()
            del it  # stops the worker processes


def to_device(batch: Batch, device: torch.device | str, dtype: torch.dtype | None = None,
              non_blocking: bool = False) -> Batch:
    """``batch`` on ``device`` with floating tensors cast to ``dtype``, as :meth:`Batch.to`;
    ``non_blocking=True`` lets a copy from pinned memory to a GPU run asynchronously."""
    out = {}
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None,
                     non_blocking=non_blocking)
        out[f.name] = v
    return Batch(**out)
