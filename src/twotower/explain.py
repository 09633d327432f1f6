"""Why an item was recommended: the ranker's own per-feature contributions to the score it served (LightGBM's
`pred_contrib`, which sum exactly to that score), grouped into reasons a person reads ("trending this week",
"often chosen after X", "matches your genres: Comedy"), and the user's history items nearest to it in the
towers' space. The list explained is the list `recommend` serves: the same call, with its rows kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .item_info import ItemInfo
from .model.artifact import SavedModel
from .rank.reranker import RANKER
from .serving import Server

TOWERS = "towers"
WORDS = {                         # reason kind -> what it says (affinity and co-visitation get their values)
    TOWERS: "close to your history in the towers' space",
    "covisit": "often chosen together with items you had",
    "ease": "liked by people whose history is like yours",
    "als": "liked by people with tastes like yours",
    "trending": "trending this week",
    "popular": "popular overall",
    "new": "new in the catalog",
    "again": "you came back to it before",
    "activity": "fits how much you use the service",
    "context": "fits the time and context of the visit",
}
DIRECTION = {"trending": "item_count_7d", "popular": "item_count_all", "new": "item_age_days"}
NEUTRAL = {"trending": "its recent activity", "popular": "its overall popularity", "new": "its age in the catalog",
           "covisit": "its co-visits with your recent items (none)"}
NEAREST_HISTORY = 2               # history items shown beside each recommendation
REASONS_SHOWN = 3


def reason_kind(feature: str) -> str:
    """The reason a ranker feature speaks for (see WORDS; `affinity:<feature>` for a category affinity)."""
    if feature.startswith("retrieval_"):
        return TOWERS
    if feature.startswith("affinity_"):
        return "affinity:" + feature[len("affinity_"):]
    if feature.startswith("covisit"):
        return "covisit"
    for source in ("ease", "als"):
        if feature.startswith(source + "_"):
            return source
    if feature.startswith(("trending_", "item_count_1d", "item_count_7d", "item_trend")):
        return "trending"
    if feature.startswith(("item_count_", "popular")):
        return "popular"
    if feature == "item_age_days":
        return "new"
    if feature == "user_item_events":
        return "again"
    if feature.startswith("user_"):
        return "activity"
    return "context"


@dataclass
class Reason:
    kind: str
    text: str
    contribution: float               # the summed contribution of its features to the served score
    features: list[str] = field(default_factory=list)


@dataclass
class ExplainedItem:
    item_id: str
    rank: int
    score: float                      # the served score (the ranker's, or the towers' in retrieval order)
    tower_score: float                # the towers' score, on the ranker's scale
    reasons: list[Reason]             # positive reasons, strongest first
    contributions: dict[str, float]   # each ranker feature's contribution to `score` (empty without a ranker)
    expected_value: float = 0.0       # the average score over the request's candidates before the features speak
    base: float = 0.0                 # the towers' score's own part, centred on the request's candidates:
    #                                   score = expected_value + base + sum(contributions)
    nearest_history: list[tuple[str, float]] = field(default_factory=list)   # (item id, cosine) in the towers' space


@dataclass
class Explanation:
    user_id: str
    personalized: bool
    ranked: bool
    items: list[ExplainedItem]


class Explainer:
    """Explains one model version's lists; keeps what it reads once (item names, unit item vectors)."""

    def __init__(self, saved: SavedModel):
        self.info = ItemInfo(saved)
        _, vectors = saved.item_vectors()
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.unit_vectors = np.vstack([np.zeros((1, unit.shape[1]), unit.dtype), unit])    # by item code

    def explain(self, server: Server, user_id: str, k: int, at: float | None, context: dict | None,
                exclude_seen: bool | None) -> Explanation:
        """The user's top k as served by `server` (ranked when it ranks), each with its reasons."""
        hist = server.saved.history
        code = int(hist.users.encode([user_id])[0])
        kept: list = []
        times = None if at is None else np.array([at], dtype=np.float64)
        top = server.top_k(np.array([code]), k, at=times, exclude_seen=exclude_seen, context=context, keep=kept)
        ids, scores = top.ids[0], top.scores[0]
        keep = np.array([i is not None for i in ids]) & np.isfinite(scores)
        ids, scores = ids[keep], scores[keep].astype(np.float64)
        personal = bool(server.knows(np.array([code]))[0])
        if not personal:
            items = [ExplainedItem(str(i), r + 1, float(s), float("nan"),
                                   [Reason("popular", "popular with everyone (no history for you yet)", float(s))], {})
                     for r, (i, s) in enumerate(zip(ids, scores))]
            return Explanation(user_id, False, False, items)
        as_of = float(at) if at is not None else server.now + 1.0
        recent = server.users.recent(np.array([code]), np.array([as_of]), 50)[0]
        nearest = _nearest_history(self.unit_vectors, hist.items, recent, ids)
        if not kept:                                     # retrieval order: the towers alone chose the list
            temperature = server.catalog.temperature
            items = [ExplainedItem(str(i), r + 1, float(s), float(s) / temperature,
                                   [Reason(TOWERS, WORDS[TOWERS], float(s), ["retrieval_score"])], {},
                                   nearest_history=nearest[r])
                     for r, (i, s) in enumerate(zip(ids, scores))]
            return Explanation(user_id, True, False, items)
        rows, row_scores = kept[0]
        chosen = np.argsort(-row_scores, kind="stable")[:len(ids)]      # the served top k, as rank_candidates orders it
        picked = {c: np.asarray(v)[chosen] for c, v in rows.items()}
        reranker = server.reranker
        if reranker.serve_order == RANKER:
            contrib, expected, base = reranker.ranker.contributions(picked)
            base_mean = float(np.mean(reranker.ranker.base_score(rows)))
            names = reranker.ranker.features
        else:                                            # a score column orders the list: that source is the reason
            contrib, expected, base, base_mean = np.zeros((len(chosen), 0)), np.zeros(len(chosen)), scores, 0.0
            names = []
        middle = {c: float(np.median(rows[c])) for c in DIRECTION.values() if c in rows}
        items = []
        for r, item_id in enumerate(ids):
            by_feature = dict(zip(names, contrib[r].astype(float)))
            grouped: dict[str, tuple[float, list[str]]] = {}
            for name, value in by_feature.items():
                total, features = grouped.get(reason_kind(name), (0.0, []))
                grouped[reason_kind(name)] = (total + value, features + [name])
            kind = TOWERS if reranker.serve_order == RANKER else reason_kind(reranker.serve_order)
            total, features = grouped.get(kind, (0.0, []))
            grouped[kind] = (total + float(base[r]) - base_mean, features)
            values = {c: float(picked[c][r]) for c in middle}
            reasons = [Reason(kind, _words(server, self.info, kind, int(picked["item"][r]), recent, values, middle),
                              value, features)
                       for kind, (value, features) in grouped.items() if value > 0]
            reasons.sort(key=lambda reason: -reason.contribution)
            items.append(ExplainedItem(str(item_id), r + 1, float(scores[r]), float(picked["retrieval_score"][r]),
                                       reasons[:REASONS_SHOWN], by_feature, float(expected[r]) + base_mean,
                                       float(base[r]) - base_mean, nearest[r]))
        return Explanation(user_id, True, True, items)


def _words(server: Server, info: ItemInfo, kind: str, item: int, recent: np.ndarray, values: dict[str, float],
           middle: dict[str, float]) -> str:
    """The reason in words, naming the history item or the categories behind it where it can. A count or age
    is called high (trending, popular, new) only when it is on that side of the request's candidates' median:
    a feature can raise a score from either side."""
    hist = server.saved.history
    column = DIRECTION.get(kind)
    if column in values:
        high = values[column] < middle[column] if kind == "new" else values[column] > middle[column]
        return WORDS[kind] if high else f"{NEUTRAL[kind]} ({column} = {values[column]:g})"
    if kind == "covisit" and len(recent) and 0 < item < server.reranker.covisitation.counts.shape[0]:
        counts = server.reranker.covisitation.counts
        last = recent[-server.reranker.recent_length:]
        together = np.asarray(counts[last][:, item].todense()).ravel()
        if together.max() > 0:
            after = hist.items.decode([last[int(np.argmax(together))]])[0]
            return f"often chosen right after {info.names([after])[0]}"
        return NEUTRAL[kind]
    if kind.startswith("affinity:"):
        feature = kind.split(":", 1)[1]
        spec = next((s for s in hist.item_specs if s.name == feature), None)
        codes = hist.item_features.get(feature)
        if spec is not None and codes is not None and 0 < item < len(codes):
            mine = set(np.atleast_1d(codes[recent]).ravel().tolist()) if len(recent) else set()
            shared = [spec.vocab[c - 1] for c in np.atleast_1d(codes[item]) if c > 0 and c in mine]
            return f"matches your {feature}" + (f": {', '.join(shared)}" if shared else "")
    return WORDS.get(kind, kind)


def _nearest_history(unit: np.ndarray, items, recent: np.ndarray, ids: np.ndarray) -> list[list[tuple[str, float]]]:
    """For each item, the user's recent history items closest to it by cosine of the towers' item vectors
    (items added after training have no trained vector: none)."""
    codes = items.encode(np.asarray(ids, dtype=object))
    recent = np.unique(recent[recent > 0])
    out = []
    for code in codes:
        if not len(recent) or code <= 0 or code >= len(unit):
            out.append([])
            continue
        sims = unit[recent] @ unit[code]
        best = np.argsort(-sims)[:NEAREST_HISTORY]
        out.append([(str(items.decode([recent[b]])[0]), float(sims[b])) for b in best])
    return out
