"""Events as named numpy columns: the form a served batch travels in from its check to the event log, the
online store and the served history. For a request of one event pandas' per-frame and per-column work cost
more than everything else the service does with it. Files are still validated as frames; the log reads back
as columns; the functions here read either form."""

from __future__ import annotations

from typing import Mapping, Union

import numpy as np
import pandas as pd

EventColumns = dict[str, np.ndarray]
Events = Union[pd.DataFrame, Mapping[str, np.ndarray]]


def rows_in(events: Events) -> int:
    """How many events (a frame's rows, or the length of the columns)."""
    if isinstance(events, pd.DataFrame):
        return len(events)
    return len(next(iter(events.values()))) if len(events) else 0


def column(events: Events, name: str, dtype=None) -> np.ndarray:
    """One column as a numpy array (of `dtype` when given)."""
    return np.asarray(events[name], dtype=dtype)


def where(events: Events, keep: np.ndarray) -> Events:
    """The events `keep` (a boolean mask) marks, in the form they came in."""
    if isinstance(events, pd.DataFrame):
        return events[keep]
    return {name: np.asarray(values)[keep] for name, values in events.items()}


def as_columns(frame: pd.DataFrame) -> EventColumns:
    """A frame's columns as numpy arrays (text and missing values as objects)."""
    return {name: frame[name].to_numpy() for name in frame.columns}


def concat_columns(batches: list[Events]) -> EventColumns:
    """Batches one after another; a column some batch lacks is missing (None) in its rows."""
    names = list(dict.fromkeys(name for batch in batches for name in batch.keys()))
    out = {}
    for name in names:
        parts = [column(b, name) if name in b else np.full(rows_in(b), None, dtype=object) for b in batches]
        out[name] = np.concatenate(parts) if all(p.dtype == parts[0].dtype for p in parts) else \
            np.concatenate([p.astype(object) for p in parts])
    return out
