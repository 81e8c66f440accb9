"""Atomistic data: readers, the prepared format, neighbour lists, batches and token streaming."""

from .batch import Batch
from .loader import StreamingLoader
from .neighbors import neighbor_list
from .prepared import PreparedDataset, default_dataset_path, open_dataset, write_prepared
from .readers import read_structures
from .structure import Structure

__all__ = ["Batch", "PreparedDataset", "StreamingLoader", "Structure", "default_dataset_path",
           "neighbor_list", "open_dataset", "read_structures", "write_prepared"]

