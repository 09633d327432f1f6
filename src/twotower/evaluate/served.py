"""The protocol's test requests answered by the serving path itself (`serving.Server`, as `recommend` and
the service answer them): each held-out event is a request at its own time, its list is the top 20 that
would be served, and the metrics are those of the lists. A target outside the list is a miss.

Like a batch `recommend`, a served request carries its time but not the log's own context columns (device,
page, ...): the served path does not take them yet, so on logs with such columns the served rows see less
than the towers were trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..serving import Server
from .metrics import KS, list_ranks, summarize
from .protocol import EvalSet


def served_metrics(model_dir: str | Path, test: EvalSet, rerank: bool = True, batch: int = 512,
                   order: str | None = None) -> tuple[dict[str, float], np.ndarray]:
    """(HR/NDCG/MRR at 5/10/20 and coverage@10, [n] each target's 0-based place in its list or inf) of what
    the model in `model_dir` (trained on `test.history`) serves to each test request at the request's time,
    features read as of then (the offline store). `order` serves the candidates in another order than the
    model's (see `Server.open`)."""
    t = test.targets
    vocab = test.history.items
    server = Server.open(model_dir, rerank=rerank, point_in_time=True, order=order)
    ranks, tops = [], []
    try:
        for lo in range(0, len(t), batch):
            sl = slice(lo, lo + batch)
            top = server.top_k(t.users[sl], max(KS), at=None if t.times is None else t.times[sl])
            codes = np.where(top.ids == None, 0, vocab.encode(top.ids.ravel()).reshape(top.ids.shape))  # noqa: E711
            ranks.append(list_ranks(codes, t.items[sl]))
            tops.append(codes[:, :10])
    finally:
        server.close()
    ranks = np.concatenate(ranks)
    return summarize(ranks, np.concatenate(tops), len(vocab)), ranks
