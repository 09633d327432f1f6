"""An open-loop HTTP load generator: requests leave at a fixed arrival rate whatever the server does, and each
latency is measured from the moment its request was due (so a stalled server shows in the tail instead of
slowing the client down: no coordinated omission). Runs in its own process, bounded in time and count.

    python -m benchmarks.lib.load PLAN.json RESULT.json

PLAN: {"base": "http://127.0.0.1:PORT", "seconds": 30, "streams": [{"name": "recommend", "rate": 100,
"method": "POST", "path": "/recommend", "bodies": [...]} | {"paths": [...]}, ...], "timeout": 5}
RESULT: {stream name: [[due offset s, latency s, status (0: no answer), client lag s], ...], plus "versions":
{...}}. The client lag is how late the generator began the request: its own share of the latency.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class Stream:
    name: str
    rate: float
    method: str
    path: str | None = None
    paths: list[str] | None = None
    bodies: list | None = None


async def _drive(plan: dict) -> dict:
    streams = [Stream(**s) for s in plan["streams"]]
    seconds, timeout = float(plan["seconds"]), float(plan.get("timeout", 5.0))
    results: dict[str, list] = {s.name: [] for s in streams}
    versions: dict[str, int] = {}
    base = plan["base"]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as client:
        start = time.perf_counter() + 0.2
        tasks = []

        async def one(stream: Stream, i: int, due: float):
            sent = time.perf_counter()           # later than due when the generator itself fell behind
            path = stream.paths[i % len(stream.paths)] if stream.paths else stream.path
            body = stream.bodies[i % len(stream.bodies)] if stream.bodies else None
            try:
                async with client.request(stream.method, base + path, json=body) as answer:
                    status = answer.status
                    payload = await answer.read()
                if status == 200 and stream.name.startswith(("recommend", "similar")):
                    v = json.loads(payload).get("model_version", "?")
                    versions[v] = versions.get(v, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            results[stream.name].append((due - start, time.perf_counter() - due, status, sent - due))

        async def schedule(stream: Stream):
            n = int(seconds * stream.rate)
            for i in range(n):
                due = start + i / stream.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(stream, i, due)))

        await asyncio.gather(*(schedule(s) for s in streams))
        await asyncio.gather(*tasks)
    return {**results, "versions": versions}


def run(plan: dict) -> dict:
    """Drive `plan` on uvloop (the service's own loop, installed with uvicorn): less of the generator's own
    time in each measured latency than asyncio's loop."""
    import uvloop

    return uvloop.run(_drive(plan))


if __name__ == "__main__":
    plan_path, result_path = sys.argv[1:3]
    with open(plan_path) as fh:
        outcome = run(json.load(fh))
    with open(result_path, "w") as fh:
        json.dump(outcome, fh)
