"""Atomistic data: readers, the prepared format, neighbour lists, batches and token streaming."""

from .batch import Batch
from .neighbors import neighbor_list
from .structure import Structure

__all__ = ["Batch", "Structure", "neighbor_list"]
