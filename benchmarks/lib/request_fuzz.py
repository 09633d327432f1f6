"""Random requests shaped by the service's schema (hypothesis strategies): the field names the routes know,
mixed with unknown ones, and values of every JSON type. Shared by the CI fuzz test (through FastAPI's test
client, 300 examples) and `benchmarks/failures.py` (over real HTTP, 10,000 requests)."""

from __future__ import annotations

import string
from collections import Counter
from typing import Callable

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ids = st.text(string.ascii_letters + string.digits + "-_ /%?#é", max_size=12)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                           | st.floats(allow_nan=False, allow_infinity=False) | ids,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ids, inner, max_size=4),
                           max_leaves=12)
fields = ["user_id", "item_id", "k", "context", "exclude_seen", "exclude", "at", "rank", "action", "timestamp",
          "event_id", "query", "model"]
bodies = st.dictionaries(st.sampled_from(fields) | ids, json_values, max_size=6) | json_values
routes = st.sampled_from(["/recommend", "/events", "/search"])
limits = st.integers(-5, 10**6) | ids

REQUESTS_PER_EXAMPLE = 4


def exchange(client, route: str, body, item: str, user: str, k) -> list[int]:
    """One example's four requests (a body to a POST route and to /search, similar items, a history); their
    statuses."""
    return [client.post(route, json=body).status_code, client.post("/search", json=body).status_code,
            client.get(f"/items/{item}/similar", params={"k": k}).status_code,
            client.get(f"/users/{user}/history", params={"limit": k}).status_code]


def fuzz_service(base: str, requests: int, seed: int = 0, alive: Callable[[], bool] = lambda: True) -> Counter:
    """Send about `requests` generated requests to a running service; a Counter of status classes ("2xx",
    "4xx", "5xx", and "dead" when `alive()` turned false)."""
    seen: Counter = Counter()

    @settings(max_examples=max(1, requests // REQUESTS_PER_EXAMPLE), deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(route=routes, body=bodies, item=ids, user=ids, k=limits)
    def run(route, body, item, user, k):
        for status in exchange(client, route, body, item, user, k):
            seen[f"{status // 100}xx"] += 1
        if not alive():
            seen["dead"] += 1

    with httpx.Client(base_url=base, timeout=30) as client:
        run()
    return seen
