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
from itertools import repeat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np
import pandas as pd

from ..data.event_columns import Events, column
from ..errors import InputError
from .definitions import DAY, Columns, FeatureDefinitions, FeatureSource
from .event_log import beyond
from .offline import EVENT_COLUMNS, REQUEST_COLUMNS, _require

SCHEMA = """
CREATE TABLE IF NOT EXISTS item_recent (item_id TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS item_recent_by_item ON item_recent (item_id, ts);
CREATE INDEX IF NOT EXISTS item_recent_by_time ON item_recent (ts);
CREATE TABLE IF NOT EXISTS item_totals (item_id TEXT PRIMARY KEY, n INTEGER NOT NULL, first_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS user_totals (user_id TEXT PRIMARY KEY, n INTEGER NOT NULL, w REAL NOT NULL,
                                        last_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pair_totals (user_id TEXT NOT NULL, item_id TEXT NOT NULL, n INTEGER NOT NULL,
                                        PRIMARY KEY (user_id, item_id));
CREATE TABLE IF NOT EXISTS applied_log (log TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changed (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, item_id TEXT);
"""
CHANGES_KEPT = 100_000     # the latest changed (user, item) rows kept for other connections' near caches


class OnlineStore(FeatureSource, Protocol):
    """Where serving reads the latest feature values and new events are applied: SQLite or Redis."""

    def ingest(self, events: Events, position: int | None = None, log: str = "") -> int:
        """Apply events (a frame or numpy columns: user_id, item_id, timestamp, weight) in one transaction;
        returns the events used. With `position` (the batch's last position in the event log `log`), rows
        whose `seq` that log's recorded position already covers are skipped in the same transaction, so a
        batch applied twice (two readers of one log catching up at once) counts once."""

    def applied(self, log: str = "") -> int:
        """The position in the event log `log` of the last applied batch (0: none)."""

    def clear(self) -> None:
        """Forget every value (before a full reload)."""

    def close(self) -> None:
        """Release the connection."""


def _request_times(requests: Mapping[str, np.ndarray]) -> np.ndarray:
    """The requests' timestamps; a clear error for a missing column or no request."""
    _require(requests, REQUEST_COLUMNS, "requests")
    times = np.asarray(requests["timestamp"], dtype=np.float64)
    if len(times) == 0:
        raise InputError("requests", "no requests", "give at least one (user_id, item_id, timestamp)")
    return times


def _request_columns(requests: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user ids, item ids as str, timestamps) of the requests; a clear error for a missing column or none."""
    times = _request_times(requests)
    return np.asarray(requests["user_id"]).astype(str), np.asarray(requests["item_id"]).astype(str), times


def _distinct_ids(column) -> tuple[np.ndarray, list[str]]:
    """([n] each value's place among the distinct values, the distinct values as text)."""
    values = np.asarray(column, dtype=object).tolist()    # a missing id (None) is a value of its own
    place = {v: i for i, v in enumerate(dict.fromkeys(values))}        # in order of first appearance
    return np.fromiter(map(place.__getitem__, values), np.int64, len(values)), [str(v) for v in place]


def _zero_nan(values: np.ndarray) -> np.ndarray:
    """A missing total (NaN) as 0 (`np.nan_to_num` costs more than a request's few hundred rows)."""
    return np.where(np.isnan(values), 0.0, values)


def _chunks(values: list, size: int = 500):
    """Slices of at most `size` values: SQLite caps the parameters of one statement."""
    for lo in range(0, len(values), size):
        yield values[lo:lo + size]


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


def _raw_row(definitions: FeatureDefinitions, user: str, item: str, t: float, window_counts, item_n, first_ts,
             user_n, user_w, last_ts, pair_n) -> dict:
    """One request's raw values (`FeatureDefinitions.raw`); a missing total (None) is 0, a missing time NaN."""
    return {"user_id": user, "item_id": item, "timestamp": t,
            **{name: int(c) for name, c in zip(definitions.window_counts, window_counts)},
            "item_count_all": int(item_n or 0), "item_first_ts": np.nan if first_ts is None else first_ts,
            "user_events": int(user_n or 0), "user_weight": float(user_w or 0.0),
            "user_last_ts": np.nan if last_ts is None else last_ts, "user_item_events": int(pair_n or 0)}


NEAR_CACHE_SIZE = 2_000_000      # items (or users) whose values a store keeps in memory before starting over
NEAR_CACHE_PAIRS = 1_000_000     # user-item pairs the users' near cache holds at most (~100 MB): a batch over
                                 # every user reads each once, so its memory must not grow with their number


class _ItemCache:
    """Item values read for earlier requests, in arrays a request gathers at once: per slot the totals (events,
    first event time; NaN when none) and the times of the item's events within the longest window."""

    def __init__(self):
        self.slot: dict[str, int] = {}
        self.totals = np.zeros((1024, 2))
        self.recent_length = np.zeros(1024, np.int64)
        self.recent: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.slot)

    def slots(self, ids: list[str]) -> np.ndarray:
        """[n] each id's slot, -1 where it is not cached."""
        return np.fromiter(map(self.slot.get, ids, repeat(-1)), np.int64, len(ids))

    def add(self, ids: list[str], totals: np.ndarray, recent: list[np.ndarray]) -> None:
        start, end = len(self.recent), len(self.recent) + len(ids)
        if end > len(self.totals):                      # grow by doubling: adding stays cheap on average
            size = max(2 * len(self.totals), end)
            self.totals = np.resize(self.totals, (size, 2))
            self.recent_length = np.resize(self.recent_length, size)
        self.totals[start:end] = totals
        self.recent_length[start:end] = [len(r) for r in recent]
        self.recent.extend(recent)
        self.slot.update(zip(ids, range(start, end)))

    def drop(self, item: str) -> None:
        """Forget one item (its slot stays unused until the cache starts over)."""
        self.slot.pop(item, None)

    def wasteful(self) -> bool:
        return len(self.recent) > 2 * len(self.slot) + 4096


@dataclass(frozen=True)
class _UserValues:
    totals: tuple                # (events, weight, last event time); NaN when the user has none
    pairs: dict                  # item id -> the user's events with it


class SQLiteOnlineStore:
    """Latest values in one SQLite file; safe to read from several processes while one writes, and to share
    between threads (one statement at a time). Values a request read stay in a near cache in memory (a served
    request then costs no SQL for the items it shares with earlier ones). Every ingest also lists the users and
    items it changed (table `changed`, the latest `CHANGES_KEPT`): this store drops those of its own ingests at
    once, and those of other connections (a service's other workers) when it next reads, so their events cost
    each worker the values they changed, not its whole cache."""

    def __init__(self, path: str | Path, definitions: FeatureDefinitions | None = None):
        self.path = Path(path)
        self.definitions = definitions or FeatureDefinitions()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        # no sync per commit: the event log is the durable record, and this store keeps its place in the log
        # in the same transaction, so whatever an outage takes from here is applied again from the log
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)
        self._items = _ItemCache()                       # the near cache: values read for earlier requests
        self._users: dict[str, _UserValues] = {}
        self._cached_pairs = 0                          # pairs in self._users (an upper bound after drops)
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._seen_change = self._db.execute("SELECT coalesce(max(seq), 0) FROM changed").fetchone()[0]

    def applied(self, log: str = "") -> int:
        """The position in the event log `log` (`EventLog.log_id`) this store has applied up to (0: none)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM applied_log WHERE log = ?", (log,)).fetchone()
        return int(row[0]) if row else 0

    def ingest(self, events: Events, position: int | None = None, log: str = "") -> int:
        """Add events (a frame or numpy columns: user_id, item_id, timestamp, weight); weight-0 events change
        nothing. One transaction: a failure leaves the store as it was (not synced per commit: after an
        outage the event log, which is, gives back what the store lost, from the position recorded with it).
        `position` is the batch's last position in the event log `log`, recorded in the same transaction;
        rows of that log already applied (their `seq` at or below the recorded position) are skipped. Returns
        events used."""
        _require(events, EVENT_COLUMNS, "events")
        with self._lock, self._db:
            if position is not None:
                row = self._db.execute("SELECT seq FROM applied_log WHERE log = ?", (log,)).fetchone()
                done = int(row[0]) if row else 0
                if "seq" in events:
                    events = beyond(events, "seq", done)
                self._db.execute("INSERT INTO applied_log VALUES (?, ?) ON CONFLICT (log) DO UPDATE SET seq = "
                                 "max(seq, excluded.seq)", (log, position))
            weights = column(events, "weight", np.float64)
            positive = weights > 0                   # whole columns, then plain values: no per-column frames
            rows = list(zip(map(str, column(events, "user_id", object)[positive]),
                            map(str, column(events, "item_id", object)[positive]),
                            column(events, "timestamp", np.float64)[positive].tolist(),
                            weights[positive].tolist()))
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
            changed = list(dict.fromkeys((u, i) for u, i, _, _ in rows))
            self._db.executemany("INSERT INTO changed (user_id, item_id) VALUES (?, ?)", changed)
            self._db.execute("DELETE FROM changed WHERE seq <= (SELECT max(seq) FROM changed) - ?", (CHANGES_KEPT,))
            self._forget(changed)                         # read again from the store when next asked
        return len(rows)

    def features(self, requests: Mapping[str, np.ndarray]) -> Columns:
        """The features of requests (user_id, item_id, timestamp) made now, i.e. after every ingested event."""
        with self._lock:
            return self._features(requests)

    def _features(self, requests: Mapping[str, np.ndarray]) -> Columns:
        """Each item's and user's values come from the store's near cache (read from SQLite the first time a
        request needs them); the windows are counted in numpy."""
        times = _request_times(requests)
        defs = self.definitions
        self._forget_if_written_elsewhere()
        # distinct ids first, then made text: a request's hundreds of rows share a few users and items
        user_at, user_ids = _distinct_ids(requests["user_id"])
        item_at, item_ids = _distinct_ids(requests["item_id"])
        slots, user_values = self._cached_items(item_ids), self._cached_users(user_ids)
        cache = self._items
        lengths = cache.recent_length[slots]
        with_recent = np.flatnonzero(lengths)
        recent_times = np.concatenate([np.zeros(0)] + [cache.recent[slots[k]] for k in with_recent])
        recent_items = np.repeat(with_recent, lengths[with_recent])
        window = np.zeros((len(times), len(defs.windows_days)), np.int64)   # events in [t - days, t)
        for t in np.unique(times):
            now = times == t
            for j, days in enumerate(defs.windows_days):
                inside = (recent_times >= t - days * DAY) & (recent_times < t)
                window[now, j] = np.bincount(recent_items[inside], minlength=len(item_ids))[item_at[now]]
        pairs = np.zeros(len(times), np.int64)
        for code, values in enumerate(user_values):
            mine = np.flatnonzero(user_at == code)
            named = map(item_ids.__getitem__, item_at[mine].tolist())
            pairs[mine] = np.fromiter(map(values.pairs.get, named, repeat(0)), np.int64, len(mine))
        user_n, user_w, last_ts = np.array([v.totals for v in user_values], np.float64).reshape(-1, 3)[user_at].T
        item_n, first_ts = cache.totals[slots][item_at].T
        return defs.derive({"timestamp": times, **{name: window[:, j] for j, name in enumerate(defs.window_counts)},
                            "item_count_all": _zero_nan(item_n).astype(np.int64), "item_first_ts": first_ts,
                            "user_events": _zero_nan(user_n).astype(np.int64),
                            "user_weight": _zero_nan(user_w), "user_last_ts": last_ts,
                            "user_item_events": pairs})

    def _forget_if_written_elsewhere(self) -> None:
        """Drop from the near cache what other connections (another process's `ingest`) changed since the
        last look: SQLite's data_version changes only for other connections' commits, and `changed` lists what
        they changed. Everything is dropped when that list does not reach back to the last look (rows pruned,
        or a `clear`, which leaves a row of NULLs). Every process writing to one store must list its changes
        (this version or later): a commit without rows (weight-0 events only move `applied_log`) drops none."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        rows = self._db.execute("SELECT seq, user_id, item_id FROM changed WHERE seq > ? ORDER BY seq",
                                (self._seen_change,)).fetchall()
        if not rows:
            return
        if rows[0][0] != self._seen_change + 1 or any(u is None for _, u, _ in rows):
            self._items = _ItemCache()
            self._users.clear()
        else:
            self._forget([(u, i) for _, u, i in rows])
        self._seen_change = rows[-1][0]

    def _forget(self, changed: list[tuple[str, str]]) -> None:
        """Drop these (user, item) pairs' users and items from the near cache."""
        for user, item in changed:
            self._users.pop(user, None)
            self._items.drop(item)

    def _cached_items(self, ids: list[str]) -> np.ndarray:
        """[n] the items' slots in the near cache, read from SQLite for those not in it yet."""
        slots = self._items.slots(ids)
        missing = [ids[k] for k in np.flatnonzero(slots < 0)]
        if not missing:
            return slots
        if len(self._items) + len(missing) > NEAR_CACHE_SIZE or self._items.wasteful():
            self._items = _ItemCache()
        totals, recent = {}, defaultdict(list)
        for chunk in _chunks(missing):
            totals.update((item, (n, first_ts)) for item, n, first_ts in self._db.execute(
                f"SELECT item_id, n, first_ts FROM item_totals WHERE item_id IN ({_marks(chunk)})", chunk))
            for item, ts in self._db.execute(f"SELECT item_id, ts FROM item_recent WHERE item_id IN "
                                             f"({_marks(chunk)})", chunk):
                recent[item].append(ts)
        self._items.add(missing, np.array([totals.get(i, (np.nan, np.nan)) for i in missing], np.float64),
                        [np.array(recent.get(i, ()), np.float64) for i in missing])
        return self._items.slots(ids)

    def _cached_users(self, ids: list[str]) -> list["_UserValues"]:
        missing = [u for u in ids if u not in self._users]
        if missing:
            if len(self._users) + len(missing) > NEAR_CACHE_SIZE or self._cached_pairs > NEAR_CACHE_PAIRS:
                self._users.clear()
                self._cached_pairs = 0
            totals = {}
            for chunk in _chunks(missing):
                totals.update((user, (n, w, last_ts)) for user, n, w, last_ts in self._db.execute(
                    f"SELECT user_id, n, w, last_ts FROM user_totals WHERE user_id IN ({_marks(chunk)})", chunk))
            for user in missing:
                pairs = dict(self._db.execute("SELECT item_id, n FROM pair_totals WHERE user_id = ?", (user,)))
                self._users[user] = _UserValues(totals.get(user, (np.nan, np.nan, np.nan)), pairs)
                self._cached_pairs += len(pairs)
        return [self._users[u] for u in ids]

    def clear(self) -> None:
        """Delete every value (before a full reload)."""
        with self._lock, self._db:
            for table in ("item_recent", "item_totals", "user_totals", "pair_totals", "applied_log", "changed"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute("INSERT INTO changed (user_id, item_id) VALUES (NULL, NULL)")   # everything changed
            self._items = _ItemCache()
            self._users.clear()

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

    def ingest(self, events: Events, position: int | None = None, log: str = "") -> int:
        """Add events; checked before anything is sent, then applied in one transaction (with `position`, the
        batch's last position in the event log `log`; rows of that log already applied are skipped: the
        recorded position is watched, so a concurrent apply makes this one start again)."""
        import redis

        _require(events, EVENT_COLUMNS, "events")
        events = pd.DataFrame(events) if not isinstance(events, pd.DataFrame) else events
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
                    events = beyond(events, "seq", done)
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

    def features(self, requests: Mapping[str, np.ndarray]) -> Columns:
        """The features of requests made now (after every ingested event)."""
        k, defs = self._key, self.definitions
        keys = list(zip(*(column.tolist() for column in _request_columns(requests))))
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
