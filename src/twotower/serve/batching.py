"""Dynamic batching for /recommend: requests that arrive while the model is busy are answered together by one
`Model.recommend` call, whose cost grows far slower than the number of users in it. Under light load a
request runs alone at once; under heavy load batches grow by themselves and throughput keeps up instead of
requests queueing one by one behind the interpreter lock.

Two ways to run the calls. `LoopBatcher` (the default) answers on the event loop itself: the model's work
holds the interpreter lock almost throughout, so a second thread buys no overlap, only lock hand-offs (a
thread waiting for the lock waits up to the interpreter's 5 ms switch interval) and a wake-up per request.
`RecommendBatcher` answers in worker threads, for models whose calls mostly release the lock."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
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


class Batches:
    """What both batchers share: shed what waited past the deadline, then answer the rest with one model call
    per group of compatible requests (a user asked twice is two rows of that call). Futures are a thread's
    (`concurrent.futures`) or the loop's (`asyncio`): both are settled the same way."""

    def __init__(self, served: ServedModels, max_batch: int = 64, deadline_s: float = 2.0):
        self.served, self.max_batch, self.deadline_s = served, max_batch, deadline_s

    def answer_all(self, waiting: list[tuple[Ask, Future, float]]) -> None:
        """Answer `waiting` ([(ask, future, when it was queued by time.monotonic)])."""
        now, batch = time.monotonic(), []
        for ask, future, queued in waiting:        # shed what waited too long: its client has likely gone
            if now - queued > self.deadline_s:
                _settle(future, error=Overloaded(f"waited {now - queued:.1f}s for the model"))
            else:
                batch.append((ask, future))
        for group in _groups(batch):
            self._answer(group)

    def _answer(self, group: list[tuple[Ask, Future]]) -> None:
        try:
            answers = self._call([a for a, _ in group])
        except InputError as exc:
            if len(group) == 1:
                _settle(group[0][1], error=exc)
                return
            for one in group:                      # one bad request must not fail the others: alone, each
                self._answer([one])
            return
        except Exception as exc:                   # reported to its requests (a 500 names it), never lost
            log.exception("recommend batch failed")
            for _, future in group:
                _settle(future, error=exc)
            return
        for (_, future), answer in zip(group, answers):
            _settle(future, answer)

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


class LoopBatcher(Batches):
    """`await ask(Ask)` for its `Answer`, answered on the running event loop: the requests that arrived while
    it was busy wait their turn in a list and are answered by the next call, together."""

    def __init__(self, served: ServedModels, max_batch: int = 64, deadline_s: float = 2.0):
        super().__init__(served, max_batch, deadline_s)
        self._waiting: list[tuple[Ask, asyncio.Future, float]] = []
        self._scheduled = False

    async def ask(self, ask: Ask) -> Answer:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((ask, future, time.monotonic()))
        if not self._scheduled:                  # after the requests that are ready now have joined the list
            self._scheduled = True
            loop.call_soon(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        self._scheduled = bool(self._waiting)
        if self._scheduled:
            loop.call_soon(self._drain, loop)
        self.answer_all(batch)

    def close(self) -> None:
        for _, future, _ in self._waiting:
            future.cancel()
        self._waiting = []


class RecommendBatcher(Batches):
    """`submit` an `Ask`, get a Future of its `Answer`. `workers` threads each take every request waiting
    (up to `max_batch`) and answer them together."""

    def __init__(self, served: ServedModels, max_batch: int = 64, workers: int = 1, deadline_s: float = 2.0):
        super().__init__(served, max_batch, deadline_s)
        self._queue: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"twotower-batch-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, ask: Ask) -> Future:
        future: Future = Future()
        self._queue.put((ask, future, time.monotonic()))
        return future

    async def ask(self, ask: Ask) -> Answer:
        # awaited, not waited for in a pool thread: every request reaches the queue (and its deadline) at once
        return await asyncio.wrap_future(self.submit(ask))

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
            self.answer_all(waiting)


def batcher(served: ServedModels, max_batch: int, workers: int, deadline_s: float) -> LoopBatcher | RecommendBatcher:
    """The event loop's batcher for `workers` = 0, else one with that many threads."""
    if workers == 0:
        return LoopBatcher(served, max_batch, deadline_s)
    return RecommendBatcher(served, max_batch, workers, deadline_s)


def _settle(future, answer: Answer | None = None, error: Exception | None = None) -> None:
    """Give a future its answer or error, unless it is already done (its request was cancelled: a client
    that went away must not take the batcher down with it)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(answer)
    except (asyncio.InvalidStateError, InvalidStateError):
        pass


def _groups(batch: list[tuple[Ask, Future]]) -> list[list[tuple[Ask, Future]]]:
    """Requests one call can answer together: the same options and context columns."""
    groups: dict[tuple, list] = {}
    for ask, future in batch:
        groups.setdefault((ask.rank, ask.exclude_seen, tuple(sorted(ask.context))), []).append((ask, future))
    return list(groups.values())
