"""The model version a service answers from, and the swap to another: the new version is opened beside the old,
checked (its files, its dimension, a probe query), brought up to date with the service's event log, then
swapped in one assignment. A request holds the version it started with to the end (a lease); the old version
is closed when its last request finishes, in a thread of its own. A failed load leaves the old version
serving."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..api import Model, model_folder
from ..atomic import atomic_path
from ..config import RegistryConfig
from ..errors import InputError
from ..search import SEARCH_DIR
from .yielding import yielding

EVENTS_FILE = "events.sqlite"
SWAPS_FILE = "serving.json"          # beside the event log: the version the service's processes should serve
log = logging.getLogger("twotower.serve")


class ReloadError(Exception):
    """A version that could not be opened or failed its checks; the old one serves on."""


@dataclass
class Version:
    model: Model
    ref: str                 # what was asked for: a folder, or models:/NAME/VERSION / models:/NAME@ALIAS
    version: str             # NAME/VERSION for a registered model, else the weights' model id
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0
    retired: bool = False
    stages: dict[str, float] = field(default_factory=dict)   # seconds its reload spent opening, warming, catching up


@dataclass
class _Ticket:
    """One request's checked events, waiting to be written with others."""

    events: object
    done: threading.Event = field(default_factory=threading.Event)
    stored: int = 0
    error: Exception | None = None


class ServedModels:
    """The version being served. `lease()` for every read, `ingest` for events, `reload` to swap."""

    def __init__(self, ref: str, registry: RegistryConfig | None = None, events: str | Path | None = None,
                 rank: bool = True, reload_share: float = 1.0, warm_users: int = 1000):
        self.registry = registry
        self.reload_share = reload_share     # of the interpreter a version loading beside this one takes
        self.warm_users = warm_users         # the served version's latest users a new one prepares for
        self.events = Path(events) if events is not None else None
        self.rank = rank
        self._lock = threading.Lock()        # guards the lease counts and the swap
        self._write = threading.Lock()       # one writer: ingest and the swap's catch-up
        self._closed = False
        self._pending: list[_Ticket] = []        # events waiting for the next group commit
        self._pending_lock = threading.Lock()
        self._current = self._open(ref)
        self._warm(self._current, self._current.model.latest_users)     # before any user asked
        # other processes of the service record their reloads here; what it held at start is not followed
        self._swaps = self.events.parent / SWAPS_FILE if self.events is not None else None
        self._swaps_seen = self._swaps_stamp()
        self._following = threading.Lock()
        self._closing: list[threading.Thread] = []     # retired versions being closed

    @property
    def current(self) -> Version:
        return self._current

    @contextmanager
    def lease(self):
        """The current version, kept open until the block ends even if another is swapped in meanwhile. It has
        applied the events other processes of the service logged (read-your-writes across workers); their
        reloads are followed by the app's background thread (`follow_swaps`), not on a request's path."""
        with self._lock:
            held = self._current
            held.in_flight += 1
        try:
            try:
                held.model.sync()
            except Exception:                     # the read is still answered, from what this process holds
                log.exception("could not apply events another worker logged")
            yield held
        finally:
            with self._lock:
                held.in_flight -= 1
                done = held.retired and held.in_flight == 0
            if done:
                self._retire(held)

    def ingest(self, events) -> int:
        """Append events durably to the log and apply them to the version being served; returns how many were
        new. Requests that arrive while another's events are being written are written together next (group
        commit), so many small requests cost one fsync and one apply between them."""
        ticket = _Ticket(self._current.model.check_events(events))      # a bad request fails alone, here
        with self._pending_lock:
            self._pending.append(ticket)
        with self._write:
            if not ticket.done.is_set():
                with self._pending_lock:
                    group, self._pending = self._pending, []
                try:
                    counts = self._current.model.ingest_checked([t.events for t in group])
                except Exception as exc:
                    for t in group:
                        t.error = exc
                        t.done.set()
                else:
                    for t, count in zip(group, counts):
                        t.stored = count
                        t.done.set()
        if ticket.error is not None:
            raise ticket.error
        return ticket.stored

    def ingest_now(self, events) -> int | None:
        """`ingest` on the caller's thread at once, or None without waiting when another write is under way (a
        reload's catch-up, a catalog change): for the event loop, which must never wait on a lock."""
        checked = self._current.model.check_events(events)
        if not self._write.acquire(blocking=False):
            return None
        try:
            return self._current.model.ingest_checked([checked])[0]
        finally:
            self._write.release()

    def reload(self, ref: str | None = None) -> tuple[Version, Version]:
        """Open `ref` (default: what the current version was asked as, so an alias is looked up again),
        check it and swap it in; returns (old, new). A `ReloadError` leaves the old version serving."""
        t0 = time.perf_counter()
        with yielding(self.reload_share):          # the version being served keeps up with its requests
            new = self._open(ref or self._current.ref)
            t1 = time.perf_counter()
            self._warm(new)
        t2 = time.perf_counter()
        with self._write:
            try:
                new.model.catch_up()               # events logged while it was opening
            except Exception as exc:
                new.model.close()
                raise ReloadError(f"{new.ref}: could not apply the service's events ({exc})") from exc
            new.stages = {"open": t1 - t0, "warm": t2 - t1, "catch_up": time.perf_counter() - t2}
            with self._lock:
                if self._closed:                   # the service shut down meanwhile
                    new.model.close()
                    raise ReloadError(f"{new.ref}: the service is shutting down")
                old, self._current = self._current, new
                old.retired = True
                idle = old.in_flight == 0
        if idle:
            self._retire(old)
        self._record_swap(new)
        log.info("swapped %s for %s in %.1f s (%s)", new.version, old.version, sum(new.stages.values()),
                 ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in new.stages.items()))
        return old, new

    def _record_swap(self, new: Version) -> None:
        """Tell the service's other processes which version this one now serves (atomically replaced)."""
        if self._swaps is None:
            return
        with atomic_path(self._swaps) as tmp:
            tmp.write_text(json.dumps({"ref": new.ref, "version": new.version, "pid": os.getpid()}))
        self._swaps_seen = self._swaps_stamp()

    def _swaps_stamp(self) -> int | None:
        try:
            return self._swaps.stat().st_mtime_ns if self._swaps is not None else None
        except OSError:
            return None

    def follow_swaps(self) -> None:
        """Start the reload another process recorded, once, in a background thread (requests meanwhile are
        answered by the version this process holds)."""
        stamp = self._swaps_stamp()
        if stamp is None or stamp == self._swaps_seen or not self._following.acquire(blocking=False):
            return
        self._swaps_seen = stamp
        try:
            wanted = json.loads(self._swaps.read_text())
        except (OSError, ValueError):
            self._following.release()
            return
        current = self._current
        if wanted.get("pid") == os.getpid() or (wanted.get("ref"), wanted.get("version")) == (current.ref,
                                                                                            current.version):
            self._following.release()
            return

        def swap() -> None:
            try:
                self.reload(wanted["ref"])
            except ReloadError as exc:
                log.warning("could not follow another worker's reload: %s", exc)
            finally:
                self._following.release()

        threading.Thread(target=swap, name="twotower-follow-swap", daemon=True).start()

    def resolve(self, ref: str | None = None) -> str:
        """The version `ref` (default: the current one's) names now: for following an alias."""
        ref = ref or self._current.ref
        if not ref.startswith("models:"):
            return self._current.version
        from ..registry.mlflow_registry import Registry

        name, version = Registry(self.registry).resolve(ref)
        return f"{name}/{version}"

    def close(self) -> None:
        """Stop serving: the current version closes when its last request ends; later reloads are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._current.retired = True
            idle = self._current.in_flight == 0
        if idle:
            self._current.model.close()
        self.settle()

    def _retire(self, version: Version) -> None:
        """Close a version no request holds any more, in a thread that yields to the served one: freeing a
        large catalog (its index, arrays and stores) takes tens of ms, which must not fall on the thread that
        answers requests (the event loop, where the last request on the old version ends). After `close()`
        (shutting down) it closes at once, so that nothing is left to a thread the exit would cut short."""
        if self._closed:
            version.model.close()
            return

        def close() -> None:
            with yielding(self.reload_share):
                try:
                    version.model.close()
                except Exception:
                    log.exception("could not close the retired version %s", version.version)

        closing = threading.Thread(target=close, name="twotower-close-version", daemon=True)
        with self._lock:                           # seen by a `settle` from the moment it starts
            self._closing = [t for t in self._closing if t.is_alive()]
            self._closing.append(closing)
            closing.start()

    def settle(self) -> None:
        """Wait until the retired versions are closed."""
        with self._lock:
            closing = list(self._closing)
        for thread in closing:
            thread.join()

    def _warm(self, new: Version, users=None) -> None:
        """Prepare `new` for `users(n)` (default: the users the current version answered last): a cold version
        costs each user's first request ~1 ms more (query tower, feature reads), for every user at once right
        after a start or a swap."""
        if self.warm_users <= 0:
            return
        try:
            new.model.warm((users or self._current.model.recent_users)(self.warm_users))
        except Exception:                        # an optimisation: the swap goes on without it
            log.exception("could not warm %s up", new.ref)

    def _open(self, ref: str) -> Version:
        try:
            folder = model_folder(ref, self.registry)
            model = Model(folder, rank=self.rank, events=self.events)
        except (InputError, OSError, ValueError, RuntimeError) as exc:
            raise ReloadError(f"{ref}: {exc}") from exc
        try:
            model.check()
        except Exception as exc:
            model.close()
            raise ReloadError(f"{ref}: failed its checks ({exc})") from exc
        if (folder / SEARCH_DIR).is_dir():           # load the text encoder now, not on the first /search
            try:
                encoder = model.search_index().encoder
                if encoder is not None:
                    encoder.encode(["warm up"])
            except InputError as exc:
                log.warning("%s: search is off (%s)", ref, exc)
        # The version's objects leave the cyclic collector for good: a full collection would otherwise scan
        # them (a million-item catalog's id arrays: 160 ms) every few seconds under load, stalling every
        # request in flight. A retired version is still freed by reference counting.
        gc.freeze()
        registered = ref.startswith("models:")                   # served from ROOT/serving/NAME/VERSION
        return Version(model, ref, f"{folder.parent.name}/{folder.name}" if registered else model.model_id)


def default_events_path(ref: str, registry: RegistryConfig | None, state: str | None) -> Path | None:
    """Where the service logs events: `state` when given; for a registered model ROOT/service/NAME (shared
    by the versions of that name it swaps between); else None (the model folder's own log)."""
    if state:
        return Path(state) / EVENTS_FILE
    if ref.startswith("models:"):
        from ..registry.mlflow_registry import home, parse_uri

        return home(registry or RegistryConfig()) / "service" / parse_uri(ref)[0] / EVENTS_FILE
    return None
