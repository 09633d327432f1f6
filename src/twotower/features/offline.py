"""The offline store: events in Parquet, features for many requests at once with DuckDB, as of each
request's own timestamp.

Point-in-time correctness comes from running counts: for each item (user, user-item pair) the number of
positive events up to each distinct timestamp, then an `ASOF JOIN` that takes the last count strictly before
the request time. A window [t - w, t) is the difference of two such lookups. Nothing at or after t is read.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..atomic import atomic_path
from ..errors import InputError
from .definitions import DAY, Columns, FeatureDefinitions, _tag

EVENTS = "events.parquet"
EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "weight")
REQUEST_COLUMNS = ("user_id", "item_id", "timestamp")


class OfflineStore:
    """A folder of Parquet files (the event log) and the SQL that turns it into feature rows."""

    def __init__(self, folder: str | Path, definitions: FeatureDefinitions | None = None):
        self.folder = Path(folder)
        self.definitions = definitions or FeatureDefinitions()
        self._counted: duckdb.DuckDBPyConnection | None = None     # running counts kept by `prepared`

    @property
    def events_path(self) -> Path:
        return self.folder / EVENTS

    def write_events(self, events: pd.DataFrame) -> None:
        """Replace the stored log (user_id, item_id, timestamp in unix seconds, weight); written atomically."""
        _require(events, EVENT_COLUMNS, "events")
        frame = pd.DataFrame({
            "user_id": events["user_id"].astype(str), "item_id": events["item_id"].astype(str),
            "timestamp": events["timestamp"].astype("float64"), "weight": events["weight"].astype("float64"),
        })
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.events_path) as tmp:
            frame.to_parquet(tmp, index=False)

    @contextmanager
    def prepared(self) -> Iterator["OfflineStore"]:
        """The store with its running counts computed once for every `features` call in the block (a batch
        job's chunks of requests), instead of once per call; the log is read as of entering it."""
        self._counted = self._count()
        try:
            yield self
        finally:
            self._counted.close()
            self._counted = None

    def features(self, requests: Mapping[str, np.ndarray]) -> Columns:
        """The features of each request (columns user_id, item_id, timestamp), in the requests' order, computed
        only from events strictly before each request's timestamp."""
        _require(requests, REQUEST_COLUMNS, "requests")
        ts = np.asarray(requests["timestamp"], dtype=np.float64)
        req = pd.DataFrame({"rid": np.arange(len(ts)), "user_id": np.asarray(requests["user_id"]).astype(str),
                            "item_id": np.asarray(requests["item_id"]).astype(str), "ts": ts})
        con = self._counted or self._count()
        try:
            con.register("req", req)
            out = con.execute(self._sql()).df()
            con.unregister("req")
        finally:
            if con is not self._counted:
                con.close()
        raw = out.sort_values("rid").drop(columns="rid").reset_index(drop=True)
        return self.definitions.derive(raw)

    def _count(self) -> duckdb.DuckDBPyConnection:
        """A connection holding the stored log and its running counts (`_running_counts`)."""
        if not self.events_path.is_file():
            raise InputError(str(self.events_path), "no events in the offline store",
                             "write the event log first (OfflineStore.write_events)")
        con = duckdb.connect()
        try:
            # read by pyarrow, not DuckDB's read_parquet, which takes [ ] * ? in a path for a glob pattern
            con.register("stored", pq.read_table(self.events_path, columns=["user_id", "item_id", "timestamp",
                                                                            "weight"]))
            con.execute("CREATE VIEW ev AS SELECT user_id, item_id, timestamp AS ts, weight FROM stored "
                        "WHERE weight > 0")
            _running_counts(con)
        except BaseException:
            con.close()
            raise
        return con

    def _sql(self) -> str:
        windows = self.definitions.windows_days
        lookups, columns = [], []
        for i, days in enumerate(windows):
            lookups.append(f"ASOF LEFT JOIN item_cum w{i} ON w{i}.item_id = r.item_id "
                           f"AND w{i}.ts < r.ts - {days * DAY}")
            columns.append(f"coalesce(ic.n, 0) - coalesce(w{i}.n, 0) AS item_count_{_tag(days)}")
        return f"""
        SELECT r.rid, r.user_id, r.item_id, r.ts AS timestamp,
               {', '.join(columns)},
               coalesce(ic.n, 0) AS item_count_all,
               first.first_ts AS item_first_ts,
               coalesce(uc.n, 0) AS user_events,
               coalesce(uc.w, 0.0) AS user_weight,
               uc.ts AS user_last_ts,
               coalesce(pc.n, 0) AS user_item_events
        FROM req r
        ASOF LEFT JOIN item_cum ic ON ic.item_id = r.item_id AND ic.ts < r.ts
        {' '.join(lookups)}
        ASOF LEFT JOIN user_cum uc ON uc.user_id = r.user_id AND uc.ts < r.ts
        ASOF LEFT JOIN pair_cum pc ON pc.user_id = r.user_id AND pc.item_id = r.item_id AND pc.ts < r.ts
        LEFT JOIN (SELECT item_id, min(ts) AS first_ts FROM ev GROUP BY item_id) first
               ON first.item_id = r.item_id AND first.first_ts < r.ts
        """


def _running_counts(con: duckdb.DuckDBPyConnection) -> None:
    """Per item, user and user-item pair: positive events (and label weight) up to each distinct time."""
    for name, keys in (("item_cum", "item_id"), ("user_cum", "user_id"), ("pair_cum", "user_id, item_id")):
        con.execute(f"""
            CREATE TABLE {name} AS
            SELECT {keys}, ts,
                   sum(c) OVER (PARTITION BY {keys} ORDER BY ts) AS n,
                   sum(w) OVER (PARTITION BY {keys} ORDER BY ts) AS w
            FROM (SELECT {keys}, ts, count(*) AS c, sum(weight) AS w FROM ev GROUP BY {keys}, ts)""")


def _require(frame: Mapping[str, np.ndarray], columns: tuple[str, ...], what: str) -> None:
    """One clear error for columns a table (a frame or `Columns`) lacks."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise InputError(what, f"missing column(s) {missing}", f"give {what} with columns {list(columns)}")

