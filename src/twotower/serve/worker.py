"""One process of `twotower serve`: its settings, the threads its calls may use, and the app. With `--workers
N` uvicorn starts N processes and calls `app()` in each; they share the event log (each applies the others'
events before a read: `Model.sync`) and follow each other's reloads (`ServedModels` records them in the
state folder)."""

from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass

SETTINGS = "TWOTOWER_SERVE_WORKER"


@dataclass
class WorkerSettings:
    model: str
    events: str | None
    config: str | None
    rank: bool = True
    threads: int = 1


@contextmanager
def collector_paused():
    """Start without the cyclic garbage collector: importing the libraries and opening the first version make
    objects by the million that live as long as the process, and the collector walks them again and again as
    they grow (1.9 s of an 8.8 s start, measured on the MovieLens-100K model). At the end they leave it for
    good (`gc.freeze`, as a version does when it opens); the few cycles start-up made and dropped stay."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def limit_threads(n: int) -> None:
    """Torch, FAISS and BLAS use `n` threads each (a service runs requests side by side instead)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(n)


def served(settings: WorkerSettings):
    """The versions this process answers from."""
    from ..config import load_config
    from .versions import ServedModels

    cfg = load_config(settings.config)
    limit_threads(settings.threads)
    return ServedModels(settings.model, cfg.registry, settings.events, rank=settings.rank,
                        reload_share=cfg.serve.reload_share, warm_users=cfg.serve.warm_users), cfg


def app():
    """The app of one worker, from the settings its parent put in the environment."""
    with collector_paused():
        from .app import create_app

        versions, cfg = served(WorkerSettings(**json.loads(os.environ[SETTINGS])))
        return create_app(versions, cfg.serve, one_request_per_connection=True)


def environment(settings: WorkerSettings) -> None:
    """Hand the settings to the worker processes uvicorn starts."""
    os.environ[SETTINGS] = json.dumps(asdict(settings))
