"""Dynamic batching for /recommend: requests that arrive while the model is busy are answered together by one
`Model.recommend` call, whose cost grows far slower than the number of users in it. Under light load a
request runs alone at once; under heavy load batches grow by themselves and throughput keeps up instead of
requests queueing one by one behind the interpreter lock."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .versions import ServedModels

log = logging.getLogger("twotower.serve")


@dataclass
class Ask:
    """One /recommend request as the batcher needs it."""

    user_id: str
    k: int
    at: float | str
    context: dict = field(default_factory=dict)
    exclude: frozenset = frozenset()
    exclude_seen: bool | None = None
    rank: bool = True


@dataclass
class Answer:
    item_ids: np.ndarray         # best first, at most k
    scores: np.ndarray
    personalized: bool
    version: str


class Overloaded(Exception):
    """A request waited longer than the service's queue deadline: answered 503 instead of late."""


class RecommendBatcher:
    """`submit` an `Ask`, get a Future of its `Answer`. `workers` threads each take every request waiting
    (up to `max_batch`) and answer them with one call per group of compatible requests (a user asked twice
    is two rows of that call)."""

    def __init__(self, served: ServedModels, max_batch: int = 64, workers: int = 1, deadline_s: float = 2.0):
        self.served, self.max_batch, self.deadline_s = served, max_batch, deadline_s
        self._queue: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"twotower-batch-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, ask: Ask) -> Future:
        future: Future = Future()
        self._queue.put((ask, future, time.monotonic()))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            waiting = [first]
            while len(waiting) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)          # for this thread's next turn
                    break
                waiting.append(more)
            now, batch = time.monotonic(), []
            for ask, future, queued in waiting:    # shed what waited too long: its client has likely gone
                if now - queued > self.deadline_s:
                    future.set_exception(Overloaded(f"waited {now - queued:.1f}s for the model"))
                else:
                    batch.append((ask, future))
            for group in _groups(batch):
                self._answer(group)

    def _answer(self, group: list[tuple[Ask, Future]]) -> None:
        try:
            answers = self._call([a for a, _ in group])
        except InputError as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
                return
            for one in group:                      # one bad request must not fail the others: alone, each
                self._answer([one])
            return
        except Exception as exc:                   # reported to its requests (a 500 names it), never lost
            log.exception("recommend batch failed")
            for _, future in group:
                future.set_exception(exc)
            return
        for (_, future), answer in zip(group, answers):
            future.set_result(answer)

    def _call(self, asks: list[Ask]) -> list[Answer]:
        first = asks[0]
        users = [a.user_id for a in asks]
        width = max(a.k + len(a.exclude) for a in asks)
        context = {c: [a.context.get(c) for a in asks] for c in first.context} or None
        with self.served.lease() as v:
            lists = v.model.recommend_each(users, k=width, context=context, at=[a.at for a in asks],
                                           exclude_seen=first.exclude_seen, rank=first.rank)
            known = v.model.knows(users)
        out = []
        for a, (item_ids, scores), personal in zip(asks, lists, known):
            if a.exclude:
                kept = ~np.isin(item_ids, list(a.exclude))
                item_ids, scores = item_ids[kept], scores[kept]
            out.append(Answer(item_ids[:a.k], scores[:a.k], bool(personal), v.version))
        return out


def _groups(batch: list[tuple[Ask, Future]]) -> list[list[tuple[Ask, Future]]]:
    """Requests one call can answer together: the same options and context columns."""
    groups: dict[tuple, list] = {}
    for ask, future in batch:
        groups.setdefault((ask.rank, ask.exclude_seen, tuple(sorted(ask.context))), []).append((ask, future))
    return list(groups.values())
