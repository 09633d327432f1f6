"""The public Python API: `train` a model, `load` one, and ask the `Model` (one loaded version) for
recommendations and similar items, or give it new events. The CLI's `recommend` and the service go through
the same object, so there is one serving path."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, RegistryConfig, load_config
from .data.dataset import check_context
from .data.event_columns import EventColumns, as_columns, column, concat_columns, rows_in
from .data.schema import EARLIEST, LATEST, validate_event_rows, validate_events
from .errors import InputError
from .features.event_log import LOG_FILE, EventLog, beyond, follows
from .features.materialize import FEATURES_DIR, catch_up
from .explain import Explainer, Explanation
from .index.base import SearchResult
from .search import SearchIndex, search
from .serving import Server, context_rows

Table = str | Path | pd.DataFrame
MAX_CLOCK_SKEW_S = 86_400.0          # an ingested event may be dated at most this far ahead of this clock


class Model:
    """One trained model version, opened for answering: towers, vector index, ranker and online store.

    Reads (`recommend`, `similar`) may run from several threads at once. `ingest` appends durably, applies
    the events to the online store, then swaps in a history that holds them: each `recommend` call reads one
    history and one index throughout (the online store's counts are read live). Close it (or use it in a
    `with` block) to release the index, the stores and their files."""

    def __init__(self, folder: str | Path, rank: bool = True, events: str | Path | None = None):
        """Open a model folder; with `rank=False` its ranker and online store stay closed (retrieval order).

        `events`: the path of an event log kept outside the model (a service's, shared by the versions it
        swaps between); the model then takes the logged events later than its training data. Without it the
        model keeps its own log, in its folder, and takes all of it."""
        self.folder = Path(folder)
        self._server = Server.open(self.folder, rerank=rank)
        self._write = threading.Lock()
        self._log: EventLog | None = None
        self._log_path = Path(events) if events is not None else self.folder / FEATURES_DIR / LOG_FILE
        # on open, an outside log's events up to the model's latest training event are taken as trained on
        self._trained_until = self._server.now if events is not None else -np.inf
        self._history_seq = 0             # the last logged event the served history holds
        self._search: SearchIndex | None = None
        self._search_lock = threading.Lock()
        self._explain: Explainer | None = None       # names, attributes, unit item vectors: made on first use
        self._explain_lock = threading.Lock()
        try:
            if self._log_path.is_file():
                self._log = EventLog(self._log_path)
                self._apply_logged(after=self._trained_until)
        except BaseException:
            self.close()
            raise

    # --- what the version is -------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The id of this version's weights (an index or a registry entry names it)."""
        return self._server.saved.model_id

    @property
    def config(self) -> Config:
        return self._server.saved.config

    @property
    def ranked(self) -> bool:
        """True when `recommend(rank=True)` orders candidates with a ranker (else: retrieval order)."""
        return self._server.reranker is not None

    @property
    def note(self) -> str:
        """Why the model serves in retrieval order, when it does."""
        return self._server.note

    def __repr__(self) -> str:
        return f"twotower.Model({str(self.folder)!r}, id={self.model_id}, ranked={self.ranked})"

    # --- answers -------------------------------------------------------------------------------------------
    def recommend(self, user_ids, k: int = 10, context: dict | None = None, at=None,
                  exclude_seen: bool | None = None, rank: bool = True, batch: int = 256) -> pd.DataFrame:
        """`user_id, item_id, rank, score`: each user's top `k` items, retrieved from the index and (with
        `rank`) ordered by the ranker; users the model does not know get the most popular items.

        `at`: the request time (unix seconds, a date-time string, or one per user); without it the visit is at
        an unknown time, as `twotower recommend` serves a batch. `context`: values of the log's context
        columns ({column: value or [one per user]}). `exclude_seen` defaults to the config's
        recommend.exclude_seen."""
        ids, items, scores = self._top(user_ids, k, context, at, exclude_seen, rank, batch)
        n, width = items.shape
        keep = (pd.notna(items) & np.isfinite(scores)).ravel()
        return pd.DataFrame({"user_id": pd.array(np.repeat(np.asarray(ids, dtype=object), width)[keep], dtype=object),
                             "item_id": pd.array(items.ravel()[keep], dtype=object),
                             "rank": np.tile(np.arange(1, width + 1, dtype=np.int64), n)[keep],
                             "score": scores.ravel()[keep]})

    def recommend_each(self, user_ids, k: int = 10, context: dict | None = None, at=None,
                       exclude_seen: bool | None = None, rank: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """`recommend`, one (item ids, scores) pair of arrays per request, best first, in the order asked (a
        user may be asked several times, at different times or with other context): what a server answering
        requests together needs, without a frame per request."""
        _, items, scores = self._top(user_ids, k, context, at, exclude_seen, rank, batch=256)
        keep = pd.notna(items) & np.isfinite(scores)
        return [(row_items[row_keep], row_scores[row_keep])
                for row_items, row_scores, row_keep in zip(items, scores, keep)]

    def _top(self, user_ids, k, context, at, exclude_seen, rank, batch) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, [n, k] item ids with None for none, [n, k] scores) of each request."""
        server = self._server                 # one state for the whole call, whatever `ingest` does meanwhile
        ids = _id_list(user_ids, "user_ids")
        k = _positive(k, "k")
        batch = _positive(batch, "batch")
        k = min(k, max(len(server.index), 1))
        times = _times(at, len(ids))
        _check_context_lengths(context, len(ids))
        codes = server.saved.history.users.encode(ids)
        items, scores = np.full((len(ids), k), None, dtype=object), np.full((len(ids), k), -np.inf)
        for lo in range(0, len(ids), batch):
            sl = slice(lo, lo + batch)
            top = server.top_k(codes[sl], k, at=None if times is None else times[sl], rank=rank,
                               exclude_seen=exclude_seen, context=context_rows(context, sl))
            items[sl], scores[sl] = top.ids, top.scores.astype(np.float64)
        return ids, items, scores

    def explain(self, user_id: str, k: int = 10, context: dict | None = None, at=None,
                exclude_seen: bool | None = None) -> Explanation:
        """The user's top `k` exactly as `recommend` serves them, each with its towers' score, the ranker's
        score and its reasons: the ranker's per-feature contributions (they sum to the served score) grouped
        into words, and the user's history items nearest to it in the towers' space."""
        server = self._server
        times = _times(at, 1)
        _check_context_lengths(context, 1)
        return self._explainer().explain(server, _id_list([user_id], "user_id")[0], min(_positive(k, "k"),
                                         max(len(server.index), 1)), None if times is None else float(times[0]),
                                         context, exclude_seen)

    def item_names(self, item_ids) -> list[str]:
        """Each item's name for people (the items table's title or name column), or its id where none."""
        return self._explainer().info.names(_id_list(item_ids, "item_ids"))

    def item(self, item_id: str) -> dict[str, str] | None:
        """The item's readable attributes ({column: value}), or None for an item the model never had."""
        return self._explainer().info.attributes(str(item_id))

    def active_users(self, n: int = 20) -> list[str]:
        """The `n` users with the most positive events (ties: the first known first): good users to look at."""
        hist = self._server.saved.history
        counts = self._server.users.event_counts()[1:]              # ingested events included
        best = np.argsort(-counts, kind="stable")[:_positive(n, "n")]
        return [str(u) for u in hist.users.decode(best[counts[best] > 0] + 1)]

    def has_items(self, item_ids) -> np.ndarray:
        """[n] True for items the model can recommend now (in its index)."""
        return np.asarray(self._server.index.contains(_id_list(item_ids, "item_ids")), dtype=bool)

    def _explainer(self) -> Explainer:
        """Made on first use; new events keep it (they change no item), a catalog change makes a new one."""
        with self._explain_lock:
            if self._explain is None:
                self._explain = Explainer(self._server.saved)
            return self._explain

    def user_ids(self) -> list[str]:
        """Every user the model knows (trained on, or arrived through `ingest`)."""
        return [str(u) for u in self._server.saved.history.users.ids]

    def item_ids(self) -> list[str]:
        """Every item the model can recommend now (its index's catalog)."""
        return [str(i) for i in self._server.index.ids()]

    def recent_users(self, n: int = 1000) -> list[str]:
        """The last `n` distinct users with history this model answered, the latest first: whom to `warm`
        a version swapped in for."""
        server = self._server
        return [str(u) for u in server.saved.history.users.decode(server.recent_users(n))]

    def latest_users(self, n: int = 1000) -> list[str]:
        """The `n` users whose latest event is the newest (training log and ingested events), the newest
        first: whom a service starting up `warm`s the model for, before any of them asked."""
        server = self._server
        return [str(u) for u in server.saved.history.users.decode(server.users.latest_users(n))]

    def warm(self, user_ids) -> None:
        """Prepare the answers to these users' next requests (their kept query states, their online
        feature values), so that a version swapped in for a service answers them as fast as the one before
        it; users without history, or unknown, are skipped."""
        server = self._server
        server.warm(server.saved.history.users.encode(_id_list(user_ids, "user_ids")))

    def knows(self, user_ids) -> np.ndarray:
        """[n] True for users with history (personalised answers); others get the most popular items."""
        server = self._server
        return server.knows(server.saved.history.users.encode(_id_list(user_ids, "user_ids")))

    def similar(self, item_ids, k: int = 10) -> pd.DataFrame:
        """`item_id, similar_id, rank, score`: the `k` nearest items to each item in the towers' space (the
        index's similarity between item vectors). An item not in the index is an error naming it."""
        ids = _id_list(item_ids, "item_ids")
        lists = self.similar_each(ids, k)
        sizes = [len(found) for found, _ in lists]
        return pd.DataFrame({"item_id": pd.array(np.repeat(np.asarray(ids, dtype=object), sizes), dtype=object),
                             "similar_id": pd.array(np.concatenate([np.zeros(0, object)] + [f for f, _ in lists]),
                                                    dtype=object),
                             "rank": np.concatenate([np.zeros(0, np.int64)] + [np.arange(1, n + 1) for n in sizes]),
                             "score": np.concatenate([np.zeros(0)] + [s for _, s in lists])})

    def similar_each(self, item_ids, k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
        """`similar`, one (similar ids, scores) pair of arrays per item, nearest first: what a server answering
        one item needs, without a frame."""
        server = self._server
        ids = _id_list(item_ids, "item_ids")
        k = min(_positive(k, "k"), max(len(server.index) - 1, 1))
        try:
            vectors = server.index.vectors(ids)
        except KeyError as exc:
            raise InputError("item_ids", exc.args[0], "ask for items the model's index holds") from exc
        exclude = [{i} for i in ids]
        if server.new_items is None:
            found = server.index.search(vectors, k, exclude=exclude)
        else:             # new items are held scaled: twice as many, in the towers' own order
            found = server.unscaled(server.index.search(vectors, 2 * k, exclude=exclude), server.is_new(ids))
            found = SearchResult(found.ids[:, :k], found.scores[:, :k])
        keep = pd.notna(found.ids) & np.isfinite(found.scores)
        return [(row_ids[row_keep], row_scores[row_keep].astype(np.float64))
                for row_ids, row_scores, row_keep in zip(found.ids, found.scores, keep)]

    def search(self, query: str, user_id: str | None = None, k: int = 10, context: dict | None = None,
               at=None) -> pd.DataFrame:
        """`item_id, rank, score, text_rank, bm25_rank, personal_rank`: the `k` items whose text best matches
        `query`, by meaning (the pretrained text encoder, unless search.encoder is lexical) and by its words
        (BM25), fused with the towers' list (`personal_rank`). A model trained on a log with queries reads the query in its query tower, so
        its list is learned from the log's searches, and for a user with history it is that user's; other
        models score the text matches for a user with history. A user without history, or none, gets
        everyone's order. Only items the catalog serves now are returned. `at` and `context` are the
        request's time and context, as in `recommend`."""
        index = self.search_index()
        server = self._server
        k = _positive(k, "k")
        check_context(server.saved.history.context_specs, context)
        code = server.saved.history.users.encode([str(user_id)]) if user_id is not None else np.zeros(1, np.int64)
        user = int(code[0]) if server.knows(code)[0] else 0
        when = _times(at, 1)
        moment = float(when[0]) if when is not None else float("nan")
        if server.reads_queries:
            towers = lambda n: server.query_hits(user, query, n, moment, context)  # noqa: E731
            return search(index, query, k, self.config.search, allowed=server.index.contains, towers=towers)
        personal = None
        if user:
            personal = lambda ids: server.personal_scores(user, ids, moment, context)  # noqa: E731
        return search(index, query, k, self.config.search, personal, server.index.contains)

    def search_index(self) -> SearchIndex:
        """The version's search index (opened on first use: the text encoder takes a few seconds to load), or
        an `InputError` saying how to get one."""
        with self._search_lock:
            if self._search is None:
                self._search = SearchIndex.load(self.folder)
                if self._search is None:
                    raise InputError(str(self.folder), "this model has no search index (its items had no text, "
                                     "or search.encoder was \"none\")", "train it with an items table that has "
                                     "a text column (title, description, ...) or a log with a query column")
        return self._search

    def check(self) -> None:
        """Raise unless the version answers: its item vectors have the configured dimension, the index holds
        vectors of that dimension, and probe queries (a known user's recommendations, an item's neighbours)
        return items. A service runs this before swapping a version in."""
        server = self._server
        dim = self.config.model.dim
        vectors = server.saved.item_vectors()[1]
        if vectors.shape[1] != dim:
            raise InputError(str(self.folder), f"holds item vectors of dimension {vectors.shape[1]}, its config "
                             f"says {dim}", "retrain the model")
        item = server.index.first_id()
        if item is None:
            raise InputError(str(self.folder), "has an empty index", "rebuild it: twotower index")
        if server.index.vectors([item]).shape[1] != dim:
            raise InputError(str(self.folder), f"has an index of another dimension than its towers' {dim}",
                             "rebuild it: twotower index")
        users = self.user_ids()
        if users and self.recommend(users[:1], k=5).empty:
            raise InputError(str(self.folder), "answered a probe recommendation with no items", "retrain the model")
        if self.similar(item, k=3).empty:
            raise InputError(str(self.folder), "answered a probe similar-items query with no items",
                             "rebuild its index: twotower index")

    # --- new events ----------------------------------------------------------------------------------------
    def ingest(self, events: Table) -> int:
        """Add events (user_id, item_id, timestamp or none for now, action; optional event_id): validated
        as training input is, stored durably (an event_id already stored is skipped), then reflected in the
        user's history, the item counts and trending for the next `recommend`. Returns the events stored."""
        return self.ingest_checked([self.check_events(events)])[0]

    def check_events(self, events: Table) -> EventColumns:
        """The events as `ingest` would store them (validated, labelled, timestamps in seconds; as numpy
        columns), or one `InputError` naming what is wrong: lets a server refuse one request's events before
        joining others'."""
        checked = validate_event_rows(events, self.config.data) if isinstance(events, list) else None
        if checked is None:
            frame = _events_frame(events)
            if "timestamp" not in frame.columns:
                frame = frame.assign(timestamp=time.time())
            checked = as_columns(validate_events(frame, self.config.data, Path("events")))
        times = column(checked, "timestamp", np.float64)
        late = times > time.time() + MAX_CLOCK_SKEW_S
        if late.any():
            raise InputError("events", f"{int(late.sum())} event(s) dated more than a day ahead, e.g. at "
                             f"{pd.Timestamp(times[late][0], unit='s')} UTC",
                             "send the time the event happened (unix seconds or ISO date-time, UTC), or none")
        return checked

    def ingest_checked(self, batches: list[EventColumns]) -> list[int]:
        """Several requests' checked events (`check_events`) stored in one durable append and applied once
        (group commit: one fsync and one history update for all); per batch, how many were new."""
        with self._write:
            if self._log is None:
                self._log = EventLog(self._log_path)
            together = batches[0] if len(batches) == 1 else concat_columns(batches)
            stored = self._log.append(together)                   # acknowledged from here on
            self._apply_logged(appended=stored)
        if len(batches) == 1:                   # the events it stored are its own: new ids and the id-less
            return [rows_in(stored)]
        new_ids, counts = {i for i in stored["event_id"] if i is not None}, []
        for batch in batches:                   # an event_id stored now counts for the first batch that sent it
            ids = [str(i) for i in batch.get("event_id", ()) if not pd.isna(i)]
            mine = set(ids) & new_ids
            new_ids -= mine
            counts.append(rows_in(batch) - len(ids) + len(mine))
        return counts

    def sync(self) -> bool:
        """Apply the events another process appended to this model's event log since the last look (several
        service workers share one log): cheap when none did. True when something was applied."""
        log = self._log
        if log is None:
            if not self._log_path.is_file():
                return False
            self.catch_up()
            return True
        if not log.written_elsewhere():
            return False
        with self._write:
            self._apply_logged(after=self._trained_until)
        return True

    def catch_up(self) -> None:
        """Apply the events another version beside this one appended to the log while this one opened (as on
        open: an outside log's events up to this model's training data are taken as trained on)."""
        with self._write:
            if self._log is None and self._log_path.is_file():
                self._log = EventLog(self._log_path)
            if self._log is not None:
                self._apply_logged(after=self._trained_until)

    def _apply_logged(self, after: float = -np.inf, appended: EventColumns | None = None) -> None:
        """Apply what the log holds beyond what the online store and the served history hold (those dated
        `after` or earlier only advance the positions), so that an apply that failed before (a store briefly
        down) is done by the next ingest or open. `appended` (rows just stored) spares reading the log back
        when they are exactly what is missing."""
        if self._server.features is not None:
            catch_up(self._server.features, self._log, after=after, appended=appended)
        new = appended if follows(appended, self._history_seq) else self._log.since(self._history_seq)
        if rows_in(new):
            applied = beyond(new, "timestamp", after)
            if rows_in(applied):
                self._server = self._server.with_events(applied)
            self._history_seq = int(column(new, "seq").max())

    def update_catalog(self, items: Table | None = None, remove: str | Path | list | None = None,
                       rebuild: bool = False, show_progress: bool = False):
        """Add or refresh items from an items table (a path or a DataFrame; new ones embedded from their
        features) and take listed items out (a file of ids or a list): recorded in the model folder, applied
        to its index in place (or, with `rebuild`, the index built anew from the whole catalog), then
        swapped in whole (copy and swap: a search in flight finishes on the index it started with). Returns
        the `IndexBuild`."""
        import tempfile

        from .catalog import build_model_index, open_model_index, update_model_index
        from .data.schema import read_table
        from .registry.manifest import MANIFEST
        from .search import refresh_search_index

        if (self.folder / MANIFEST).is_file():
            raise InputError(str(self.folder), "is a registered version, which is never edited",
                             "change the catalog in the training folder (or retrain), then register a new version")
        with self._write, tempfile.TemporaryDirectory(prefix=".catalog-", dir=self.folder) as scratch:
            if isinstance(items, pd.DataFrame):
                items.to_parquet(Path(scratch) / "items.parquet")
                items = Path(scratch) / "items.parquet"
            if isinstance(remove, (list, tuple)):
                pd.DataFrame({"item_id": [str(i) for i in remove]}).to_csv(Path(scratch) / "remove.csv", index=False)
                remove = Path(scratch) / "remove.csv"
            build = None
            if items is not None or remove is not None:
                build = update_model_index(self.folder, Path(items) if items is not None else None,
                                           Path(remove) if remove is not None else None, show_progress=show_progress)
            if rebuild or build is None:
                build = build_model_index(self.folder, show_progress=show_progress)
            searchable = refresh_search_index(self.folder, read_table(items, id_column="item_id"), show_progress) \
                if items is not None else None
            server = self._server
            self._server = server.with_index(open_model_index(server.saved))
            with self._explain_lock:
                self._explain = None                  # names and attributes of the items added
            if searchable is not None:
                with self._search_lock:
                    self._search = searchable
        return build

    def history(self, user_id: str, limit: int | None = None) -> pd.DataFrame:
        """`item_id, timestamp, weight, event_id` of the user's positive events as the model knows them now
        (training log and ingested events; `event_id` where the event came with one), newest first."""
        hist = self._server.saved.history
        code = hist.users.encode([str(user_id)])[0]
        times, items, weights = self._server.users.events_of(code) if code else (np.zeros(0),) * 3
        newest_first = slice(None, None, -1)          # events are kept in (time, arrival) order
        out = pd.DataFrame({"item_id": hist.items.decode(items[newest_first]).astype(object) if len(items)
                            else np.array([], dtype=object),
                            "timestamp": np.asarray(times[newest_first], dtype=np.float64),
                            "weight": np.asarray(weights[newest_first], dtype=np.float64)})
        if limit is not None:
            out = out.iloc[:_positive(limit, "limit")]
        logged = self._log.of_user(str(user_id)) if self._log is not None and code else None
        if logged is None or not len(logged):
            return out.assign(event_id=pd.Series([None] * len(out), dtype=object))
        logged = logged.dropna(subset=["event_id"]).drop_duplicates(["item_id", "timestamp"], keep="last")
        out = out.merge(logged[["item_id", "timestamp", "event_id"]], on=["item_id", "timestamp"], how="left")
        return out.assign(event_id=out["event_id"].astype(object).where(out["event_id"].notna(), None))

    # --- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the index's and the stores' connections and files (a second close does nothing)."""
        server, log = getattr(self, "_server", None), getattr(self, "_log", None)
        self._server, self._log = None, None
        if server is not None:
            server.close()
        if log is not None:
            log.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(where: str | Path, rank: bool = True, registry: RegistryConfig | None = None) -> Model:
    """Open a model folder written by `twotower train` (or `twotower.train`), or a registered version:
    models:/NAME/VERSION or models:/NAME@ALIAS (checked against its manifest first)."""
    return Model(model_folder(where, registry), rank=rank)


def model_folder(where: str | Path, registry: RegistryConfig | None = None) -> Path:
    """A model folder, or for a registry URI the verified serving copy of that version."""
    if str(where).startswith("models:"):
        from .registry.mlflow_registry import Registry

        return Registry(registry).serving_copy(str(where))
    return Path(where)


def record_training(outcome, cfg: Config, register: str | None = None) -> tuple[str | None, str | None]:
    """Log a finished training as an MLflow run (unless `registry.track` is off) and, with `register`,
    make it a new version of that registered model. Returns (run id, version)."""
    if not (cfg.registry.track or register):
        return None, None
    from .model.artifact import update_meta
    from .registry.mlflow_registry import Registry

    registry = Registry(cfg.registry)
    metrics = {"val_ndcg@10": outcome.report.best_score if outcome.report.best_score > -1 else None,
               "best_epoch": outcome.report.best_epoch, "events": outcome.n_events, "users": outcome.n_users,
               "items": outcome.n_items, **{f"seconds.{k}": v for k, v in outcome.stages.items()}}
    if outcome.index.recall is not None:
        metrics[f"index_recall@{outcome.index.recall.k}"] = outcome.index.recall.recall
    if outcome.ranker is not None:
        report = outcome.ranker.reranker.ranker.report
        metrics["ranker_valid_ndcg@10"] = report.get("valid_ndcg@10")
        metrics.update({f"order_ndcg@10.{k.removesuffix('_score')}": v
                        for k, v in report.get("orders_ndcg@10", {}).items()})
    run_id = registry.log_training(outcome.out, cfg, outcome.report.epochs, metrics)
    version = registry.register(register, run_id) if register else None
    update_meta(outcome.out, mlflow={"run_id": run_id, "tracking_uri": registry.tracking_uri,
                                     "registered": {"name": register, "version": version} if register else None})
    return run_id, version


def train(events: Table, items: Table | None = None, users: Table | None = None,
          config: Config | str | Path | dict | None = None, out: str | Path | None = None,
          ranker: bool = True, show_progress: bool = False, register: str | None = None) -> Model:
    """Train towers, index and ranker as `twotower train` does, save the model in `out` (default:
    runs/model-<time>), log the run to MLflow (and with `register`, add it as a new version of that registered
    model), and open it. Tables are paths (CSV/Parquet) or pandas DataFrames."""
    from .pipeline import dataset_from_frames, fingerprint, load_inputs, train_and_save
    from .registry.mlflow_registry import check_name

    if register:
        check_name(register)
    cfg = config if isinstance(config, Config) else \
        _config_from_dict(config) if isinstance(config, dict) else load_config(config)
    out = Path(out) if out is not None else Path("runs") / f"model-{datetime.now():%Y%m%d-%H%M%S}"
    frames = [isinstance(t, pd.DataFrame) for t in (events, items, users)]
    if any(frames):
        def frame(t, what):
            return t if t is None or isinstance(t, pd.DataFrame) else _read(t, what)
        data = dataset_from_frames(frame(events, "events"), frame(items, "items"), frame(users, "users"), cfg)
        prints = {"frames": True}
    else:
        data = load_inputs(events, items, users, cfg)
        prints = fingerprint(events, items, users)
    outcome = train_and_save(data, cfg, out, prints, show_progress=show_progress, ranker=ranker, log=lambda _: None)
    record_training(outcome, cfg, register)
    return Model(out)


def _config_from_dict(values: dict) -> Config:
    from .config import config_from_dict

    return config_from_dict(values, source="config")


def _read(path, what: str) -> pd.DataFrame:
    from .data.schema import read_table

    return read_table(path, id_column=None if what == "events" else f"{what[:-1]}_id")


def _events_frame(events) -> pd.DataFrame:
    """Events as a frame: a DataFrame, a list of dicts, one dict (one event), or a CSV/Parquet path."""
    if isinstance(events, pd.DataFrame):
        return events.copy()
    if isinstance(events, dict):
        events = [events]
    if isinstance(events, (list, tuple)) and all(isinstance(e, dict) for e in events):
        return pd.DataFrame(list(events))
    if isinstance(events, (str, Path)):
        return _read(events, "events")
    raise InputError("events", f"cannot read events from a {type(events).__name__}",
                     "give a DataFrame, a list of {user_id, item_id, action, timestamp} dicts, or a file path")


def _id_list(ids, name: str) -> list[str]:
    """One id or a list of them, as exact strings."""
    if ids is None:
        raise InputError(name, "is missing", "give one id or a list of ids")
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        ids = [ids]
    out = [str(i) for i in ids]
    if not out:
        raise InputError(name, "is empty", "give at least one id")
    return out


def _positive(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(name, f"must be a positive whole number, got {k!r}", f"pass {name}=10, for example")
    return int(k)


def _times(at, n: int) -> np.ndarray | None:
    """`at` as [n] unix seconds: one time for all, or one per request; numbers or ISO date-time strings
    (UTC unless they say otherwise), between the years 1900 and 2200 as event times are."""
    if at is None:
        return None
    values = np.broadcast_to(np.asarray(at, dtype=object), (n,)) if np.ndim(at) == 0 else np.asarray(at, dtype=object)
    if len(values) != n:
        raise InputError("at", f"gives {len(values)} times for {n} users", "give one time, or one per user")

    def seconds_of(v) -> float:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{v!r} is not a time")
        if isinstance(v, (int, float, np.number)):
            return float(v)
        if not isinstance(v, str) or not v[:1].isdigit():          # "now", "today": the caller's clock, not ours
            raise ValueError(f"{v!r} is not an ISO date-time")
        stamp = pd.Timestamp(v)
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp()

    try:
        seconds = np.array([seconds_of(v) for v in values], dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError("at", f"is not a time ({exc})", "give unix seconds or an ISO date-time") from exc
    if not (np.isfinite(seconds) & (seconds >= EARLIEST) & (seconds <= LATEST)).all():
        raise InputError("at", "holds a time that is missing, infinite or not between the years 1900 and 2200",
                         "give unix seconds or an ISO date-time")
    return seconds


def _check_context_lengths(context: dict | None, n: int) -> None:
    """Each context value is one for every user or one per user."""
    for key, value in (context or {}).items():
        if np.ndim(value) and len(value) != n:
            raise InputError(f"context.{key}", f"gives {len(value)} values for {n} users",
                             "give one value, or one per user")
