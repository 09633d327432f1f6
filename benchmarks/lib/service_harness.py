"""The service under failure, from outside: `twotower serve` in a child process on loopback, and the scenarios
the failure tests (short, in CI) and `benchmarks/failures.py` (full) run against it. Each returns its figures."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

EVENTS_FILE = "events.sqlite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`twotower serve --model MODEL --state STATE` in a child process on a free loopback port."""

    def __init__(self, model: Path, state: Path, token: str | None = None, port: int | None = None,
                 config: Path | None = None, workers: int = 1):
        self.model, self.state, self.token, self.config = Path(model), Path(state), token, config
        self.workers = workers
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        env = {**os.environ, **({"TWOTOWER_ADMIN_TOKEN": self.token} if self.token else {})}
        self._log = open(self.state / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", "--model", str(self.model),
                                      "--port", str(self.port), "--state", str(self.state), "--threads", "1",
                                      "--workers", str(self.workers),
                                      *(["--config", str(self.config)] if self.config else [])],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds until /readyz answers 200."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}: "
                                   f"{(self.state / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the service did not become ready")

    def cpu_seconds(self) -> float:
        """CPU seconds (user and system) the service's processes have used so far, its workers included."""
        root = psutil.Process(self.proc.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def kill(self) -> None:
        """SIGKILL to the service and its worker processes: no shutdown, no flush."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._log.close()

    def reload(self, model: Path) -> httpx.Response:
        return httpx.post(f"{self.base}/admin/reload", json={"model": str(model)},
                          headers={"Authorization": f"Bearer {self.token}"}, timeout=600)


@dataclass
class CrashRound:
    sent: int
    acknowledged: int
    missing: int                  # acknowledged but not in the log after the restart
    duplicated: int               # stored more than once after the client's retries
    stored: int                   # distinct events in the log after the retries (all of them: `sent`)
    applied_gap: int              # the online store's event count minus what it should hold (0: each applied once)
    integrity: str                # SQLite's integrity check of the event log and the online store
    ready_s: float


def crash_while_ingesting(model: Path, state: Path, users: list[str], items: list[str], events: int = 10_000,
                          rate: float = 500.0, kills: int = 5, seed: int = 0, log=print) -> list[CrashRound]:
    """Send `events` events at `rate`/s from 8 client threads while the server is SIGKILLed at a random moment,
    `kills` times; after each restart the client retries every event it has no acknowledgement for (the same
    event_id), then the log is checked: every acknowledged event present once."""
    rng = random.Random(seed)
    service = Service(model, state)
    service.start().wait_ready()
    rounds = []
    online = model / "features" / "online.sqlite"
    try:
        for round_no in range(kills):
            before = user_event_total(online)
            batch = [{"user_id": rng.choice(users), "item_id": rng.choice(items), "action": "click",
                      "event_id": f"r{round_no}-e{i}"} for i in range(events)]
            acked: set[str] = set()
            lock = threading.Lock()
            start = time.perf_counter()

            def send(part: list[dict], offset: int):
                with httpx.Client(base_url=service.base, timeout=5) as client:
                    for j, event in enumerate(part):
                        due = start + (offset + j * 8) / rate
                        time.sleep(max(0.0, due - time.perf_counter()))
                        try:
                            if client.post("/events", json=event).status_code == 200:
                                with lock:
                                    acked.add(event["event_id"])
                        except httpx.HTTPError:
                            pass                                     # no answer: retried after the restart

            threads = [threading.Thread(target=send, args=(batch[t::8], t)) for t in range(8)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 0.8) * events / rate)
            service.kill()
            for t in threads:
                t.join()
            service.start()
            ready = service.wait_ready()
            with httpx.Client(base_url=service.base, timeout=30) as client:
                unacked = [e for e in batch if e["event_id"] not in acked]
                for lo in range(0, len(unacked), 500):                # the client's retries
                    answer = client.post("/events", json=unacked[lo:lo + 500])
                    answer.raise_for_status()
            counts = logged_event_ids(state / EVENTS_FILE, f"r{round_no}-")
            missing = sum(1 for e in acked if counts.get(e, 0) == 0)
            duplicated = sum(1 for c in counts.values() if c > 1)
            integrity = integrity_check(state / EVENTS_FILE, online)
            gap = user_event_total(online) - before - len(counts)
            rounds.append(CrashRound(len(batch), len(acked), missing, duplicated, len(counts), gap, integrity, ready))
            log(f"kill {round_no + 1}: {len(acked):,} of {len(batch):,} acknowledged before the kill, {missing} "
                f"of them missing; after retries {len(counts):,} stored, {duplicated} duplicated, online store "
                f"off by {gap}; integrity {integrity}; ready again in {ready:.1f}s")
    finally:
        service.stop()
    return rounds


def logged_event_ids(path: Path, prefix: str) -> dict[str, int]:
    """{event_id: times stored} for the ids with this prefix, read from the service's log file."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event_id, count(*) FROM events WHERE event_id LIKE ? GROUP BY event_id",
                          (prefix + "%",)).fetchall()
    return dict(rows)


def user_event_total(online: Path) -> int:
    """The online store's count of applied positive events (summed over users)."""
    with sqlite3.connect(online) as db:
        return int(db.execute("SELECT coalesce(sum(n), 0) FROM user_totals").fetchone()[0])


def integrity_check(*paths: Path) -> str:
    """'ok' when every existing SQLite file passes PRAGMA integrity_check, else the first complaint."""
    for path in paths:
        if not path.is_file():
            continue
        with sqlite3.connect(path) as db:
            answer = db.execute("PRAGMA integrity_check").fetchone()[0]
        if answer != "ok":
            return f"{path.name}: {answer}"
    return "ok"


@dataclass
class SwapOutcome:
    requests: int
    non_2xx: int
    p99_steady_ms: float
    p99_swap_ms: float
    versions: dict = field(default_factory=dict)
    reloads: list = field(default_factory=list)


def hot_swap(service: Service, targets: list[Path], users: list[str], rate: float = 100.0, seconds: float = 60.0,
             work: Path | None = None, timeout: float = 5.0, cpus: set[int] | None = None) -> SwapOutcome:
    """/recommend at `rate` for `seconds` while the service swaps to each of `targets` at even intervals;
    a request without an answer within `timeout` seconds counts as failed. With `work` the load generator runs
    in its own process (on `cpus` when given), else in this one."""
    from .load import run

    plan = {"base": service.base, "seconds": seconds, "timeout": timeout, "streams": [
        {"name": "recommend", "rate": rate, "method": "POST", "path": "/recommend",
         "bodies": [{"user_id": u, "k": 10} for u in users]}]}
    reloads = []
    times = [seconds * (i + 1) / (len(targets) + 1) for i in range(len(targets))]

    def swap():
        t0 = time.perf_counter()
        for when, target in zip(times, targets):
            time.sleep(max(0.0, t0 + 0.2 + when - time.perf_counter()))
            r0 = time.perf_counter()
            answer = service.reload(target)
            reloads.append((answer.status_code, r0 - t0 - 0.2, time.perf_counter() - r0))

    thread = threading.Thread(target=swap)
    thread.start()
    result = drive(plan, work, cpus=cpus) if work is not None else run(plan)
    thread.join()
    samples = np.array(result["recommend"])
    during = np.zeros(len(samples), bool)
    for _, at, took in reloads:
        during |= (samples[:, 0] >= at) & (samples[:, 0] <= at + took + 1.0)
    lat = samples[:, 1] * 1000
    ok = (samples[:, 2] >= 200) & (samples[:, 2] < 300)
    def p99(values: np.ndarray) -> float:
        return float(np.percentile(values, 99)) if len(values) else float("nan")

    return SwapOutcome(len(samples), int((~ok).sum()), p99(lat[~during]), p99(lat[during]), result["versions"],
                       reloads)


def drive(plan: dict, work: Path, during=None, cpus: set[int] | None = None) -> dict:
    """The load generator (`load.py`) in its own process, so it shares no interpreter lock with anything here;
    `during(t0)` runs here meanwhile (a benchmark's reloads). With `cpus` it runs on those cores only (set
    before its imports end, so before its first request)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(plan))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.lib.load", str(work / "plan.json"),
                             str(work / "result.json")], cwd=root)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    if during is not None:
        during(time.perf_counter())
    if proc.wait() != 0:
        raise RuntimeError("the load generator failed")
    return json.loads((work / "result.json").read_text())


def read_your_writes(base: str, users: list[str], items: list[str], probes: int = 1000, seed: int = 0) -> int:
    """POST an event then /recommend for the same user, `probes` times: how many answers did not reflect it
    (the item the user just bought still recommended, or the user's history without the event)."""
    rng = random.Random(seed)
    misses = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(probes):
            user = rng.choice(users)
            top = client.post("/recommend", json={"user_id": user, "k": 1}).json()["items"]
            item = top[0]["item_id"] if top else rng.choice(items)
            client.post("/events", json={"user_id": user, "item_id": item, "action": "purchase",
                                         "event_id": f"ryw-{seed}-{i}"}).raise_for_status()
            after = client.post("/recommend", json={"user_id": user, "k": 10}).json()["items"]
            last = client.get(f"/users/{user}/history", params={"limit": 1}).json()["events"]
            if item in {r["item_id"] for r in after} or not last or last[0]["event_id"] != f"ryw-{seed}-{i}":
                misses += 1
    return misses


@dataclass
class CatalogChurn:
    reads: int                    # answered reads (/recommend and /similar)
    server_errors: int            # 5xx or no answer
    unknown_ids: int              # answers naming an item the catalog never held
    deleted_after_ack: int        # answers that began after an item's delete was acknowledged and still held it
    changes: list = field(default_factory=list)   # (what, status, seconds)


def catalog_churn(service: Service, token: str, users: list[str], items: list[str], new_items: list[dict],
                  delete: list[str], readers: int = 3) -> CatalogChurn:
    """Readers ask /recommend and /similar without pause while the admin upserts `new_items` (rows of the items
    table), deletes `delete` one request at a time, then rebuilds the index."""
    auth = {"Authorization": f"Bearer {token}"}
    answers, errors, stop = [], [], threading.Event()
    probe = next(i for i in reversed(items) if i not in delete)

    def read(user: str) -> None:
        with httpx.Client(base_url=service.base, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    got = [client.post("/recommend", json={"user_id": user, "k": 10}),
                           client.get(f"/items/{probe}/similar", params={"k": 10})]
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                for answer in got:
                    if answer.status_code >= 500:
                        errors.append(answer.text)
                    elif answer.status_code == 200:
                        answers.append((started, {i["item_id"] for i in answer.json()["items"]}))

    threads = [threading.Thread(target=read, args=(u,)) for u in [*users[:readers - 1], "a-stranger"]]
    for t in threads:
        t.start()
    changes, deleted = [], {}
    try:
        with httpx.Client(base_url=service.base, timeout=600, headers=auth) as admin:
            def change(what: str, body: dict) -> int:
                t0 = time.perf_counter()
                status = admin.post("/admin/catalog", json=body).status_code
                changes.append((what, status, round(time.perf_counter() - t0, 2)))
                return status
            if new_items:
                change(f"upsert {len(new_items)}", {"upsert": new_items})
            for item in delete:
                if change(f"delete {item}", {"delete": [item]}) == 200:
                    deleted[item] = time.monotonic()
            change("rebuild", {"rebuild": True})
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    valid = set(items) | {r["item_id"] for r in new_items}
    return CatalogChurn(len(answers), len(errors), sum(len(ids - valid) for _, ids in answers),
                        sum(1 for started, ids in answers for item, at in deleted.items()
                            if started > at and item in ids),
                        changes)
