"""The log of events ingested after training: appended durably before they are acknowledged, read back when a
model opens (its history and online store then hold them again), idempotent on the caller's `event_id`.

SQLite in WAL mode with `synchronous=FULL`: when `append` returns, the events are on disk. Each event gets a
position (`seq`) and each log an id (`log_id`); an online store records the last position it applied of
each log, so events acknowledged but not yet applied when a process died are applied on the next open, and
two logs feeding one store never mistake each other's positions.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.event_columns import EventColumns, Events, column, rows_in, where
from ..errors import InputError

LOG_FILE = "ingested.sqlite"
COLUMNS = ("seq", "event_id", "user_id", "item_id", "timestamp", "weight")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE,
                                   user_id TEXT NOT NULL, item_id TEXT NOT NULL, timestamp REAL NOT NULL,
                                   weight REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('log_id', lower(hex(randomblob(16))));
"""


class EventLog:
    """Append-only, durable, safe to share between threads (one writer at a time)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(SCHEMA)
            self.log_id = self._db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise InputError(str(self.path), f"the ingested-event log is damaged ({exc})",
                             "restore it from a copy, or move it away to start the log anew") from exc

    def append(self, events: Events) -> EventColumns:
        """Store validated events (a frame or numpy columns: user_id, item_id, timestamp, weight, optional
        event_id) in one transaction; returns those newly stored with their `seq`, as numpy columns (an
        `event_id` already in the log, or twice in the batch, is stored once)."""
        ids = events["event_id"] if "event_id" in events else [None] * rows_in(events)
        rows = [(None if pd.isna(e) else str(e), str(u), str(i), float(t), float(w)) for e, u, i, t, w in
                zip(ids, events["user_id"], events["item_id"], events["timestamp"], events["weight"])]
        stored = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cur = self._db.execute("INSERT OR IGNORE INTO events (event_id, user_id, item_id, timestamp, "
                                           "weight) VALUES (?, ?, ?, ?, ?)", row)
                    if cur.rowcount:
                        stored.append((cur.lastrowid, *row))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return _columns(stored)

    def written_elsewhere(self) -> bool:
        """True when another connection (another process) committed to the log since the last call: SQLite's
        data_version, a few microseconds."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            changed, self._data_version = version != self._data_version, version
        return changed

    def since(self, seq: int = 0) -> EventColumns:
        """Every stored event after position `seq`, in the order they were stored (numpy columns: a service's
        other workers read each event this way, and a frame per read costs more than the rest)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM events WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()
        return _columns(rows)

    def of_user(self, user_id: str) -> pd.DataFrame:
        """Every stored event of one user, in the order they were stored."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM events WHERE user_id = ? ORDER BY seq",
                                    (str(user_id),)).fetchall()
        return pd.DataFrame(_columns(rows))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def follows(rows: Events | None, position: int) -> bool:
    """True when `rows` (from `append`) are exactly the log's next positions after `position`: a reader that
    applied up to there can apply them without reading the log back."""
    if rows is None or not rows_in(rows):
        return False
    seq = column(rows, "seq")
    return bool(seq[0] == position + 1 and (np.diff(seq) == 1).all())


def beyond(rows: Events, name: str, bound: float) -> Events:
    """The rows (a frame or numpy columns) whose column `name` (seq, timestamp) is past `bound`; `rows`
    itself, uncopied, when all are (the usual case on the path of every ingested event)."""
    past = column(rows, name) > bound
    return rows if past.all() else where(rows, past)


def _columns(rows: list[tuple]) -> EventColumns:
    values = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    types = {"seq": np.int64, "timestamp": np.float64, "weight": np.float64}
    return {name: np.array(v, dtype=types.get(name, object)) for name, v in zip(COLUMNS, values)}
