"""Online store backends for the feature tests: SQLite always, Redis when Debian's redis-server is installed
(.ci/run installs it; the `redis_server` fixture lives in tests/conftest.py)."""

from __future__ import annotations

import pytest

from twotower.features.online import RedisOnlineStore, SQLiteOnlineStore


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request, tmp_path):
    """A fresh online store of each backend."""
    if request.param == "sqlite":
        store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    else:
        store = RedisOnlineStore(request.getfixturevalue("redis_server").url)
    yield store
    store.close()
