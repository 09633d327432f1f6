import asyncio

from twotower.serve.busy_poll import BusyPoll


def polled(poll: BusyPoll, gaps: list[float], wait: float = 0.03) -> int:
    """Loop passes spent polling after requests that end `gaps` seconds apart, then `wait` seconds idle."""
    async def run():
        poll.start()
        for gap in gaps:
            await asyncio.sleep(gap)
            poll.request_done()
        before = poll.passes
        await asyncio.sleep(wait)
        await poll.stop()
        return poll.passes - before

    return asyncio.run(run())


def test_requests_close_together_keep_the_loop_polling_through_the_gap():
    assert polled(BusyPoll(0.05), [0.0, 0.001]) > 10


def test_a_request_alone_leaves_the_loop_to_sleep():
    poll = BusyPoll(0.005)
    assert polled(poll, [0.0, 0.05]) == 0          # the second ended long after the first
    assert polled(BusyPoll(0.005), [0.0]) == 0     # the first of all has nothing before it


def test_polling_ends_after_its_window():
    poll = BusyPoll(0.005)
    polled(poll, [0.0, 0.001], wait=0.05)
    assert polled(poll, [], wait=0.05) == 0        # restarted, with no new request: it sleeps


def test_off_at_zero_and_before_start():
    poll = BusyPoll(0.0)
    assert polled(poll, [0.0, 0.0]) == 0 and poll._task is None
    BusyPoll(0.01).request_done()                  # outside a loop (no lifespan): nothing to wake, no error


def test_background_work_pauses_polling():
    busy = [True]
    poll = BusyPoll(0.05, paused=lambda: busy[0])
    assert polled(poll, [0.0, 0.001]) == 0
    busy[0] = False
    assert polled(poll, [0.0, 0.001]) > 10
