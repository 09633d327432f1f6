"""Busy polling: for a short window after each request, the event loop keeps polling its sockets instead of
sleeping in the kernel until the next one arrives. A core that sleeps, even for 10 ms, comes back with its
caches cold (on a shared virtual machine, another guest may have run on it meanwhile), and the next request
costs ~25-40% more CPU (`benchmarks/serve.py`'s alone rows against its loaded ones). Polling costs at most
CPU, so it is done only while requests come close together (the last two ended within twice the window): a
request alone leaves the loop to sleep as before, and a busy service polls through its short gaps."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class BusyPoll:
    """Keeps the loop awake for `seconds` after each request that ended within `2 * seconds` of the one before,
    unless `paused()` (background work that needs the interpreter in the requests' gaps: a reload).
    `start`/`stop` run on the serving loop (the app's lifespan); `middleware` marks every request's end. With
    `seconds` 0 it does nothing."""

    def __init__(self, seconds: float, paused: Callable[[], bool] = lambda: False):
        self.seconds, self.paused = seconds, paused
        self._until = self._last_done = 0.0
        self.passes = 0                          # loop passes spent polling (what the tests and a profile read)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        poll = self

        class Middleware:
            """Marks the end of each HTTP request: the window starts there."""

            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                try:
                    await self.app(scope, receive, send)
                finally:
                    if scope["type"] == "http":
                        poll.request_done()

        self.middleware = Middleware

    def start(self) -> None:
        if self.seconds > 0 and self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="twotower-busy-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = self._wake = None

    def request_done(self) -> None:
        """Poll until `seconds` from now if the last request ended close before this one (the loop's thread
        only: asyncio.Event is not thread-safe)."""
        if self._wake is None:
            return
        now = time.perf_counter()
        if now - self._last_done <= 2 * self.seconds:
            self._until = now + self.seconds
            self._wake.set()
        self._last_done = now

    async def _poll(self) -> None:
        while True:
            await self._wake.wait()              # idle: the loop sleeps until a request ends
            self._wake.clear()
            while time.perf_counter() < self._until and not self.paused():
                await asyncio.sleep(0)           # one pass of the loop: its sockets polled without a wait
                self.passes += 1
