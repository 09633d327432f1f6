"""The online store: the latest feature values per item, user and user-item pair, updated as events arrive,
read at request time. Embedded default: SQLite (WAL, one transaction per ingested batch); Redis for users who
run one.

It keeps running totals plus each item's event times within the longest popularity window, so a request at
`now` gets the same raw values the offline store computes for `now`; `FeatureDefinitions.derive` turns both
into features.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from itertools import groupby
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from ..errors import InputError
from .definitions import DAY, FeatureDefinitions, FeatureSource
from .offline import EVENT_COLUMNS, REQUEST_COLUMNS, _require

SCHEMA = """
CREATE TABLE IF NOT EXISTS item_recent (item_id TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS item_recent_by_item ON item_recent (item_id, ts);
CREATE TABLE IF NOT EXISTS item_totals (item_id TEXT PRIMARY KEY, n INTEGER NOT NULL, first_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS user_totals (user_id TEXT PRIMARY KEY, n INTEGER NOT NULL, w REAL NOT NULL,
                                        last_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pair_totals (user_id TEXT NOT NULL, item_id TEXT NOT NULL, n INTEGER NOT NULL,
                                        PRIMARY KEY (user_id, item_id));
CREATE TABLE IF NOT EXISTS applied_log (log TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class OnlineStore(FeatureSource, Protocol):
    """Where serving reads the latest feature values and new events are applied: SQLite or Redis."""

    def ingest(self, events: pd.DataFrame, position: int | None = None, log: str = "") -> int:
        """Apply events (user_id, item_id, timestamp, weight) in one transaction; returns the events used.
        With `position` (the batch's last position in the event log `log`), rows whose `seq` that log's
        recorded position already covers are skipped in the same transaction, so a batch applied twice
        (two readers of one log catching up at once) counts once."""

    def applied(self, log: str = "") -> int:
        """The position in the event log `log` of the last applied batch (0: none)."""

    def clear(self) -> None:
        """Forget every value (before a full reload)."""

    def close(self) -> None:
        """Release the connection."""


def _request_keys(requests: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(user_id, item_id, timestamp) of each request; a clear error for a missing column or no request."""
    _require(requests, REQUEST_COLUMNS, "requests")
    if requests.empty:
        raise InputError("requests", "no requests", "give at least one (user_id, item_id, timestamp)")
    return list(zip(requests["user_id"].astype(str), requests["item_id"].astype(str),
                    requests["timestamp"].astype(float)))


def _chunks(values: list, size: int = 500):
    """Slices of at most `size` values: SQLite caps the parameters of one statement."""
    for lo in range(0, len(values), size):
        yield values[lo:lo + size]


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


def _columns(rows: list[tuple], width: int) -> list[np.ndarray]:
    """Stored tuples (None: no value) -> `width` float columns with NaN for None."""
    table = np.array(rows, dtype=np.float64).reshape(len(rows), width) if rows else np.zeros((0, width))
    return [table[:, j] for j in range(width)]


def _raw_row(definitions: FeatureDefinitions, user: str, item: str, t: float, window_counts, item_n, first_ts,
             user_n, user_w, last_ts, pair_n) -> dict:
    """One request's raw values (`FeatureDefinitions.raw`); a missing total (None) is 0, a missing time NaN."""
    return {"user_id": user, "item_id": item, "timestamp": t,
            **{name: int(c) for name, c in zip(definitions.window_counts, window_counts)},
            "item_count_all": int(item_n or 0), "item_first_ts": np.nan if first_ts is None else first_ts,
            "user_events": int(user_n or 0), "user_weight": float(user_w or 0.0),
            "user_last_ts": np.nan if last_ts is None else last_ts, "user_item_events": int(pair_n or 0)}


class SQLiteOnlineStore:
    """Latest values in one SQLite file; safe to read from several processes while one writes, and to share
    between threads (one statement at a time)."""

    def __init__(self, path: str | Path, definitions: FeatureDefinitions | None = None):
        self.path = Path(path)
        self.definitions = definitions or FeatureDefinitions()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)

    def applied(self, log: str = "") -> int:
        """The position in the event log `log` (`EventLog.log_id`) this store has applied up to (0: none)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM applied_log WHERE log = ?", (log,)).fetchone()
        return int(row[0]) if row else 0

    def ingest(self, events: pd.DataFrame, position: int | None = None, log: str = "") -> int:
        """Add events (user_id, item_id, timestamp, weight); weight-0 events change nothing. One transaction:
        when this returns the batch is durable, and a failure leaves the store as it was. `position` is the
        batch's last position in the event log `log`, recorded in the same transaction; rows of that log
        already applied (their `seq` at or below the recorded position) are skipped. Returns events used."""
        _require(events, EVENT_COLUMNS, "events")
        with self._lock, self._db:
            if position is not None:
                row = self._db.execute("SELECT seq FROM applied_log WHERE log = ?", (log,)).fetchone()
                done = int(row[0]) if row else 0
                if "seq" in events.columns:
                    events = events[events["seq"].to_numpy() > done]
                self._db.execute("INSERT INTO applied_log VALUES (?, ?) ON CONFLICT (log) DO UPDATE SET seq = "
                                 "max(seq, excluded.seq)", (log, position))
            ev = events[events["weight"].astype(float) > 0]
            rows = list(zip(ev["user_id"].astype(str), ev["item_id"].astype(str), ev["timestamp"].astype(float),
                            ev["weight"].astype(float)))
            if not rows:
                return 0
            horizon = max(r[2] for r in rows) - max(self.definitions.windows_days) * DAY
            self._db.executemany("INSERT INTO item_recent VALUES (?, ?)", [(i, t) for _, i, t, _ in rows])
            self._db.executemany(
                "INSERT INTO item_totals VALUES (?, 1, ?) ON CONFLICT (item_id) DO UPDATE "
                "SET n = n + 1, first_ts = min(first_ts, excluded.first_ts)", [(i, t) for _, i, t, _ in rows])
            self._db.executemany(
                "INSERT INTO user_totals VALUES (?, 1, ?, ?) ON CONFLICT (user_id) DO UPDATE "
                "SET n = n + 1, w = w + excluded.w, last_ts = max(last_ts, excluded.last_ts)",
                [(u, w, t) for u, _, t, w in rows])
            self._db.executemany(
                "INSERT INTO pair_totals VALUES (?, ?, 1) ON CONFLICT (user_id, item_id) DO UPDATE SET n = n + 1",
                [(u, i) for u, i, _, _ in rows])
            self._db.execute("DELETE FROM item_recent WHERE ts < ?", (horizon,))
        return len(rows)

    def features(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Feature rows for requests (user_id, item_id, timestamp) made now, i.e. after every ingested event."""
        with self._lock:
            return self._features(requests)

    def _features(self, requests: pd.DataFrame) -> pd.DataFrame:
        """A few set queries per batch (per chunk of ids, and per user for the pair counts), not one per row:
        a request's 200 candidates cost one round of queries."""
        keys = _request_keys(requests)
        defs, widest = self.definitions, max(self.definitions.windows_days) * DAY
        users = sorted({u for u, _, _ in keys})
        user_rows = {r[0]: r[1:] for chunk in _chunks(users) for r in self._db.execute(
            f"SELECT user_id, n, w, last_ts FROM user_totals WHERE user_id IN ({_marks(chunk)})", chunk)}
        items = sorted({i for _, i, _ in keys})
        totals = {r[0]: r[1:] for chunk in _chunks(items) for r in self._db.execute(
            f"SELECT item_id, n, first_ts FROM item_totals WHERE item_id IN ({_marks(chunk)})", chunk)}
        items_at, items_of = defaultdict(set), defaultdict(set)     # time -> items; user -> items
        for u, i, t in keys:
            items_at[t].add(i)
            items_of[u].add(i)
        times = {}                                    # item -> its recent event times, sorted
        first, last = min(items_at) - widest, max(items_at)
        for chunk in _chunks(items):
            rows = self._db.execute(f"SELECT item_id, ts FROM item_recent WHERE item_id IN ({_marks(chunk)}) "
                                    "AND ts >= ? AND ts < ? ORDER BY item_id, ts", [*chunk, first, last]).fetchall()
            for item, group in groupby(rows, key=lambda r: r[0]):
                times[item] = np.array([ts for _, ts in group])
        counts = {}                                   # (item, time) -> counts per window: ts in [t - days, t)
        for t, at_t in items_at.items():
            for item in at_t & times.keys():
                ts = times[item]
                end = np.searchsorted(ts, t, "left")
                counts[item, t] = [int(end - np.searchsorted(ts, t - days * DAY, "left")) for days in defs.windows_days]
        pairs = {}
        for user, mine in items_of.items():
            for chunk in _chunks(sorted(mine)):
                pairs.update(((user, r[0]), r[1]) for r in self._db.execute(
                    f"SELECT item_id, n FROM pair_totals WHERE user_id = ? AND item_id IN ({_marks(chunk)})",
                    [user, *chunk]))
        zeros, none2, none3 = [0] * len(defs.windows_days), (None, None), (None, None, None)
        window = np.array([counts.get((i, t), zeros) for _, i, t in keys], dtype=np.int64).reshape(len(keys), -1)
        item_n, first_ts = _columns([totals.get(i, none2) for _, i, _ in keys], 2)
        user_n, user_w, last_ts = _columns([user_rows.get(u, none3) for u, _, _ in keys], 3)
        raw = pd.DataFrame({"user_id": [u for u, _, _ in keys], "item_id": [i for _, i, _ in keys],
                            "timestamp": np.array([t for _, _, t in keys], np.float64),
                            **{name: window[:, j] for j, name in enumerate(defs.window_counts)},
                            "item_count_all": np.nan_to_num(item_n).astype(np.int64), "item_first_ts": first_ts,
                            "user_events": np.nan_to_num(user_n).astype(np.int64),
                            "user_weight": np.nan_to_num(user_w), "user_last_ts": last_ts,
                            "user_item_events": np.array([pairs.get((u, i)) or 0 for u, i, _ in keys], np.int64)})
        return defs.derive(raw)

    def clear(self) -> None:
        """Delete every value (before a full reload)."""
        with self._lock, self._db:
            for table in ("item_recent", "item_totals", "user_totals", "pair_totals", "applied_log"):
                self._db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisOnlineStore:
    """The same latest values in Redis, for users who run one (`url`, e.g. unix:///run/redis.sock or
    redis://localhost:6379/0). Each batch is one MULTI/EXEC transaction; with the server's append-only file
    on, an acknowledged batch survives a restart. Keys live under `prefix`."""

    def __init__(self, url: str, definitions: FeatureDefinitions | None = None, prefix: str = "twotower"):
        import redis

        self.definitions = definitions or FeatureDefinitions()
        self.prefix = prefix
        try:
            self._r = redis.Redis.from_url(url, decode_responses=True)
        except ValueError as exc:
            raise InputError(url, f"is not a Redis URL ({exc})",
                             "use redis://HOST:PORT/DB or unix:///path/to/redis.sock") from exc
        try:
            self._r.ping()
        except redis.ConnectionError as exc:
            raise InputError(url, f"cannot reach Redis ({exc})", "start redis-server or correct the URL") from exc

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def applied(self, log: str = "") -> int:
        """The position in the event log `log` (`EventLog.log_id`) this store has applied up to (0: none)."""
        return int(self._r.hget(self._key("applied"), log) or 0)

    def ingest(self, events: pd.DataFrame, position: int | None = None, log: str = "") -> int:
        """Add events; checked before anything is sent, then applied in one transaction (with `position`, the
        batch's last position in the event log `log`; rows of that log already applied are skipped: the
        recorded position is watched, so a concurrent apply makes this one start again)."""
        import redis

        _require(events, EVENT_COLUMNS, "events")
        times, weights = events["timestamp"].astype(float).to_numpy(), events["weight"].astype(float).to_numpy()
        if not (np.isfinite(times).all() and np.isfinite(weights).all()):
            raise InputError("events", "a timestamp or weight is not a finite number", "fix or drop those rows")
        while True:
            try:
                return self._ingest(events, position, log)
            except redis.WatchError:
                continue

    def _ingest(self, events: pd.DataFrame, position: int | None, log: str) -> int:
        k = self._key
        with self._r.pipeline(transaction=True) as tx:
            if position is not None:
                tx.watch(k("applied"))
                done = int(tx.hget(k("applied"), log) or 0)
                if "seq" in events.columns:
                    events = events[events["seq"].to_numpy() > done]
                position = max(position, done)
            ev = events[events["weight"].astype(float) > 0]
            times, weights = ev["timestamp"].astype(float).to_numpy(), ev["weight"].astype(float).to_numpy()
            users, items = ev["user_id"].astype(str).tolist(), ev["item_id"].astype(str).tolist()
            first_seq = self._r.incrby(k("seq"), len(ev)) - len(ev)
            tx.multi()
            if position is not None:
                tx.hset(k("applied"), log, position)
            if ev.empty:
                tx.execute()
                return 0
            horizon = float(times.max()) - max(self.definitions.windows_days) * DAY
            for n, (u, i, t, w) in enumerate(zip(users, items, times.tolist(), weights.tolist())):
                tx.zadd(k("recent", i), {f"{first_seq + n}": t})
                tx.zincrby(k("item_n"), 1, i)
                tx.zadd(k("item_first"), {i: t}, lt=True)
                tx.zincrby(k("user_n"), 1, u)
                tx.zincrby(k("user_w"), w, u)
                tx.zadd(k("user_last"), {u: t}, gt=True)
                tx.hincrby(k("pair_n"), f"{u}\x1f{i}", 1)
            for i in set(items):
                tx.zremrangebyscore(k("recent", i), "-inf", f"({horizon}")
            tx.execute()
        return len(ev)

    def features(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Feature rows for requests made now (after every ingested event)."""
        k, defs = self._key, self.definitions
        keys = _request_keys(requests)
        with self._r.pipeline(transaction=False) as p:
            for u, i, t in keys:
                for days in defs.windows_days:
                    p.zcount(k("recent", i), t - days * DAY, f"({t}")
                p.zscore(k("item_n"), i)
                p.zscore(k("item_first"), i)
                p.zscore(k("user_n"), u)
                p.zscore(k("user_w"), u)
                p.zscore(k("user_last"), u)
                p.hget(k("pair_n"), f"{u}\x1f{i}")
            answers = p.execute()
        n_windows = len(defs.windows_days)
        width = n_windows + 6
        rows = [_raw_row(defs, u, i, t, answers[start:start + n_windows], *answers[start + n_windows:start + width])
                for (u, i, t), start in zip(keys, range(0, len(answers), width))]
        return defs.derive(pd.DataFrame(rows))

    def clear(self) -> None:
        """Delete every key under this store's prefix (before a full reload)."""
        batch = []
        for key in self._r.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._r.delete(*batch)
                batch = []
        if batch:
            self._r.delete(*batch)

    def close(self) -> None:
        self._r.close()
