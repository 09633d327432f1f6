"""The web page at `/` (plain HTML and JS shipped in the package: no build step, no CDN) and the routes it
reads beside the public ones: a user's list explained, item names and attributes, active users, and the
model view (its version, evaluation, training curves, index recall, item map)."""

from __future__ import annotations

import threading
import time
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..config import ServeConfig
from ..insight import PLOTS, model_facts, plot_svg
from .schemas import (ExplainedItemOut, ExplainRequest, ExplainResponse, ItemResponse, NamesRequest, NamesResponse,
                      Neighbour, ReasonOut, UsersResponse)
from .versions import ServedModels

STATIC = resources.files("twotower.serve") / "static"


def add_page(app: FastAPI, served: ServedModels, cfg: ServeConfig) -> None:
    """Mount the page and its routes on `app`."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    plots: dict[tuple[str, str], str] = {}           # (version, plot) -> SVG, drawn once per version
    plot_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.post("/explain", response_model=ExplainResponse, tags=["page"],
              summary="The user's list exactly as /recommend serves it, with scores and reasons")
    def explain(req: ExplainRequest) -> ExplainResponse:
        if req.k > cfg.max_k:
            raise HTTPException(422, f"k={req.k} is over the service's limit {cfg.max_k}; ask for fewer items")
        with served.lease() as v:
            found = v.model.explain(req.user_id, k=req.k, context=dict(req.context) or None,
                                    at=time.time() if req.at is None else req.at, exclude_seen=req.exclude_seen)
            ids = [i.item_id for i in found.items]
            ids += [n for i in found.items for n, _ in i.nearest_history]
            names = dict(zip(ids, v.model.item_names(ids)))
        return ExplainResponse(user_id=found.user_id, personalized=found.personalized, ranked=found.ranked,
                               model_version=v.version, items=[ExplainedItemOut(
                                   item_id=i.item_id, name=names[i.item_id], rank=i.rank, score=i.score,
                                   tower_score=i.tower_score if i.tower_score == i.tower_score else None,
                                   expected_value=i.expected_value, base=i.base, contributions=i.contributions,
                                   reasons=[ReasonOut(**vars(r)) for r in i.reasons],
                                   nearest_history=[Neighbour(item_id=n, name=names[n], similarity=s)
                                                    for n, s in i.nearest_history])
                                   for i in found.items])

    @app.post("/items/names", response_model=NamesResponse, tags=["page"], summary="Items' names for people")
    def item_names(req: NamesRequest) -> NamesResponse:
        with served.lease() as v:
            return NamesResponse(names=dict(zip(req.item_ids, v.model.item_names(req.item_ids))))

    @app.get("/users", response_model=UsersResponse, tags=["page"], summary="The most active users")
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> UsersResponse:
        with served.lease() as v:
            return UsersResponse(users=v.model.active_users(limit), model_version=v.version)

    @app.get("/model", tags=["page"], summary="The version served: what it is, how it trained, how it scored")
    def model() -> JSONResponse:
        with served.lease() as v:
            facts = model_facts(v.model.folder)
        actions = action_names(v.model.config.data.actions)
        return JSONResponse({"model_version": v.version, "ref": v.ref, "ranked": v.model.ranked,
                             "actions": [actions[w] for w in sorted(actions) if w > 0],
                             "note": v.model.note, "plots": [f"/model/plots/{name}.svg" for name in PLOTS], **facts})

    @app.get("/model/plots/{name}.svg", tags=["page"], summary="One of the model view's plots, as SVG")
    def model_plot(name: str) -> Response:
        if name not in PLOTS:
            raise HTTPException(404, f"no plot {name!r}; there are {', '.join(PLOTS)}")
        with served.lease() as v:
            key = (v.version, name)
            with plot_lock:
                if key not in plots:
                    plots[key] = plot_svg(v.model.folder, name)
        return Response(plots[key], media_type="image/svg+xml")

    @app.get("/items/{item_id:path}", response_model=ItemResponse, tags=["page"],
             summary="An item's name and readable attributes")
    def item(item_id: str) -> ItemResponse:
        with served.lease() as v:
            attributes = v.model.item(item_id)
            if attributes is None and not v.model.has_items([item_id])[0]:
                raise HTTPException(404, f"item {item_id!r} is not in the model's catalog")
            name = v.model.item_names([item_id])[0]
        return ItemResponse(item_id=item_id, name=name, attributes=attributes or {}, model_version=v.version)


def action_names(actions: dict[str, float]) -> dict[float, str]:
    """Label weight -> the first action the config names with it (click, cart, purchase by default)."""
    names: dict[float, str] = {}
    for name, weight in actions.items():
        names.setdefault(float(weight), name)
    return names
