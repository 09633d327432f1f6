"""The validated, integer-coded view of the user's data that every stage trains and evaluates on."""

from __future__ import annotations

import logging
from itertools import repeat
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import Config
from ..errors import InputError
from .event_columns import Events
from .features import FeatureSpec, encode, fit_specs
from .item_text import item_labels, item_texts, tower_text_feature
from .query_text import QUERY_TEXT, query_text_feature, request_query
from .schema import context_columns
from .time_features import NAMES as TIME_NAMES
from .time_features import has_clock, previous_positive_times, time_columns

log = logging.getLogger(__name__)


class _Grown:
    """The ids of a vocabulary and of those grown from it, with spare room after them: `used` says how many
    the newest holds (a vocabulary grown from an older one copies instead of sharing)."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.used = ids, len(ids)


class IdVocab:
    """The user's ids <-> internal codes 1..n (0 = padding / unknown). Codes never leave the system. A
    vocabulary `extended` from this one shares its table and array and adds after them (growing costs the new
    ids, not the vocabulary: a service's new user), while this one keeps answering for its own n codes."""

    def __init__(self, ids):
        ids = np.asarray(list(ids), dtype=object)
        self._index = {v: i + 1 for i, v in enumerate(ids)}
        if len(self._index) != len(ids):
            raise ValueError("ids must be unique")
        self._grown, self._n = _Grown(ids), len(ids)

    @property
    def ids(self) -> np.ndarray:
        return self._grown.ids[:self._n]

    def __len__(self) -> int:
        return self._n

    def encode(self, values) -> np.ndarray:
        """[n] ids -> [n] codes; unknown ids -> 0."""
        values = values.tolist() if isinstance(values, np.ndarray) else values
        codes = np.fromiter(map(self._index.get, map(str, values), repeat(0)), dtype=np.int64, count=len(values))
        if self._grown.used > self._n:
            codes[codes > self._n] = 0             # ids a vocabulary grown from this one added
        return codes

    def decode(self, codes) -> np.ndarray:
        """[n] codes (>= 1) -> [n] ids."""
        return self.ids[np.asarray(codes) - 1]

    def __contains__(self, value) -> bool:
        return 0 < self._index.get(str(value), 0) <= self._n

    def extended(self, new_ids) -> "IdVocab":
        """This vocabulary with `new_ids` (not in it yet) taking the next codes; existing codes unchanged."""
        new_ids = np.asarray(list(new_ids), dtype=object)
        if len(set(new_ids.tolist())) != len(new_ids) or any(v in self for v in new_ids.tolist()):
            raise ValueError("ids must be unique")
        if self._grown.used != self._n:             # another vocabulary grew from this one already
            return IdVocab([*self.ids.tolist(), *new_ids.tolist()])
        grown, n = self._grown, self._n + len(new_ids)
        if n > len(grown.ids):                      # room doubles: the same object, so `used` stays shared
            room = np.empty(max(2 * n, 1024), dtype=object)
            room[:self._n] = grown.ids[:self._n]
            grown.ids = room
        grown.ids[self._n:n] = new_ids
        self._index.update((v, self._n + i + 1) for i, v in enumerate(new_ids.tolist()))
        grown.used = n
        out = IdVocab.__new__(IdVocab)
        out._index, out._grown, out._n = self._index, grown, n
        return out


@dataclass
class Dataset:
    """Events sorted by (user, timestamp, file order), with encoded features of items, users and context.

    events columns: user, item (codes), timestamp (float s), weight (label), order (file row).
    Feature arrays have one row per code, row 0 for padding/unknown: items [n_items + 1, ...].
    """

    events: pd.DataFrame
    users: IdVocab
    items: IdVocab
    item_specs: list[FeatureSpec] = field(default_factory=list)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    user_specs: list[FeatureSpec] = field(default_factory=list)
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    context_specs: list[FeatureSpec] = field(default_factory=list)
    context_features: dict[str, np.ndarray] = field(default_factory=dict)  # one row per event
    item_texts: np.ndarray | None = None     # [n_items + 1] what each item's text columns say (`item_text`)
    item_labels: np.ndarray | None = None    # [n_items + 1] each item's name for people (`item_text.item_labels`)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def subset(self, mask: np.ndarray) -> "Dataset":
        """The same dataset with only the events where `mask` is true (features follow their rows)."""
        mask = np.asarray(mask, dtype=bool)
        return Dataset(
            self.events[mask].reset_index(drop=True), self.users, self.items,
            self.item_specs, self.item_features, self.user_specs, self.user_features,
            self.context_specs, {k: v[mask] for k, v in self.context_features.items()}, self.item_texts,
            self.item_labels,
        )


def build_dataset(events: pd.DataFrame, items: pd.DataFrame | None, users: pd.DataFrame | None,
                  config: Config) -> Dataset:
    """Code ids, sort events by time, and fit + encode the feature columns of all three tables."""
    cfg = config.data
    item_ids = list(items["item_id"]) if items is not None else []
    extra = pd.unique(events.loc[~events["item_id"].isin(set(item_ids)), "item_id"])
    if items is not None and len(extra):
        log.warning("%d item(s) in the events are not in the items table; they get no features", len(extra))
    item_vocab = IdVocab(item_ids + list(extra))
    user_ids = list(users["user_id"]) if users is not None else []
    user_vocab = IdVocab(user_ids + list(pd.unique(events.loc[~events["user_id"].isin(set(user_ids)), "user_id"])))

    # context columns are read from the user's own columns, before any internal column exists
    ctx_cols = context_columns(events)
    user_codes = user_vocab.encode(events["user_id"].to_numpy())
    item_codes = item_vocab.encode(events["item_id"].to_numpy())
    order = np.lexsort((events["order"].to_numpy(), events["timestamp"].to_numpy(), user_codes))
    src = events.iloc[order].reset_index(drop=True)
    ev = pd.DataFrame({"user": user_codes[order], "item": item_codes[order], "timestamp": src["timestamp"],
                       "weight": src["weight"], "order": src["order"]})
    if "query" in src.columns:
        ev["query"] = src["query"]

    def table_features(table, id_col, vocab, prefix_overrides):
        if table is None:
            return [], {}
        cols = [c for c in table.columns if c != id_col]
        specs = fit_specs(table, cols, prefix_overrides, cfg.multi_separator, config.model.text_buckets)
        aligned = table.set_index(id_col).reindex(pd.Index(vocab.ids, name=id_col)).reset_index()
        feats = encode(aligned, specs, cfg.multi_separator)
        return specs, {k: _with_padding_row(v) for k, v in feats.items()}

    unused = set(cfg.feature_kinds) - set(ctx_cols) - set(items.columns if items is not None else ()) \
        - set(users.columns if users is not None else ())
    if unused:
        log.warning("data.feature_kinds names %s, which no events, items or users column has: ignored (check the "
                    "spelling against your files' headers)", ", ".join(repr(c) for c in sorted(unused)))
    item_specs, item_features = table_features(items, "item_id", item_vocab, cfg.feature_kinds)
    user_specs, user_features = table_features(users, "user_id", user_vocab, cfg.feature_kinds)
    context_specs = fit_specs(src, ctx_cols, cfg.feature_kinds, cfg.multi_separator, config.model.text_buckets)
    times = ev["timestamp"].to_numpy(np.float64)
    if config.model.request_time and has_clock(times):
        previous = previous_positive_times(ev["user"].to_numpy(), times, ev["weight"].to_numpy() > 0)
        derived = pd.DataFrame(time_columns(times, previous), index=src.index)
        context_specs += fit_specs(derived, list(derived.columns), {c: "numeric" for c in derived.columns})
        src = pd.concat([src, derived], axis=1)
    context_features = encode(src, context_specs, cfg.multi_separator)
    if config.model.query_text and config.model.context_features and "query" in src.columns:
        found = query_text_feature(src["query"], config.model.text_encoder, config.model.text_buckets)
        if found is not None:
            context_specs.append(found[0])
            context_features[QUERY_TEXT] = found[1]
    texts = item_texts(items, item_vocab.ids, item_specs, config.search, cfg.multi_separator) \
        if config.search.encoder != "none" or config.model.text_vectors else None
    if config.model.text_vectors and items is not None:            # row 0 (padding) has no text: zeros
        spec, rows = tower_text_feature(texts, config.model.text_encoder, config.model.text_buckets, True)
        item_specs = item_specs + [spec]
        item_features = {**item_features, spec.name: rows}
    return Dataset(ev, user_vocab, item_vocab, item_specs, item_features, user_specs, user_features,
                   context_specs, context_features, texts, item_labels(items, item_vocab.ids, item_specs))


def request_context(specs: list[FeatureSpec], times, previous=None, values: dict | None = None,
                    query: str | list[str] | None = None) -> dict[str, np.ndarray]:
    """Context of requests served at `times` ([n]; with [n] the user's latest positive event time, NaN when
    unknown): the time features, the log's own context columns from `values` (column -> one value for
    every request, or [n]; a column not given is unknown, missing; an unknown column is an error), and for
    a model that reads query text, the search `query` (one text, or one per request; none: a
    recommendation) as its encoder reads it."""
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    previous = np.full(len(times), np.nan) if previous is None else np.asarray(previous, dtype=np.float64)
    columns = time_columns(times, previous)
    given = check_context(specs, values)
    for name in _own_context(specs):
        value = given.get(name)
        columns[name] = np.asarray(value) if np.ndim(value) else np.full(len(times), value)
    return {**encode(columns, [s for s in specs if s.name != QUERY_TEXT]), **request_query(specs, len(times), query)}


def _own_context(specs: list[FeatureSpec]) -> list[str]:
    """The log's own context columns (device, page, ...), not the time features derived from the clock or
    the search text."""
    return [s.name for s in specs if s.name not in TIME_NAMES and s.name != QUERY_TEXT]


def check_context(specs: list[FeatureSpec], values: dict | None) -> dict:
    """`values` ({column: value}) when every column is one of the log's own context columns, else one error
    naming the unknown ones and the known ones."""
    given = dict(values or {})
    unknown = sorted(set(given) - set(_own_context(specs)))
    if unknown:
        raise InputError("context", f"unknown context field(s) {unknown}",
                         f"use the context columns the model was trained with: {_own_context(specs) or 'none'}")
    return given


def with_new_users(data: Dataset, events: Events) -> Dataset:
    """`data` whose users include those of the positive `events` it does not know yet (the next codes, no
    features); events and everything else as they were."""
    positive = np.asarray(events["weight"], dtype=np.float64) > 0
    user_ids = np.asarray(events["user_id"]).astype(str).astype(object)[positive]
    new_users = pd.unique(np.array([u for u in user_ids if u not in data.users], dtype=object))
    if not len(new_users):
        return data
    return replace(data, users=data.users.extended(new_users))


def seen_matrix(data: Dataset) -> sp.csr_matrix:
    """[n_users + 1, n_items + 1] 1 where the user has a positive event with the item."""
    ev = data.events[data.events["weight"] > 0]
    return pairs_matrix(ev["user"].to_numpy(), ev["item"].to_numpy(), (data.n_users + 1, data.n_items + 1))


def pairs_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """[users, items] 1 where a (user, item) pair occurs (a pair seen twice is still 1)."""
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
    m.data[:] = 1.0
    return m


def last_positive_times(data: Dataset) -> np.ndarray:
    """[n_users + 1] each user's latest positive event time (NaN for none): what `request_context` needs."""
    ev = data.events[data.events["weight"] > 0]
    out = np.full(data.n_users + 1, np.nan)
    last = ev.groupby("user")["timestamp"].max()
    out[last.index.to_numpy()] = last.to_numpy()
    return out


def _with_padding_row(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1,) + x.shape[1:], dtype=x.dtype), x])
