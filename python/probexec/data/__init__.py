"""Trace datasets for training proposal networks: the on-disk format (`dataset.py`), how traces
become dense per-type training rows (`layout.py`), and minibatching (`batches.py`)."""

from probexec.data.batches import minibatches
from probexec.data.dataset import DatasetError, DatasetWriter, ShardInfo, TraceDataset, WriteStats
from probexec.data.layout import ObservationBlock, Site, TypeGroup, TypeLayout, split_by_type
from probexec.data.sparse import SparseRows

__all__ = [
    "DatasetError",
    "DatasetWriter",
    "ObservationBlock",
    "ShardInfo",
    "Site",
    "SparseRows",
    "TraceDataset",
    "TypeGroup",
    "TypeLayout",
    "WriteStats",
    "minibatches",
    "split_by_type",
]
