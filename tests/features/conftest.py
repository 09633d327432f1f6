"""Online store backends for the feature tests: SQLite always, Redis when Debian's redis-server is installed
(.ci/run installs it). The Redis server is private to the test: a Unix socket, no TCP port."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from twotower.features.online import RedisOnlineStore, SQLiteOnlineStore


class RedisServer:
    """redis-server on a Unix socket in a temporary folder, with the append-only file on."""

    def __init__(self, folder: Path):
        self.folder, self.socket = folder, folder / "redis.sock"
        self.process = None

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.socket.exists():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture()
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request, tmp_path):
    """A fresh online store of each backend."""
    if request.param == "sqlite":
        store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    else:
        store = RedisOnlineStore(request.getfixturevalue("redis_server").url)
    yield store
    store.close()
