"""The HTTP routes, thin over `twotower.Model`: each read leases the version being served (a swap never changes
a request's version halfway), events go to the durable log before they are acknowledged, and every bad
request gets a 4xx that says what is wrong.

Concurrency: one process. /recommend awaits the batcher (`batching`: requests that arrive together are
answered by one model call on the event loop, past a deadline with 503); /similar and /events run on the loop
too (events in a thread while another write holds the log), the other routes in FastAPI's thread pool. Reads
share the version's index and stores (both safe for concurrent readers); events are written in group commits
under one lock (`versions`). Between requests close together the loop polls instead of sleeping (`busy_poll`)."""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import __version__
from ..config import ServeConfig
from ..errors import InputError
from .batching import Ask, Overloaded, batcher
from .busy_poll import BusyPoll
from .metrics import ServiceMetrics
from .page import action_names, add_page
from .schemas import (CatalogChange, CatalogResponse, Event, EventsResponse, HistoryEvent, HistoryResponse,
                      RecommendRequest, RecommendResponse, ReloadRequest, ReloadResponse, ScoredItem, SearchRequest,
                      SearchResponse, SimilarResponse)
from .versions import ReloadError, ServedModels
from .yielding import running as background_work

log = logging.getLogger("twotower.serve")


def create_app(served: ServedModels, cfg: ServeConfig | None = None,
               one_request_per_connection: bool = False) -> FastAPI:
    """The service over `served` (the version it answers from; closed when the app shuts down). With
    `one_request_per_connection` (one of several worker processes) every answer closes its connection, so a
    client's next request goes to whichever worker is free: kept alive, a connection would pin a client to
    the worker that accepted it, and one busy client to one worker while the others idle."""
    cfg = cfg or ServeConfig()
    metrics = ServiceMetrics()
    metrics.version(served.current.version)
    token = cfg.admin_token or os.environ.get("TWOTOWER_ADMIN_TOKEN") or None
    recommender = batcher(served, cfg.max_batch, cfg.batch_workers, cfg.queue_deadline_s)
    poll = BusyPoll(cfg.busy_poll_ms / 1000, paused=background_work)     # a reload takes the loop's gaps

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        stop, followers = threading.Event(), []
        if cfg.follow_seconds > 0 and "@" in served.current.ref:
            followers.append(threading.Thread(target=_follow_alias, args=(served, metrics, cfg.follow_seconds, stop),
                                              name="twotower-follow", daemon=True))
        followers.append(threading.Thread(target=_follow_workers, args=(served, stop), name="twotower-workers",
                                          daemon=True))
        for follower in followers:
            follower.start()
        poll.start()
        yield
        await poll.stop()
        stop.set()
        for follower in followers:
            follower.join()                       # a reload in progress ends before the versions close
        recommender.close()
        served.close()

    app = FastAPI(title="twotower", version=__version__, lifespan=lifespan,
                  description="Recommendations, similar items and live events from a two-tower model version.")
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    app.add_middleware(poll.middleware)
    if one_request_per_connection:
        app.add_middleware(CloseConnection)
    app.add_middleware(metrics.middleware)           # added last: outermost, so it counts the 413s too

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, exc: InputError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, exc: Overloaded):
        return JSONResponse({"detail": f"the service is overloaded ({exc}); retry shortly"}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        """FastAPI's 422, with values JSON cannot carry (NaN, Infinity in the input) written as text."""
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.post("/recommend", response_model=RecommendResponse, summary="The user's top k items")
    async def recommend(req: RecommendRequest) -> RecommendResponse:
        if req.k > cfg.max_k:
            raise HTTPException(422, f"k={req.k} is over the service's limit {cfg.max_k}; ask for fewer items")
        answer = await recommender.ask(Ask(
            req.user_id, req.k, time.time() if req.at is None else req.at, dict(req.context), frozenset(req.exclude),
            req.exclude_seen, req.rank))
        return RecommendResponse(user_id=req.user_id, personalized=answer.personalized, model_version=answer.version,
                                 items=_scored(answer.item_ids, answer.scores))

    @app.get("/items/{item_id:path}/similar", response_model=SimilarResponse, summary="Items nearest to an item")
    async def similar(item_id: str, k: Annotated[int, Query(ge=1)] = 10) -> SimilarResponse:
        # answered on the event loop: a millisecond of index search costs less than a hop to the thread pool
        if k > cfg.max_k:
            raise HTTPException(422, f"k={k} is over the service's limit {cfg.max_k}; ask for fewer items")
        with served.lease() as v:
            try:
                (similar_ids, scores), = v.model.similar_each([item_id], k=k)
            except InputError as exc:
                raise HTTPException(404, f"item {item_id!r} is not in the model's catalog") from exc
        return SimilarResponse(item_id=item_id, model_version=v.version, items=_scored(similar_ids, scores))

    @app.get("/users/{user_id:path}/history", response_model=HistoryResponse,
             summary="The user's positive events as the service knows them now, newest first")
    def history(user_id: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> HistoryResponse:
        with served.lease() as v:
            rows = v.model.history(user_id, limit=limit)
            actions = action_names(v.model.config.data.actions)
        return HistoryResponse(user_id=user_id, model_version=v.version, events=[
            HistoryEvent(item_id=str(i), timestamp=float(t), weight=float(w), event_id=e, action=actions.get(float(w)))
            for i, t, w, e in zip(rows["item_id"], rows["timestamp"], rows["weight"], rows["event_id"])])

    @app.post("/events", response_model=EventsResponse,
              summary="Store events durably (acknowledged once on disk) and serve them from the next request")
    async def events(body: Annotated[Event | list[Event], Body()]) -> EventsResponse:
        batch = body if isinstance(body, list) else [body]
        if not batch:
            raise HTTPException(422, "no events: send one event or a non-empty list")
        if len(batch) > cfg.max_batch_events:
            raise HTTPException(413, f"{len(batch)} events in one request; send at most {cfg.max_batch_events}")
        now = time.time()
        rows = [{**e.model_dump(exclude_none=True), "timestamp": now if e.timestamp is None else e.timestamp}
                for e in batch]
        # on the loop, like /recommend: a thread would wait for the interpreter lock at each SQLite call
        stored = served.ingest_now(rows)
        if stored is None:                       # another write holds the log: wait for it in a thread
            stored = await run_in_threadpool(served.ingest, rows)
        metrics.events.inc(stored)
        return EventsResponse(received=len(batch), stored=stored, model_version=served.current.version)

    @app.post("/search", response_model=SearchResponse, summary="Items matching a query, in the user's order",
              responses={409: {"description": "the version being served has no search index"}})
    def search(req: SearchRequest) -> SearchResponse:
        if req.k > cfg.max_k:
            raise HTTPException(422, f"k={req.k} is over the service's limit {cfg.max_k}; ask for fewer items")
        if not req.query.strip():
            raise HTTPException(422, "query is blank: give the words to search for")
        with served.lease() as v:
            try:
                v.model.search_index()
            except InputError as exc:
                raise HTTPException(409, f"{v.version} cannot search: {exc.problem}; {exc.fix}") from exc
            found = v.model.search(req.query, user_id=req.user_id, k=req.k, context=dict(req.context) or None)
            personal = bool(req.user_id is not None and v.model.knows([req.user_id])[0]
                            and found["personal_rank"].notna().any())     # the towers' list was the user's
        return SearchResponse(query=req.query, user_id=req.user_id, personalized=personal, model_version=v.version,
                              items=_scored(found["item_id"].to_numpy(dtype=object), found["score"].to_numpy()))

    @app.get("/healthz", summary="The process is alive (with --workers, the one that answered)")
    def healthz():
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz", summary="A model version is loaded and answering")
    def readyz():
        v = served.current
        if v.retired:
            return JSONResponse({"status": "closing"}, status_code=503)
        return {"status": "ready", "model_version": v.version, "model": v.ref, "since": v.loaded_at}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    add_page(app, served, cfg)

    if token:
        @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(AdminToken(token))],
                  summary="Load a version beside the current one, check it, swap it in")
        def reload(req: ReloadRequest | None = None) -> ReloadResponse:
            t0 = time.perf_counter()
            try:
                old, new = served.reload(req.model if req else None)
            except ReloadError as exc:
                metrics.reloads.labels("refused").inc()
                raise HTTPException(409, f"kept {served.current.version}: {exc}") from exc
            metrics.swapped(new.stages)
            metrics.version(new.version)
            return ReloadResponse(previous=old.version, model_version=new.version,
                                  seconds=round(time.perf_counter() - t0, 3),
                                  stages={stage: round(seconds, 3) for stage, seconds in new.stages.items()})

        @app.post("/admin/catalog", response_model=CatalogResponse, dependencies=[Depends(AdminToken(token))],
                  summary="Add, refresh or remove items (or rebuild the index) in the version being served")
        def catalog(change: CatalogChange) -> CatalogResponse:
            if not (change.upsert or change.delete or change.rebuild):
                raise HTTPException(422, "nothing to change: give upsert, delete or rebuild")
            if any(not isinstance(row.get("item_id"), str) or not row["item_id"] for row in change.upsert):
                raise HTTPException(422, "every upserted item needs a non-empty string item_id")
            t0 = time.perf_counter()
            with served.lease() as v:
                build = v.model.update_catalog(pd.DataFrame(change.upsert) if change.upsert else None,
                                               change.delete or None, rebuild=change.rebuild)
            return CatalogResponse(items=build.items, new_items=build.new_items, removed_items=build.removed_items,
                                   rebuilt=build.rebuilt, seconds=round(time.perf_counter() - t0, 3),
                                   model_version=v.version)

    return app


BEARER = HTTPBearer(auto_error=False)


class AdminToken:
    """A dependency that lets a request through only with `Authorization: Bearer <token>` (constant-time)."""

    def __init__(self, token: str):
        self.token = token.encode()

    def __call__(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = (credentials.credentials if credentials else "").encode()
        if not hmac.compare_digest(given, self.token):
            raise HTTPException(401, "a valid admin bearer token is required", {"WWW-Authenticate": "Bearer"})


def _json_safe(value):
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _scored(ids, scores) -> list[ScoredItem]:
    return [ScoredItem(item_id=str(i), score=float(s), rank=r)
            for r, (i, s) in enumerate(zip(ids, np.asarray(scores, dtype=np.float64)), start=1)]


def _follow_workers(served: ServedModels, stop: threading.Event, every: float = 1.0) -> None:
    """Follow the reloads and events of the service's other processes even while no request comes."""
    while not stop.wait(every):
        served.follow_swaps()


def _follow_alias(served: ServedModels, metrics: ServiceMetrics, every: float, stop: threading.Event) -> None:
    """Swap to the version an alias points at whenever it moves (checked every `every` seconds); a version
    that failed its checks is not tried again until the alias moves on."""
    refused = None
    while not stop.wait(every):
        try:
            target = served.resolve()
            if target in (served.current.version, refused):
                continue
            _, new = served.reload()
            metrics.swapped(new.stages)
            metrics.version(new.version)
        except ReloadError as exc:
            refused = target
            metrics.reloads.labels("refused").inc()
            log.warning("following %s: %s", served.current.ref, exc)
        except Exception as exc:            # a registry briefly down: keep serving, try again later
            log.warning("following %s: %s", served.current.ref, exc)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413: by Content-Length, or for a body of unknown length
    (chunked) by reading it first, up to the limit, then handing it on."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await _too_large(send, self.limit)
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _too_large(send, self.limit)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class CloseConnection:
    """Answer with `Connection: close` (the server then closes the connection after the answer)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def closing(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail": "the request body is over {limit} bytes; send less per request"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
