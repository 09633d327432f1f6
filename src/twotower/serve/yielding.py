"""Background work that leaves the interpreter to the requests: while a version loads beside the one being
served, both need the interpreter lock, and a load that takes it half the time for seconds leaves the service
behind its requests (at 100/s a request needs it ~70% of the time). `yielding(share)` makes the calling
thread sleep after each slice of work so that it holds the lock about `share` of the time."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

SLICE_S = 0.002          # work between pauses


@contextmanager
def yielding(share: float = 0.25):
    """Run the block at about `share` of the interpreter while it is busy elsewhere; a long call in C (reading
    a file, an index) is not cut, only what follows it waits. The block's own results are unchanged."""
    if not 0 < share < 1:
        yield
        return
    rest = (1 - share) / share               # seconds of pause per second of work
    started = [time.perf_counter()]

    def hook(_frame, event, _arg):
        if event in ("call", "c_return"):
            worked = time.perf_counter() - started[0]
            if worked > SLICE_S:
                sys.setprofile(None)         # the sleep is no call to count
                time.sleep(worked * rest)    # a long call in C is paid for after it
                started[0] = time.perf_counter()
                sys.setprofile(hook)

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(previous)
