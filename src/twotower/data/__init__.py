"""Reading, validating and splitting the user's interaction log and tables."""

from .dataset import Dataset, IdVocab, build_dataset
from .schema import read_events, read_table

__all__ = ["Dataset", "IdVocab", "build_dataset", "read_events", "read_table"]
