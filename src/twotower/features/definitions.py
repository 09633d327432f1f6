"""What the ranker sees about a (user, item, time) request, defined once for training rows and serving rows.

Every feature is computed from events strictly before the request time: an event at the same second or later
is never visible, so a training row knows only what a live request would have known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np

DAY = 86_400.0

Columns = dict[str, np.ndarray]
"""A table as named numpy columns of one length: what the request path passes between stages (a pandas frame
costs more to build than a request's whole ranking)."""


@dataclass(frozen=True)
class FeatureDefinitions:
    """Windows (in days) for item popularity; the trend compares the shortest with the longest."""

    windows_days: tuple[float, ...] = (1.0, 7.0, 30.0)

    @property
    def window_counts(self) -> list[str]:
        return [f"item_count_{_tag(w)}" for w in self.windows_days]

    @property
    def raw(self) -> list[str]:
        """What a store must give per request: counts and times, all strictly before the request."""
        return self.window_counts + ["item_count_all", "item_first_ts", "user_events", "user_weight",
                                     "user_last_ts", "user_item_events"]

    @property
    def names(self) -> list[str]:
        """The features the ranker reads."""
        return self.window_counts + ["item_count_all", "item_trend", "item_age_days", "user_events",
                                     "user_weight", "user_item_events", "user_gap_hours", "hour", "weekday"]

    def derive(self, raw: Mapping[str, np.ndarray]) -> Columns:
        """Raw store values (columns `raw`) + the request `timestamp` -> the features (`names`), one row per
        request. Offline and online rows both pass through here, so a formula cannot differ between training
        and serving."""
        def get(name: str) -> np.ndarray:
            return np.asarray(raw[name], dtype=np.float64)

        t = get("timestamp")
        short, long_ = min(self.windows_days), max(self.windows_days)
        days = np.floor(t / DAY)
        column = {c: np.asarray(raw[c]) for c in self.window_counts + ["item_count_all", "user_events",
                                                                        "user_weight", "user_item_events"]}
        column.update(
            item_trend=get(f"item_count_{_tag(short)}") * (long_ / short) / (get(f"item_count_{_tag(long_)}") + 1.0),
            item_age_days=(t - get("item_first_ts")) / DAY,
            user_gap_hours=(t - get("user_last_ts")) / 3600.0,
            hour=((t - days * DAY) // 3600).astype(np.int64),          # UTC hour
            weekday=((days + 3) % 7).astype(np.int64),                 # Monday 0 (1970-01-01 was a Thursday)
        )
        return {name: column[name] for name in self.names}


class FeatureSource(Protocol):
    """A feature store as its readers see it: the offline store for training rows, an online store for
    live ones; both answer with `definitions.names` columns."""

    definitions: FeatureDefinitions

    def features(self, requests: Mapping[str, np.ndarray]) -> Columns:
        """The `definitions.names` columns, one row per request (columns user_id, item_id, timestamp: a frame
        or `Columns`), from events strictly before its time."""


def _tag(days: float) -> str:
    return f"{days:g}d"
