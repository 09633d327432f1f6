"""`twotower materialize`: load a model's online store from its offline store, and open it for serving.

The offline store (MODEL/features/events.parquet) is the record; the online store holds the latest values
derived from it. Materializing rebuilds the online store from scratch: SQLite into a new file renamed over
the old one (readers never see half a load), Redis under the model's own key prefix, cleared first.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..config import RankConfig
from ..data.event_columns import Events, column, rows_in
from ..errors import InputError
from ..progress import progress_bar
from .definitions import FeatureDefinitions
from .offline import OfflineStore
from .event_log import LOG_FILE, EventLog, beyond, follows
from .online import OnlineStore, RedisOnlineStore, SQLiteOnlineStore

FEATURES_DIR = "features"
SQLITE_FILE = "online.sqlite"
RECORD = "online.json"
BATCH = 50_000


@dataclass
class Materialized:
    backend: str
    where: str
    events: int
    seconds: float


def offline_store(model_dir: Path, cfg: RankConfig) -> OfflineStore:
    return OfflineStore(Path(model_dir) / FEATURES_DIR, FeatureDefinitions(tuple(cfg.windows_days)))


def redis_prefix(model_id: str) -> str:
    return f"twotower:{model_id}"


def open_online_store(model_dir: Path, cfg: RankConfig, model_id: str):
    """The model's online store where it was last materialized (else where `cfg` says); a clear error if
    it never was."""
    record = Path(model_dir) / FEATURES_DIR / RECORD
    if record.is_file():
        cfg = cfg.model_copy(update=json.loads(record.read_text()))
    definitions = FeatureDefinitions(tuple(cfg.windows_days))
    if cfg.online_store == "redis":
        return RedisOnlineStore(cfg.redis_url, definitions, prefix=redis_prefix(model_id))
    path = Path(model_dir) / FEATURES_DIR / SQLITE_FILE
    if not path.is_file():
        raise InputError(str(path), "the online feature store was never materialized",
                         f"run: twotower materialize --model {model_dir}")
    try:
        return SQLiteOnlineStore(path, definitions)
    except sqlite3.DatabaseError as exc:
        raise InputError(str(path), f"the online feature store is damaged ({exc})",
                         f"rebuild it: twotower materialize --model {model_dir}") from exc


def event_log(model_dir: Path) -> EventLog:
    """The model's log of events ingested after training (created empty when there is none)."""
    return EventLog(Path(model_dir) / FEATURES_DIR / LOG_FILE)


def catch_up(online: OnlineStore, log: EventLog, after: float = -np.inf, appended: Events | None = None) -> int:
    """Apply the logged events the online store has not applied yet (after a crash between the two, or a
    rebuild from the offline store), those later than `after` (events the model trained on are counted
    already); returns how many. `appended`, the rows an `append` just stored, are applied as they are when
    they are exactly what the store lacks (the usual case: no read back)."""
    applied = online.applied(log.log_id)
    missing = appended if follows(appended, applied) else log.since(applied)
    if not rows_in(missing):
        return 0
    position = int(column(missing, "seq").max())
    return online.ingest(beyond(missing, "timestamp", after), position=position, log=log.log_id)


def materialize(model_dir: Path, cfg: RankConfig, model_id: str, show_progress: bool = True) -> Materialized:
    """Rebuild the online store (`cfg.online_store`) from every event in the offline store and the events
    ingested since training, and record where it is, so serving opens the same one."""
    t0 = time.perf_counter()
    store = offline_store(model_dir, cfg)
    if not store.events_path.is_file():
        raise InputError(str(store.events_path), "the model has no offline feature store",
                         "train the model with its ranker (twotower train without --no-ranker)")
    events = pd.read_parquet(store.events_path)
    if cfg.online_store == "redis":
        online = RedisOnlineStore(cfg.redis_url, store.definitions, prefix=redis_prefix(model_id))
        online.clear()
        _load(online, events, show_progress, model_dir)
        online.close()
        where = f"{cfg.redis_url} (keys {redis_prefix(model_id)}:*)"
    else:
        target = Path(model_dir) / FEATURES_DIR / SQLITE_FILE
        with atomic_path(target) as tmp:
            online = SQLiteOnlineStore(tmp, store.definitions)
            _load(online, events, show_progress, model_dir)
            online.close()
        where = str(target)
    with atomic_path(Path(model_dir) / FEATURES_DIR / RECORD) as tmp:
        tmp.write_text(json.dumps({"online_store": cfg.online_store, "redis_url": cfg.redis_url}))
    return Materialized(cfg.online_store, where, int((events["weight"] > 0).sum()), time.perf_counter() - t0)


def _load(online: OnlineStore, events: pd.DataFrame, show_progress: bool, model_dir: Path) -> None:
    events = events.sort_values("timestamp", kind="stable")
    with progress_bar(show_progress) as bar:
        task = bar.add_task("materializing", total=len(events), rate="")
        for lo in range(0, len(events), BATCH):
            online.ingest(events.iloc[lo:lo + BATCH])
            bar.update(task, advance=min(BATCH, len(events) - lo))
    if (Path(model_dir) / FEATURES_DIR / LOG_FILE).is_file():
        log = event_log(model_dir)
        try:
            catch_up(online, log)
        finally:
            log.close()
