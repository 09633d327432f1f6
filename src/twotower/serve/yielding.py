"""Background work that leaves the interpreter to the requests: while a version loads beside the one being
served, both need the interpreter lock, and a load that takes it half the time for seconds leaves the service
behind its requests (at 100/s a request needs it ~70% of the time). `yielding(share)` makes the calling
thread sleep after each slice of work so that it holds the lock about `share` of the time."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

SLICE_S = 0.002          # seconds between pauses
PAUSE_MAX_S = 0.05       # the longest pause: enough for the requests that queued to be answered

_running = [0]           # blocks under way in any thread
_running_lock = threading.Lock()


def running() -> bool:
    """Whether background work is under way (a version loading or closing): it needs the interpreter in the
    requests' idle gaps, so the event loop should not hold them (`busy_poll`)."""
    return _running[0] > 0


@contextmanager
def _counted():
    with _running_lock:
        _running[0] += 1
    try:
        yield
    finally:
        with _running_lock:
            _running[0] -= 1


@contextmanager
def yielding(share: float = 0.2):
    """Run the block at about `share` of the interpreter while it is busy elsewhere; a long call in C (reading
    a file, an index) is not cut, only what follows it waits. The block's own results are unchanged."""
    if not 0 < share < 1:
        with _counted():
            yield
        return
    rest = (1 - share) / share               # seconds of pause per second of work
    # a slice ends by the clock (cheap to read at every call); it is paid for by this thread's CPU in it
    # (dearer to read, once a slice): waiting for a file or for the lock is no work
    started = [time.perf_counter(), time.thread_time()]

    def hook(_frame, event, _arg):
        if event in ("call", "c_return") and time.perf_counter() - started[0] > SLICE_S:
            sys.setprofile(None)             # the sleep is no call to count
            # a long call in C is paid for after it, up to a bound: it may have left the lock (reading an index)
            time.sleep(min((time.thread_time() - started[1]) * rest, PAUSE_MAX_S))
            started[:] = time.perf_counter(), time.thread_time()
            sys.setprofile(hook)

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        with _counted():
            yield
    finally:
        sys.setprofile(previous)
