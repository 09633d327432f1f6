"""Request and response bodies of the service. Unknown fields are refused (a typo is an error, not a silent
default); ids are strings, exactly as the client's."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Scalar = StrictStr | float | int | StrictBool


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    user_id: StrictStr = Field(min_length=1, max_length=512)
    k: int = Field(10, ge=1, description="how many items (at most serve.max_k)")
    context: dict[str, Scalar] = Field(default_factory=dict, description="values of the log's context columns")
    exclude_seen: StrictBool | None = Field(None, description="default: the model config's recommend.exclude_seen")
    exclude: list[StrictStr] = Field(default_factory=list, max_length=1000, description="item ids never returned")
    at: StrictFloat | StrictInt | StrictStr | None = Field(
        None, description="request time (unix seconds or ISO date-time, UTC); default now")
    rank: StrictBool = Field(True, description="false: retrieval order, no ranker")


class ScoredItem(BaseModel):
    item_id: str
    score: float
    rank: int


class RecommendResponse(BaseModel):
    user_id: str
    personalized: bool = Field(description="false: the user has no history yet, the items are the most popular")
    items: list[ScoredItem]
    model_version: str


class SimilarResponse(BaseModel):
    item_id: str
    items: list[ScoredItem]
    model_version: str


class Event(_Body):
    user_id: StrictStr = Field(min_length=1, max_length=512)
    item_id: StrictStr = Field(min_length=1, max_length=512)
    action: StrictStr | None = Field(None, description="one of the config's data.actions (click, purchase, ...)")
    timestamp: StrictFloat | StrictInt | StrictStr | None = Field(
        None, description="unix seconds or ISO date-time (UTC); default now")
    event_id: StrictStr | None = Field(None, max_length=256, description="makes retries safe: stored once")


class EventsResponse(BaseModel):
    received: int
    stored: int = Field(description="events new to the log (an event_id already stored is not stored again)")
    model_version: str


class HistoryEvent(BaseModel):
    item_id: str
    timestamp: float
    weight: float
    event_id: str | None
    action: str | None = Field(None, description="the config's action name for the event's weight")


class HistoryResponse(BaseModel):
    user_id: str
    events: list[HistoryEvent]
    model_version: str


class SearchRequest(_Body):
    query: StrictStr = Field(min_length=1, max_length=2048)
    user_id: StrictStr | None = None
    k: int = Field(10, ge=1)
    context: dict[str, Scalar] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    query: str
    user_id: str | None
    personalized: bool = Field(description="the user's history ordered the matches")
    model_version: str
    items: list[ScoredItem]


class ReloadRequest(_Body):
    model: StrictStr | None = Field(None, description="a folder or models:/NAME/VERSION or models:/NAME@ALIAS; "
                                    "default: what is served now, looked up again (an alias may have moved)")


class CatalogChange(_Body):
    upsert: list[dict[str, Scalar | None]] = Field(default_factory=list, max_length=100_000, description=(
        "items to add or refresh: item_id and the feature columns the model was trained with"))
    delete: list[StrictStr] = Field(default_factory=list, max_length=100_000, description="item ids to take out")
    rebuild: StrictBool = Field(False, description="build the index anew from the whole catalog")


class CatalogResponse(BaseModel):
    items: int
    new_items: int
    removed_items: int
    rebuilt: bool
    seconds: float
    model_version: str


class ReloadResponse(BaseModel):
    previous: str
    model_version: str
    seconds: float
    stages: dict[str, float] = Field(default_factory=dict, description="seconds spent opening and checking the new "
                                     "version (open), preparing its users' answers (warm) and applying the events "
                                     "logged meanwhile (catch_up)")


class ExplainRequest(_Body):
    user_id: StrictStr = Field(min_length=1, max_length=512)
    k: int = Field(10, ge=1, description="how many items (at most serve.max_k)")
    context: dict[str, Scalar] = Field(default_factory=dict, description="values of the log's context columns")
    exclude_seen: StrictBool | None = Field(None, description="default: the model config's recommend.exclude_seen")
    at: StrictFloat | StrictInt | StrictStr | None = Field(
        None, description="request time (unix seconds or ISO date-time, UTC); default now")


class ReasonOut(BaseModel):
    kind: str = Field(description="towers, covisit, trending, popular, affinity:<feature>, ...")
    text: str = Field(description="the reason in words")
    contribution: float = Field(description="its features' summed contribution to the served score")
    features: list[str]


class Neighbour(BaseModel):
    item_id: str
    name: str
    similarity: float


class ExplainedItemOut(BaseModel):
    item_id: str
    name: str
    rank: int
    score: float = Field(description="the served score (the ranker's; the towers' in retrieval order)")
    tower_score: float | None
    expected_value: float
    base: float
    contributions: dict[str, float] = Field(description="each ranker feature's contribution (LightGBM pred_contrib): "
                                            "expected_value + base + their sum = score")
    reasons: list[ReasonOut]
    nearest_history: list[Neighbour] = Field(description="the user's history items closest in the towers' space")


class ExplainResponse(BaseModel):
    user_id: str
    personalized: bool
    ranked: bool
    items: list[ExplainedItemOut]
    model_version: str


class NamesRequest(_Body):
    item_ids: list[StrictStr] = Field(max_length=1000)


class NamesResponse(BaseModel):
    names: dict[str, str]


class ItemResponse(BaseModel):
    item_id: str
    name: str
    attributes: dict[str, str]
    model_version: str


class UsersResponse(BaseModel):
    users: list[str] = Field(description="the most active users")
    model_version: str
