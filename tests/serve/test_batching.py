"""Requests answered together get exactly what each would get alone; one bad request fails only itself."""

from __future__ import annotations

import shutil
from concurrent.futures import Future

import pytest

from twotower.errors import InputError
from twotower.serve.batching import Ask, RecommendBatcher, _groups
from twotower.serve.versions import ServedModels


@pytest.fixture()
def served(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model[0], tmp_path / "model")
    served = ServedModels(str(folder), events=tmp_path / "events.sqlite")
    yield served
    served.close()


def test_a_batch_answers_each_request_as_it_would_be_answered_alone(served):
    batcher = RecommendBatcher(served, workers=1)
    try:
        asks = [Ask("u001", 5, 1_700_100_000.0), Ask("u002", 3, 1_700_200_000.0, exclude=frozenset({"i001"})),
                Ask("stranger", 4, 1_700_300_000.0), Ask("u003", 6, "2023-11-20T10:00:00"),
                Ask("u001", 2, 1_800_000_000.0, rank=True)]                     # the same user again
        together = batcher._call(asks)
        for ask, answer in zip(asks, together):
            alone = batcher._call([ask])[0]
            assert answer.item_ids.tolist() == alone.item_ids.tolist()
            assert answer.scores.tolist() == pytest.approx(alone.scores.tolist())
            assert answer.personalized == alone.personalized and len(answer.item_ids) == ask.k
        assert not together[2].personalized and "i001" not in together[1].item_ids.tolist()
    finally:
        batcher.close()


def test_groups_keep_options_apart():
    f = Future
    batch = [(Ask("a", 1, 0.0), f()), (Ask("a", 1, 1.0), f()), (Ask("b", 1, 0.0, rank=False), f()),
             (Ask("c", 1, 0.0), f()), (Ask("d", 1, 0.0, context={"device": "x"}), f())]
    groups = [[ask.user_id for ask, _ in g] for g in _groups(batch)]
    assert sorted(groups) == sorted([["a", "a", "c"], ["b"], ["d"]])


def test_one_bad_request_fails_alone(served):
    batcher = RecommendBatcher(served, workers=1)
    try:
        good, bad = (Ask("u001", 3, 1_700_100_000.0, context={"colour": "x"}),
                     Ask("u002", 3, 1_700_100_000.0, context={"colour": "y"}))
        futures = [(good, Future()), (bad, Future())]
        batcher._answer(futures)            # the tiny log has no context column: both are refused alone
        for _, future in futures:
            assert isinstance(future.exception(), InputError)
        ok = [(Ask("u001", 3, 1_700_100_000.0), Future()), (Ask("u002", 3, "not a time"), Future())]
        batcher._answer(ok)
        assert len(ok[0][1].result().item_ids) == 3 and isinstance(ok[1][1].exception(), InputError)
    finally:
        batcher.close()


def test_a_request_that_waited_past_the_deadline_is_shed(served):
    from twotower.serve.batching import Overloaded

    batcher = RecommendBatcher(served, workers=1, deadline_s=0.05)
    try:
        late = Future()
        batcher._queue.put((Ask("u001", 3, 1_700_100_000.0), late, 0.0))       # queued long ago
        assert isinstance(late.exception(timeout=30), Overloaded)
        fresh = batcher.submit(Ask("u001", 3, 1_700_100_000.0))
        assert len(fresh.result(timeout=30).item_ids) == 3
    finally:
        batcher.close()


def test_events_from_many_requests_at_once_are_each_stored_once(served):
    import threading

    results, errors = {}, []

    def send(i: int):
        try:
            results[i] = served.ingest([{"user_id": f"u{i % 7:03d}", "item_id": f"i{i % 30:03d}",
                                         "event_id": f"e{i % 50}"}])          # ids 0-49 sent twice each
        except Exception as exc:              # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sum(results.values()) == 50 and set(results.values()) <= {0, 1}
    with pytest.raises(InputError):
        served.ingest([{"user_id": "u001", "item_id": "i001", "action": "teleport"}])
    assert served.ingest([{"user_id": "u001", "item_id": "i001", "event_id": "after-a-bad-one"}]) == 1


def test_the_loop_batcher_answers_requests_that_arrive_together_in_one_call(served):
    import asyncio

    from twotower.serve.batching import LoopBatcher

    batcher = LoopBatcher(served)
    calls = []
    call = batcher._call
    batcher._call = lambda asks: calls.append(len(asks)) or call(asks)
    asks = [Ask("u001", 5, 1_700_100_000.0), Ask("u002", 3, 1_700_200_000.0), Ask("stranger", 4, 1_700_300_000.0)]

    async def together():
        return await asyncio.gather(*(batcher.ask(a) for a in asks))

    answers = asyncio.run(together())
    assert calls == [3]
    for ask, answer in zip(asks, answers):
        alone = call([ask])[0]
        assert answer.item_ids.tolist() == alone.item_ids.tolist() and len(answer.item_ids) == ask.k


def test_a_cancelled_request_does_not_stop_the_batchers(served):
    import asyncio

    from twotower.serve.batching import LoopBatcher

    async def cancel_one_then_ask(batcher):
        gone = asyncio.ensure_future(batcher.ask(Ask("u001", 3, 1_700_100_000.0)))
        await asyncio.sleep(0)                 # queued, not answered yet
        gone.cancel()
        kept = await batcher.ask(Ask("u002", 3, 1_700_100_000.0))
        return gone.cancelled(), kept

    threads = RecommendBatcher(served, workers=1)
    try:
        for batcher in (LoopBatcher(served), threads):
            cancelled, kept = asyncio.run(cancel_one_then_ask(batcher))
            assert cancelled and len(kept.item_ids) == 3
        late = Future()
        late.cancel()                          # a thread's future cancelled before its answer is set
        threads._answer([(Ask("u001", 3, 1_700_100_000.0), late)])
        assert threads.submit(Ask("u003", 2, 1_700_100_000.0)).result(timeout=30).item_ids.size == 2
    finally:
        threads.close()


def test_events_on_the_loop_never_wait_for_another_write(served):
    event = [{"user_id": "u001", "item_id": "i002", "event_id": "loop-1"}]
    with served._write:                        # a reload's catch-up or a catalog change under way
        assert served.ingest_now(event) is None
    assert served.ingest_now(event) == 1 and served.ingest_now(event) == 0          # stored once
    with pytest.raises(InputError):
        served.ingest_now([{"user_id": "u001", "item_id": "i001", "action": "teleport"}])
